"""``phf-eval``: evaluate a saved phf model and write ``eval.json`` and the samples.

    phf-eval run_dir=DIR                                 # DIR/final with DIR/config.yaml
    phf-eval run_dir=DIR task.eval.kl.reference=OTHER/final task.eval.scenarios.unconditional.num_samples=512
    phf-eval checkpoint=DIR/checkpoints/step_00000200    # the run's config is found above the checkpoint
    phf-eval checkpoint=PATH task=pep8 objective=conditional out=EVAL_DIR   # any HF dir, config from conf/
    phf-eval checkpoint=PATH out=EVAL_DIR      # a phf model dir: task and objective from its phf_objective.json
    phf-eval checkpoint=PATH +lm_eval.tasks=[arc_easy,my_task.yaml]   # + lm-evaluation-harness (phf.eval.lm_eval_harness)

Arguments are Hydra overrides of the run's saved ``config.yaml`` (Hydra's override grammar, as on
phf-train's command line: quoting, lists), applied as Hydra applies them: ``key=value`` changes a key the
config has (a typo is refused with the nearest keys), ``+key=value`` adds one, ``++key=value`` adds or
changes one, ``~key`` deletes one. Config-group overrides (``task=``, ``objective=``, ``scorer=``,
``logger=``) replace that whole group with ``conf/<group>/<name>.yaml`` (``task=`` brings its scorer).
Without a run config, the config is composed from ``conf/`` with the same overrides; the task and the
objective (registry name and hyperparameters) then come from the model directory's ``phf_objective.json``,
which phf-train writes into ``final/`` and every checkpoint (``task=``/``objective=`` still win; a model
without the file is evaluated as MLE, with a logged note).

A model directory is data, never code (``phf.model_dir``): its ``phf_objective.json`` may only name one of
phf's objectives (``conf/objective/<name>.yaml``) with plain-valued arguments of that class and one of
phf's tasks (a bare name); weights load from safetensors only; a ``config.yaml`` inside the model directory
is never read, and a run's ``config.yaml`` found above ``RUN/final`` or ``RUN/checkpoints/step_*`` may only
name classes phf's own ``conf/`` names (``run_dir=RUN`` uses your own run's config as it is). Anything else
is refused before anything runs, with the file and the field. Own keys:

    run_dir=DIR        the run to evaluate (model: DIR/final unless checkpoint= is given)
    checkpoint=PATH    an HF model directory to evaluate instead
    out=DIR            where eval.json and samples/ go (default: the run dir, else the checkpoint dir)
    device=auto|cpu|cuda
    skip=heldout,kl,red_team   parts to leave out (comma-separated)
    allow_incomplete=true      evaluate a run's final/ that lacks phf_summary.json (written last by phf-train)

Writes ``OUT/eval.json`` ({"scenarios": {name: metrics}, "heldout": ..., "heldout_clean": ..., "kl": ...,
"red_team": ...}),
``OUT/samples/<scenario>.jsonl`` and, when the red-team loop runs, ``OUT/red_team.json``; logs the flat
``eval/...`` metrics and sample tables to the configured tracker (wandb files under ``OUT/eval_tracking``).
That is a wandb run of its own (job type ``eval``), linked to the training run it evaluates: same group,
name ``<training run's name>-eval``, config key ``training_run_id`` (from ``RUN_DIR/wandb_run.json``), and
its rows carry the model's ``tokens_seen`` so its charts line up with the training run's.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from phf import rundir
from phf.card import METADATA_FILE, read_objective_metadata
from phf.checkpoint import check_safetensors
from phf.checkpoint import progress as ckpt_progress
from phf.console import quiet_hf_progress
from phf.data.pipeline import RunData
from phf.devices import resolve_device
from phf.entry import compose
from phf.eval.evaluate import build_eval_scorer, evaluate, flatten
from phf.eval.heldout_clean import heldout_clean_documents
from phf.eval.kl import load_causal_lm
from phf.eval.lm_eval_harness import evaluate_harness, report_columns, settings_from_config
from phf.eval.red_team import RedTeamSettings, load_prompts, red_team, summary
from phf.eval.settings import EvalSetup
from phf.model_dir import ModelDirError, check_config_targets, check_model_files, check_weights
from phf.tokenizer import load_tokenizer
from phf.tracking import stored_run

log = logging.getLogger("phf.eval")

OWN_KEYS = {"run_dir", "checkpoint", "out", "device", "skip", "allow_incomplete"}
GROUPS = {"task", "objective", "scorer", "logger", "model", "data", "trainer"}
SKIPPABLE = {"heldout", "kl", "red_team"}


def parse_overrides(args: list[str]) -> list:
    """Each argument parsed by Hydra's override grammar (``hydra.core.override_parser``), the grammar
    phf-train's command line has: quoting, lists, ``+key``, interpolations. A malformed argument, a sweep
    of a config key (phf-eval evaluates one configuration) or a deletion is refused, naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        try:
            (o,) = parser.parse_overrides([arg])
        except OverrideParseException as e:
            raise SystemExit(f"phf-eval: expected key=value, got {arg!r}: {' '.join(str(e).split())} "
                             "(see phf-eval --help)") from None
        if o.key_or_group not in OWN_KEYS and o.is_sweep_override():
            raise SystemExit(f"phf-eval: {arg!r} is a sweep; phf-eval evaluates one configuration (run it once "
                             "per value)")
        if o.is_delete() and o.key_or_group in OWN_KEYS | GROUPS:
            raise SystemExit(f"phf-eval: {arg!r}: {o.key_or_group} cannot be deleted; override its value")
        parsed.append(o)
    return parsed


def _own_value(o) -> str | None:
    """An own option's value as the string ``evaluate_saved`` reads (``skip=a,b`` arrives as a sweep)."""
    if o.is_sweep_override():
        return ",".join(o.sweep_string_iterator())
    value = o.value()
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return None if value is None else str(value)


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(own options, config overrides) from Hydra-style ``key=value`` arguments (``parse_overrides``)."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        sys.exit(0)
    own, overrides = {}, []
    for o in parse_overrides(argv):
        if o.key_or_group in OWN_KEYS:
            value = _own_value(o)
            if value is not None:
                own[o.key_or_group] = value
        else:
            overrides.append(o.input_line)
    if "run_dir" not in own and "checkpoint" not in own:
        raise SystemExit("phf-eval: give run_dir=DIR or checkpoint=PATH (see phf-eval --help)")
    bad = set(filter(None, own.get("skip", "").split(","))) - SKIPPABLE
    if bad:
        raise SystemExit(f"phf-eval: skip= accepts {sorted(SKIPPABLE)}, got {sorted(bad)}")
    return own, overrides


def _is_group(override: str) -> bool:
    key = override.partition("=")[0]
    return key in GROUPS


def find_run_config(checkpoint: Path) -> Path | None:
    """``config.yaml`` of the run a model directory belongs to: ``RUN/config.yaml`` for ``RUN/final`` and
    ``RUN/checkpoints/step_*`` (phf-train's layout); None for any other directory (a download, a copy).
    A config.yaml inside the model directory itself is never read: the directory is data."""
    run = rundir.run_of_model(checkpoint)
    return rundir.config_path(run) if run is not None and rundir.is_run(run) else None


def inferred_objective(model_dir: Path, overrides: list[str]) -> tuple[list[str], dict | None, str]:
    """For a model without its run's config: (overrides with the model's task added unless given, the
    objective to use unless ``objective=`` is given, ``{"name": registry name, "args": {...}}``, where
    the objective comes from), read from the model directory's ``phf_objective.json``. The file is data:
    it names one of phf's objectives and tasks, never a class or a path (``phf.model_dir``)."""
    given = {o.lstrip("+").partition("=")[0] for o in overrides}
    if {"objective", "task"} <= given:
        return overrides, None, "override"
    try:
        meta = read_objective_metadata(model_dir)
    except ValueError as e:
        raise SystemExit(f"phf-eval: {e}; nothing was run. Pass task= and objective= to evaluate the model "
                         "without it") from None
    if "objective" in given:
        return ([] if meta is None or "task" in given else [f"task={meta['task']}"]) + overrides, None, "override"
    if meta is None:
        log.warning("%s has no %s (not a model phf saved): evaluating it as MLE; pass objective=<name> (and task=) "
                    "to evaluate it with another objective", model_dir, METADATA_FILE)
        return overrides, None, "default (no phf metadata: MLE)"
    log.info("objective from %s: %s %s (task %s)", model_dir / METADATA_FILE, meta["objective_name"],
             meta["objective_args"], meta["task"])
    objective = {"name": meta["objective_name"], "args": meta["objective_args"]}
    return ([] if "task" in given else [f"task={meta['task']}"]) + overrides, objective, METADATA_FILE


def load_config(config_path: Path | None, overrides: list[str], objective: dict | None = None) -> DictConfig:
    """The run's saved config with ``overrides`` applied, or a config composed from ``conf/`` (with
    ``objective`` = ``{"name": registry name, "args": checked plain values}`` in place of the default
    objective: ``conf/objective/<name>.yaml`` with those arguments; ``objective.*`` overrides win over them).

    Hydra composes: from ``conf/`` with every override, or, for a run's config, the selected groups
    (``task=`` brings its scorer), whose nodes replace the run's; the other overrides are then applied to
    the run's config as Hydra applies them to a composed one (``apply_overrides``: ``key=`` changes a key
    that exists, ``+key=`` adds one, ``++key=`` either, ``~key`` deletes). A key that is not there is
    refused naming it and the nearest keys the run's config has."""
    parsed = parse_overrides(overrides)
    if config_path is None:
        if objective is None:
            return compose(overrides, prog="phf-eval")
        # no objective= among overrides here
        cfg = compose([*overrides, f"objective={objective['name']}"], prog="phf-eval")
        given = {o.key_or_group for o in parsed}
        for key, value in objective["args"].items():  # plain values (checked): no interpolation, no node
            if f"objective.{key}" not in given:
                cfg.objective[key] = value
        return cfg
    cfg = OmegaConf.load(config_path)
    groups = [o.input_line for o in parsed if _is_group(o.input_line)]
    if groups:
        fresh = compose(groups, prog="phf-eval")
        for o in groups:
            key = o.partition("=")[0]
            cfg[key] = fresh[key]
            if key == "task":  # a task selects its scorer
                cfg.scorer = fresh.scorer
    if OmegaConf.select(cfg, "task.eval") is None:  # a run from before evaluation existed: use its task's defaults
        log.warning("%s has no task.eval block; using conf/task/%s.yaml's", config_path, cfg.task.name)
        cfg.task.eval = compose([f"task={cfg.task.name}"]).task.eval
    apply_overrides(cfg, [o for o in parsed if not _is_group(o.input_line)], config_path)
    return cfg


def apply_overrides(cfg: DictConfig, parsed: list, config_path: Path) -> None:
    """Hydra's own application of parsed value overrides to a config (what ``compose`` does after the
    defaults list), on a run's stored config: the config is in struct mode meanwhile, as a composed one is,
    so ``key=`` cannot add a key silently. A failure is one line naming the override, the key and, for a
    key the config lacks, the nearest ones it has (``phf.suggest.nearest``)."""
    # Hydra has no public call for "apply these overrides to this config"; ConfigLoaderImpl's is the one its
    # compose runs (hydra-core 1.3)
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import ConfigCompositionException

    from phf.suggest import config_keys, nearest

    OmegaConf.set_struct(cfg, True)
    try:
        for o in parsed:
            try:
                ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
            except ConfigCompositionException as e:
                key = o.key_or_group
                if o.is_add() or o.is_force_add() or (o.is_delete() and OmegaConf.select(cfg, key) is not None):
                    why = " ".join(str(e).split())
                    raise SystemExit(f"phf-eval: {o.input_line}: {why} ({config_path})") from None
                close = nearest(key, config_keys(cfg))
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                raise SystemExit(f"phf-eval: {o.input_line}: {key} is not a key of the run's config {config_path}; "
                                 f"{hint}(a new key needs a leading +, e.g. +{key}=VALUE)") from None
    finally:
        OmegaConf.set_struct(cfg, False)


def check_model_dir(model_dir: Path, allow_incomplete: bool) -> None:
    """Refuse a truncated weights file, and a phf run's ``final/`` that was not finished (phf-train writes
    ``final/phf_summary.json`` last), each with the file and the way out."""

    is_final = rundir.is_run_final(model_dir)
    redo = (f"resume the training in {model_dir.parent} (phf-train with the same overrides and run_dir, "
            "trainer.resume=auto) to write final/ again, or evaluate a checkpoint (checkpoint=RUN/checkpoints/step_N)"
            if is_final else "save the model again")
    try:
        check_weights(model_dir)
        check_safetensors(model_dir)
    except ValueError as e:
        if not isinstance(e, ModelDirError):  # a truncated weights file
            raise SystemExit(f"phf-eval: {e}; the model was probably being written when its process died: {redo}") from None
        raise SystemExit(f"phf-eval: {e}; nothing was run") from None
    try:
        check_model_files(model_dir)
    except ValueError as e:
        raise SystemExit(f"phf-eval: {e}") from None
    if is_final and not rundir.summary_path(model_dir).is_file() and not allow_incomplete:
        raise SystemExit(f"phf-eval: {model_dir} is incomplete: no phf_summary.json, the file phf-train writes last "
                         f"(the run was killed while writing final/?): {redo}; or pass allow_incomplete=true")


def model_info(model_dir: Path) -> dict:
    """step / tokens_seen of a saved model, from the trainer's summary or the checkpoint's name."""
    info: dict = {}
    data = rundir.read_summary(model_dir) or {}
    info.update({k: data[k] for k in ("step", "tokens_seen") if k in data})
    step = rundir.parse_step(model_dir.name)
    if step is not None and "step" not in info:
        info["step"] = step
    return info


def tokens_at_step(run_dir: Path, step: int | None) -> dict:
    """``{"tokens_seen": N}`` of the training run's ``metrics.jsonl`` row at ``step`` ({} when unknown)."""
    tokens = rundir.tokens_at_step(run_dir, step)
    return {} if tokens is None else {"tokens_seen": tokens}


def heldout_blocks(run_data: RunData, tokenizer, max_blocks: int):
    """Held-out blocks from the data pipeline (``RunData.validation_blocks``)."""
    return run_data.validation_blocks(tokenizer, max_blocks)


def evaluate_saved(own: dict[str, str], overrides: list[str]) -> tuple[dict, Path]:
    """Run everything; returns (eval.json content, output dir)."""
    from hydra.utils import instantiate
    from transformers import AutoModelForCausalLM


    run_dir = Path(own["run_dir"]) if "run_dir" in own else None
    model_dir = Path(own["checkpoint"]) if "checkpoint" in own else rundir.final_dir(run_dir)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"phf-eval: {model_dir} is not a saved HF model (no config.json); did the run finish?")
    check_model_dir(model_dir, own.get("allow_incomplete", "false").lower() in ("1", "true", "yes"))
    config_path = rundir.config_path(run_dir) if run_dir is not None else find_run_config(model_dir)
    if config_path is not None and not config_path.is_file():
        raise SystemExit(f"phf-eval: {config_path} not found")
    if config_path is not None and run_dir is None:  # found above a model dir, not named by the user
        try:
            check_config_targets(OmegaConf.load(config_path), config_path)
        except ValueError as e:
            raise SystemExit(f"phf-eval: {e}; nothing was run. If this is your own run, name it: run_dir="
                             f"{config_path.parent} checkpoint={model_dir}") from None
    stored_objective, objective_source = None, "run config" if config_path is not None else "override"
    if config_path is None:
        overrides, stored_objective, objective_source = inferred_objective(model_dir, overrides)
    elif any(_is_group(o) and o.partition("=")[0] == "objective" for o in overrides):
        objective_source = "override"
    cfg = load_config(config_path, overrides, stored_objective)
    setup = EvalSetup.from_config(cfg)  # task.eval typed, with what it takes from the other groups: built once
    ev = setup.settings
    harness = settings_from_config(cfg)  # lm-evaluation-harness tasks (+lm_eval.tasks=[...]), checked up front
    out = Path(own.get("out") or run_dir or model_dir)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, own.get("skip", "").split(",")))

    device = resolve_device(own.get("device", "auto"), key="device")
    log.info("evaluating %s (config %s) on %s", model_dir, config_path or "composed from conf/", device)
    with quiet_hf_progress():
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).to(device)
    tokenizer = load_tokenizer(str(model_dir))
    objective = instantiate(cfg.objective)
    scorer = build_eval_scorer(setup)

    blocks, clean, heldout_note = None, None, None
    if "heldout" not in skip:
        try:
            run_data = RunData.from_config(cfg)
            blocks = heldout_blocks(run_data, tokenizer, ev.capability.max_blocks)
            clean = heldout_clean_documents(run_data, tokenizer, ev.capability)
        except Exception as e:  # the data may be unavailable offline; the rest of the evaluation still runs
            heldout_note = f"skipped: {type(e).__name__}: {e}"
        if heldout_note:
            log.warning("held-out loss %s", heldout_note)

    info = model_info(model_dir)
    if "tokens_seen" not in info and config_path is not None:  # a checkpoint: its row in the run's metrics
        info.update(tokens_at_step(config_path.parent, info.get("step")))
    if "tokens_seen" not in info:  # no row at that step (log_every does not divide it): the checkpoint's own state
        try:
            info.update(ckpt_progress(model_dir))
        except ValueError as e:
            log.warning("tokens_seen unknown: %s", e)
    tracker = make_tracker(cfg, out, config_path.parent if config_path is not None else None, model_dir)
    try:
        if tracker is not None and info.get("tokens_seen") is not None:
            tracker.set_tokens_seen(info["tokens_seen"])  # the sample tables' tokens_seen column
        results = evaluate(model, tokenizer, objective, scorer, setup, out_dir=out, blocks=blocks,
                           kl="kl" not in skip, tracker=tracker, clean_documents=clean)
        results["step"] = info.get("step")
        if heldout_note:
            results["heldout"] = {"note": heldout_note}
        if "red_team" not in skip and ev.red_team.get("red_lm"):
            results["red_team"] = run_red_team(cfg.task.name, ev.red_team, model, tokenizer, objective, scorer, out,
                                               device)
        if harness is not None:
            results["lm_eval"] = evaluate_harness(model, tokenizer, objective, harness, out)
        doc = {
            "model": str(model_dir),
            "config": str(config_path) if config_path else None,
            "task": cfg.task.name,
            "objective": objective_name(cfg, run_dir),
            "objective_source": objective_source,  # run config, override, phf_objective.json or the MLE default
            "generation_prefix": tokenizer.eos_token + "".join(objective.generation_prefix),
            "banned_tokens": list(objective.banned_tokens),
            # each scenario's sampling protocol (task.eval.scenarios.<name>.ban_aligned) as the tokens it banned
            "scenario_banned_tokens": {name: objective.scenario_banned_tokens(sc.ban_aligned)
                                       for name, sc in ev.scenarios.items()},
            "scorer": OmegaConf.select(cfg, "task.eval.scorer._target_") or OmegaConf.select(cfg, "scorer._target_"),
            "tokens_seen": info.get("tokens_seen"),
            **results,
        }
        if tracker is not None:
            tracker.log({**flatten(results), **{f"eval/{k}": v for k, v in report_columns(results).items()}},
                        step=info.get("step") or 0)
    finally:
        if tracker is not None:
            tracker.finish()
    rundir.write_eval(out, doc)
    return doc, out


def run_red_team(task: str, rt: dict, model, tokenizer, objective, scorer, out: Path, device) -> dict:
    """The adaptive red-team loop of ``task.eval.red_team`` (``rt``: red_lm, prompts and RedTeamSettings)."""

    fields = set(RedTeamSettings.__dataclass_fields__)
    unknown = sorted(set(rt) - fields - {"red_lm", "prompts"})
    if unknown:
        raise ValueError(f"task.eval.red_team: unknown keys {unknown}; known: {sorted(fields | {'red_lm', 'prompts'})}")
    settings = RedTeamSettings(**{k: v for k, v in rt.items() if k in fields})
    red_model, red_tok = load_causal_lm(str(rt["red_lm"]), device)
    initial = load_prompts(rt["prompts"], limit=settings.initial_pool)  # only the pool's first prompts are read
    result = red_team(task, model, tokenizer, objective, scorer, red_model, red_tok, initial, settings)
    result["red_lm"] = str(rt["red_lm"])
    rundir.write_json(out / rundir.RED_TEAM, result)
    for r in result["rounds"]:
        log.info("red team round %d: mean %.4g, best %.4g, pool top-10 mean %.4g", r["round"], r["round_mean"],
                 r["round_best"], r["pool_top10_mean"])
    return {**summary(result), "rounds": float(len(result["rounds"]))}


def objective_name(cfg, run_dir: Path | None) -> str:
    """The objective's short name: the sweep subdir ``<num>-<name>``, else its class name."""
    job = rundir.sweep_job_name(run_dir) if run_dir is not None else None
    if job is not None:
        return job
    target = OmegaConf.select(cfg, "objective._target_") or "unknown"
    return target.rsplit(".", 1)[-1].lower()


def make_tracker(cfg, out: Path, training_dir: Path | None, model_dir: Path):
    """The configured tracker for wandb logging (None for ``logger=none``: the files are the record).

    A run of its own rather than the training run resumed: an evaluation may run while training goes on
    (a checkpoint), be repeated with other settings, or run on another machine, and none of that may
    touch the training run's history or summary. The link is the config key ``training_run_id`` (the id
    ``training_dir`` recorded), the same group, and the name ``<training run's name>-eval``. Takes the whole
    config: the tracker is built from its ``logger`` group and is named and tagged from its task and objective.
    """
    from hydra.utils import instantiate

    if OmegaConf.select(cfg, "logger.backend", default="none") == "none":
        return None
    training = (stored_run(training_dir) if training_dir is not None else None) or {}
    name = f"{training.get('name') or OmegaConf.select(cfg, 'task.name') + '-' + objective_name(cfg, None)}-eval"
    run_config = {**OmegaConf.to_container(cfg.task.eval, resolve=True), "training_run_id": training.get("id"),
                  "training_run_dir": None if training_dir is None else str(training_dir), "model": str(model_dir)}
    tags = [OmegaConf.select(cfg, "task.name"), objective_name(cfg, training_dir), "phf-eval",
            *(OmegaConf.select(cfg, "logger.tags") or [])]
    return instantiate(cfg.logger, _partial_=True)(run_dir=out / "eval_tracking", name=name, run_config=run_config,
                                                   group=training.get("group") or OmegaConf.select(cfg, "logger.group"),
                                                   tags=tags, job_type="eval")


def _f(x, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


def print_summary(doc: dict, out: Path) -> None:
    print(f"phf-eval: {doc['task']} / {doc['objective']} ({doc['model']})")
    for name, m in doc["scenarios"].items():
        print(f"  {name:<18} score {_f(m['score'])}  expected max@25 {_f(m['expected_max'])}  "
              f"hit rate {_f(m['hit_rate'], '.3g')}  distinct-2 {_f(m['distinct_2'], '.3g')}  "
              f"self-BLEU {_f(m['self_bleu'], '.3g')}")
    h = doc.get("heldout") or {}
    if "loss" in h:
        print(f"  held-out loss {_f(h['loss'])} (ppl {_f(h['ppl'], '.1f')}), aligned tokens {_f(h['aligned_loss'])}")
    c = doc.get("heldout_clean") or {}
    if "loss" in c:
        print(f"  clean held-out loss {_f(c['loss'])} [{_f(c['loss_ci_low'])}, {_f(c['loss_ci_high'])}] "
              f"(ppl {_f(c['ppl'], '.1f')}; {_f(c['num_docs'], '.0f')} documents, {_f(c['num_tokens'], '.0f')} tokens)")
    if "kl" in doc:
        print(f"  KL(ref || model) {_f(doc['kl']['kl'], '.3f')} ± {_f(doc['kl']['kl_stderr'], '.3f')} nats/sample")
    for task, metrics in ((doc.get("lm_eval") or {}).get("tasks") or {}).items():
        print(f"  lm-eval {task}: " + ", ".join(f"{k} {_f(v)}" for k, v in metrics.items() if "_stderr" not in k))
    print(f"  wrote {rundir.eval_path(out)} and {rundir.samples_dir(out, None)}/")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    own, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    doc, out = evaluate_saved(own, overrides)
    print_summary(rundir.finite(doc), out)


if __name__ == "__main__":
    main()

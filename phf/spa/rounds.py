"""phf-spa: SPA rounds (seed → round 1 → round 2 ...) as a finetuning stage after MLE pretraining.

    python -m phf.spa +experiment=spa_pep8 spa.init_from=RUN/final             # scorer seed, implicit rounds
    python -m phf.spa +experiment=spa_pep8 spa.init_from=... objective.refine_alpha=0   # plain iterative DPO
    python -m phf.spa +experiment=spa_pep8_scorer spa.init_from=...            # every round scorer-labelled

Each stage of ``spa.stages`` (in order) starts from the previous stage's policy π_{i-1}:

1. draws ``num_prompts`` new prompts from the pool (``phf.spa.pairs.PromptPool``), samples 2 responses
   each from π_{i-1}, scores them with the task scorer and labels them with the stage's ``labeler``
   (``scorer``; ``implicit`` = β·[log π_{i-1} − log π_init] with π_init = ``spa.init_from``, frozen;
   ``hybrid``), drops ties and writes ``STAGE/pairs.jsonl``;
2. trains π_i with ``objective=dpo`` against π_{i-1} as the frozen reference (``phf.spa.train_dpo``);
3. saves ``STAGE/final/`` (an HF directory with the tokenizer) and evaluates it exactly as phf-train's
   final evaluation does (``phf.eval.evaluate.run_evaluation``: task.eval scenarios + held-out loss on
   the validation blocks), plus SPA's own metrics: agreement of self-labels with the scorer, the noise
   flag's precision, the length of samples and its drift from the starting model.

The starting model is evaluated first (stage ``init``). Every stage's row goes to ``metrics.jsonl`` and
``RUN/spa_summary.json``. A stage whose ``final/phf_summary.json`` exists is not rerun, and a killed
stage resumes from its pairs file and its last DPO checkpoint, so rerunning the same command continues.

The run directory has phf-train's layout (``phf.rundir``): ``config.yaml``, ``metrics.jsonl`` (every row
with ``tokens_seen``: the starting model's plus the tokens DPO trained on, as of the last finished stage), each evaluation's samples in
``samples/step_N/`` at the global DPO step (the starting model's at step 0), and at the end ``final/`` =
the last stage's policy with its row as ``phf_summary.json``; phf-report and phf-eval read it as a run.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from phf import rundir
from phf.checkpoint import write_final as write_final_dir
from phf.data.pipeline import RunData, in_validation
from phf.devices import Dist, resolve_device
from phf.entry import UsageError, hydra_entry
from phf.eval.capability import validation_loss
from phf.eval.evaluate import build_eval_scorer, run_evaluation
from phf.eval.heldout_clean import heldout_clean_documents
from phf.eval.red_team import load_prompts
from phf.eval.settings import RESERVED, EvalSetup
from phf.model import PHFModel
from phf.model_dir import check_model_files
from phf.objectives.preference import PreferenceObjective
from phf.scorers import build_scorer
from phf.spa import guards as G
from phf.spa import pairs as P
from phf.spa.informative import collect_pairs
from phf.spa.oracle import oracle_stages
from phf.spa.settings import PromptSettings, SpaSettings
from phf.spa.train_dpo import DPOResult, DPOSettings, train_dpo
from phf.tokenizer import load_tokenizer

log = logging.getLogger("phf.spa")

def _training_documents(source, val_fraction: float, max_docs: int) -> list[str]:
    """Raw texts of the first ``max_docs`` training-split documents (validation documents excluded)."""

    out = []
    for doc in source:
        if len(out) >= max_docs:
            break
        if doc.texts and not in_validation(doc, val_fraction):
            out.append(doc.text)
    return out


def build_prompt_pool(pc: PromptSettings, data, seed: int) -> P.PromptPool:
    mix = dict(pc.mix)
    needs_docs = any(mix.get(k) for k in ("signatures", "prefixes"))
    docs = _training_documents(data.source, data.val_fraction, pc.max_docs) if needs_docs else []
    file_prompts = []
    if mix.get("file"):
        file_prompts = load_prompts(pc.file)
    return P.PromptPool(mix, docs, file_prompts, prefix_lines=pc.prefix_lines,
                        max_prompt_chars=pc.max_prompt_chars, seed=seed)


def _frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def flag_audit(pairs: list[dict], flagged: list[int | None]) -> dict[str, float]:
    """How well the noise flag (z = 0) finds mislabelled pairs, judged by the scorer (ties left out).

    ``flag_mislabelled`` = the share of flagged pairs whose label the scorer contradicts (the flag's
    precision), against ``unflagged_mislabelled`` for the others; NaN where undefined.
    """
    def rate(rows):
        judged = [p for p in rows if p["scorer_agrees"] is not None]
        return sum(not p["scorer_agrees"] for p in judged) / len(judged) if judged else float("nan")

    seen = [(p, f) for p, f in zip(pairs, flagged, strict=True) if f is not None]
    return {
        "refine/flag_rate": sum(f for _, f in seen) / len(seen) if seen else float("nan"),
        "refine/flag_mislabelled": rate([p for p, f in seen if f]),
        "refine/unflagged_mislabelled": rate([p for p, f in seen if not f]),
    }


def evaluate_model(parts: SpaParts, model, out_dir: Path, step: int) -> dict[str, float]:
    """phf-train's final evaluation of a ``PHFModel``: ``run_evaluation`` + ``val/loss`` on the held-out
    blocks in batches of phf-train's ``trainer.batch_size`` + the clean held-out loss (``eval/heldout_clean/*``)
    when ``parts.clean`` is given; samples to ``out_dir/samples/step_<step>/``."""

    t0 = time.perf_counter()
    metrics = run_evaluation(model.lm, parts.tokenizer, parts.objective, parts.eval_scorer, parts.evaluation,
                             out_dir=out_dir, step=step, blocks=parts.blocks, clean_documents=parts.clean)
    # phf-train's val/loss (next-token CE on the same held-out blocks), so runs compare on one number
    metrics["val/loss"] = validation_loss(model, parts.blocks, parts.val_batch_size, next(model.parameters()).device,
                                          _no_autocast)
    metrics["eval/wall_s"] = time.perf_counter() - t0
    return metrics


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def _drift(metrics: dict, base: dict) -> dict[str, float]:
    """Sample length minus the starting model's, per evaluation scenario (chars and tokens)."""

    out = {}
    for k, v in metrics.items():
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[1] not in RESERVED and parts[2] in ("length", "num_tokens") \
                and isinstance(base.get(k), float):
            out[f"drift/{parts[1]}/{parts[2]}"] = v - base[k]
    return out


EXAMPLE = "phf-spa +experiment=spa_pep8 spa.init_from=RUN/final"


def check_command_line(cfg: DictConfig) -> None:
    """The two things only the command line gives: an SPA experiment (the ``spa`` group) and the
    checkpoint to start from; a ``UsageError`` names what is missing with an example command."""
    if "spa" not in cfg:
        raise UsageError(f"no `spa` settings: phf-spa needs an SPA experiment, which adds them "
                         f"(+experiment=spa_pep8 or spa_pep8_scorer; see docs/spa.md). For example:\n    {EXAMPLE}")
    if OmegaConf.is_missing(cfg.spa, "init_from") or not cfg.spa.init_from:
        raise UsageError(f"set spa.init_from to the pretrained checkpoint SPA starts from (an HF directory with "
                         f"its tokenizer, e.g. a phf-train run's final/). For example:\n    {EXAMPLE}")


def run_spa(cfg: DictConfig) -> dict:
    """Run every stage of ``cfg.spa.stages``; return ``{"stages": [row, ...]}`` (also in spa_summary.json)."""
    from hydra.utils import instantiate

    check_command_line(cfg)
    spa = SpaSettings.from_config(cfg.spa)  # the spa group, typed: bound once, passed down
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.trainer.device, Dist().local_rank)
    torch.manual_seed(cfg.seed)
    objective = instantiate(cfg.objective)
    if not isinstance(objective, PreferenceObjective):
        raise ValueError(f"phf-spa trains a preference objective (objective=dpo), got {type(objective).__name__}")
    stages = oracle_stages(spa.stages, spa.oracle)
    if not stages:
        raise ValueError("spa.stages is empty")
    for name, st in stages.items():
        if st["labeler"] not in P.LABELERS:
            raise ValueError(f"spa.stages.{name}.labeler must be one of {P.LABELERS}, got {st['labeler']!r}")
    first = next(iter(stages.values()))
    if first["labeler"] == "implicit":
        raise ValueError("the first SPA stage cannot use implicit labels: π_cur = π_init there, so every implicit "
                         "reward is 0; label it with the scorer (the seed) or hybrid")

    check_model_files(Path(spa.init_from))  # config, weights and tokenizer agree, each named if not
    tokenizer = load_tokenizer(spa.init_from)
    init = _frozen_copy(PHFModel.from_pretrained(spa.init_from).to(device))
    policy = PHFModel.from_pretrained(spa.init_from).to(device).eval()
    if cfg.model.block_size > policy.config.n_positions:
        raise ValueError(f"model.block_size {cfg.model.block_size} exceeds {spa.init_from}'s context "
                         f"({policy.config.n_positions}); set model.block_size to the pretrained run's")
    scorer = build_scorer(cfg.scorer, cfg.get("cache_dir"))
    setup = EvalSetup.from_config(cfg)  # task.eval typed, with what it takes from the other groups
    eval_scorer = build_eval_scorer(setup)
    run_data = RunData.from_config(cfg, scorer=scorer)
    blocks = run_data.validation_blocks(tokenizer, cfg.trainer.val_blocks)
    clean = heldout_clean_documents(run_data, tokenizer, setup.settings.capability)  # as phf-train's final evaluation
    pool = build_prompt_pool(spa.prompts, run_data.data, cfg.seed)
    log.info("prompt pool: %s", pool.sizes())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    implicit_beta = float(spa.implicit_beta if spa.implicit_beta is not None else objective.beta)

    # the whole config, resolved: written into the run directory as config.yaml and given to the tracker
    resolved = OmegaConf.to_container(cfg, resolve=True)
    rundir.write_config(run_dir, resolved)
    start_tokens = _tokens_seen(Path(spa.init_from))
    tracker = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, run_config=resolved,
                                                       name=cfg.get("run_name") or f"{cfg.task.name}-spa")
    parts = SpaParts(spa=spa, seed=cfg.seed, evaluation=setup, val_batch_size=cfg.trainer.batch_size, init=init,
                     tokenizer=tokenizer, objective=objective, scorer=scorer, eval_scorer=eval_scorer, blocks=blocks,
                     implicit_beta=implicit_beta, pad=pad, device=device, tracker=tracker, clean=clean)
    rows: list[dict] = []
    try:
        tracker.set_tokens_seen(start_tokens)
        base = {**_stage_init(parts, run_dir, policy), "tokens_seen": start_tokens}
        rows.append(base)
        step_offset, totals = 0, {"tokens_trained": 0, "tokens_generated": 0, "pairs": 0, "scorer_labels": 0}
        previous_dir = Path(spa.init_from)  # the policy a rejected stage falls back to (spa.guards.accept)
        for i, (name, st) in enumerate(stages.items()):
            prompts = pool.draw(int(st["num_prompts"]))  # drawn even when the stage is done: later stages get the same
            stage_dir = run_dir / name
            done = rundir.summary_path(rundir.final_dir(stage_dir))
            if done.is_file():
                row = rundir.read_summary(rundir.final_dir(stage_dir))
                policy = PHFModel.from_pretrained(rundir.final_dir(stage_dir)).to(device).eval()
                log.info("stage %s already done (%s): loaded its policy", name, done)
            else:
                row = _stage(parts, Stage(i, name, st, stage_dir, prompts), policy, step_offset, base)
                row, kept = G.apply_acceptance(spa.guards.accept, row, rows[-1], stage_dir, previous_dir)
                if not row["spa/accepted"]:
                    policy = PHFModel.from_pretrained(kept).to(device).eval()
            previous_dir = rundir.final_dir(stage_dir)
            step_offset += int(row["spa/steps"])
            for k in totals:
                totals[k] += int(row[f"spa/{k}"])
            row.update({f"spa/cumulative/{k}": v for k, v in totals.items()})
            row["tokens_seen"] = start_tokens + totals["tokens_trained"]  # the starting model's, plus DPO's
            rows.append(row)
            tracker.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=step_offset)
        summary = {"init_from": str(spa.init_from), "stages": rows}
        rundir.write_json(run_dir / rundir.SPA_SUMMARY, summary, atomic=True)
        write_final(run_dir, policy, tokenizer, {**rows[-1], "step": step_offset})
        tracker.log_summary({k: v for k, v in rows[-1].items() if isinstance(v, int | float)})
        log.info("SPA done: %s", run_dir / rundir.SPA_SUMMARY)
        return summary
    finally:
        tracker.finish()


def _tokens_seen(init_from: Path) -> int:
    """Tokens the starting model had seen: its ``phf_summary.json``'s ``tokens_seen`` (a phf-train ``final/``),
    0 for a model directory without one."""
    summary = rundir.read_summary(init_from) or {}
    tokens = summary.get("tokens_seen", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise ValueError(f"{rundir.summary_path(init_from)}: tokens_seen must be an integer, got {tokens!r}")
    return tokens


def write_final(run_dir: Path, policy, tokenizer, row: dict) -> None:
    """``RUN/final/``: the last stage's policy with its row as ``phf_summary.json``, as phf-train leaves a
    finished run (``phf.rundir``), so phf-eval ``run_dir=RUN`` and phf-report read an SPA run as any other.
    Already there for this step (a rerun of a finished run): left as it is."""
    done = rundir.read_summary(rundir.final_dir(run_dir)) if rundir.is_finished(run_dir) else None
    if done is not None and done.get("step") == row["step"]:
        return

    def fill(d: Path) -> None:
        policy.save_pretrained(d, tokenizer)
        rundir.write_summary(d, row)  # last: marks a finished run

    write_final_dir(run_dir, row["step"], fill)


@dataclass
class SpaParts:
    """What every SPA stage uses, built once by ``run_spa`` from the config."""

    spa: SpaSettings
    seed: int  # the run's seed: each stage's sampling, labelling and DPO seeds derive from it
    evaluation: EvalSetup
    val_batch_size: int  # trainer.batch_size: val/loss's batches, as phf-train's
    init: torch.nn.Module  # π_init = spa.init_from, frozen: the implicit reward's base
    tokenizer: object
    objective: PreferenceObjective
    scorer: object  # the task scorer: labels the seed's pairs and audits the others
    eval_scorer: object
    blocks: list  # the held-out validation blocks every evaluation measures
    implicit_beta: float
    pad: int  # the pad token id of implicit-reward batches
    device: torch.device
    tracker: object
    clean: list | None = None  # the clean held-out documents (eval/heldout_clean/*), as phf-train's final evaluation


@dataclass
class Stage:
    """One entry of ``spa.stages``: its position, name, settings (labeler, num_prompts, ...), directory
    and the prompts drawn for it."""

    index: int
    name: str
    settings: dict
    dir: Path
    prompts: list


def _stage_init(parts: SpaParts, run_dir: Path, policy) -> dict:
    path = run_dir / "init" / rundir.SUMMARY
    if path.is_file():
        return rundir.read_mapping(path)
    log.info("evaluating the starting model %s", parts.spa.init_from)
    row = {"stage": "init", "spa/stage": -1, **evaluate_model(parts, policy, run_dir, 0)}
    tracker = parts.tracker
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, row, indent=2)
    tracker.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=0)
    return row


def _stage(parts: SpaParts, stage: Stage, policy, step_offset: int, base: dict) -> dict:
    """Pairs (sampled from π_{i-1}, scored, labelled), DPO against π_{i-1}, ``final/`` and its evaluation."""
    i, name, st, stage_dir, prompts = stage.index, stage.name, stage.settings, stage.dir, stage.prompts
    init, tokenizer, objective, scorer, spa, seed = (parts.init, parts.tokenizer, parts.objective, parts.scorer,
                                                     parts.spa, parts.seed)
    implicit_beta, pad, device, tracker = parts.implicit_beta, parts.pad, parts.device, parts.tracker
    t0 = time.perf_counter()
    reference = _frozen_copy(policy)  # π_{i-1}: DPO's reference and the sampler of this stage
    pairs_file = stage_dir / rundir.PAIRS
    stats_file = stage_dir / rundir.PAIR_STATS
    if pairs_file.is_file() and stats_file.is_file():
        pairs = P.read_pairs(pairs_file)
        gen_stats = rundir.read_mapping(stats_file)
        log.info("stage %s: %d pairs from %s", name, len(pairs), pairs_file)
    else:
        settings = P.GenerationSettings(**{**spa.sampling, "seed": seed + 1000 * (i + 1)})
        by_scorer = P.scorer_labelled_mask(len(prompts), st["labeler"], float(st.get("seed_fraction", 0.0)),
                                           seed + i)
        pairs, gen_stats = collect_pairs(  # sample, score, label; redraw tied prompts (spa.pairs)
            reference, init, tokenizer, prompts, settings, objective, scorer, by_scorer,
            spa.pairs, score_prompt=bool(spa.score_prompt), implicit_beta=implicit_beta, pad_id=pad,
            length_normalise=bool(spa.guards.length_normalise), stage=name)
        P.write_pairs(pairs_file, pairs)
        rundir.write_json(stats_file, gen_stats)
        log.info("stage %s: %d prompts → %d informative pairs in %d draws (%d scorer-labelled; dropped %d "
                 "identical, %d ties)", name, len(prompts), len(pairs), gen_stats["pairs/tries"],
                 gen_stats["pairs/scorer_labelled"], gen_stats["pairs/dropped_identical"],
                 gen_stats["pairs/dropped_ties"])
    settings = DPOSettings.from_config(spa.train, seed=seed + i, **({"epochs": st["epochs"]} if "epochs" in st else {}))
    if pairs:
        result = train_dpo(policy, reference, tokenizer, pairs, objective, settings, device, stage_dir, stage_index=i,
                           tracker=tracker, step_offset=step_offset)
    else:  # every prompt tied in every draw (e.g. implicit labels while π_{i-1} = π_init): nothing to learn
        log.warning("stage %s: no informative pair in %s draws; the policy is not trained", name,
                    gen_stats.get("pairs/tries", 1))
        result = DPOResult(steps=0, tokens_trained=0, metrics={}, flagged=[])
    del reference
    policy.save_pretrained(rundir.final_dir(stage_dir), tokenizer)
    # the evaluation's samples go where phf-train's do: RUN/samples/step_N/ at the global DPO step
    metrics = evaluate_model(parts, policy, stage_dir.parent, step_offset + result.steps)
    row = {
        "stage": name, "spa/stage": i, "spa/labeler": st["labeler"], "spa/prompts": len(prompts),
        "spa/pairs": len(pairs), "spa/steps": result.steps, "spa/tokens_trained": result.tokens_trained,
        "spa/tokens_generated": int(gen_stats["tokens_generated"]),
        "spa/scorer_labels": int(gen_stats["pairs/scorer_labelled"]),
        "spa/dnd_lambda": objective.lambda_for(i), "spa/train_s": result.wall_s,
        "spa/wall_s": time.perf_counter() - t0,
        **{f"spa/{k}": v for k, v in gen_stats.items() if k != "tokens_generated"},
        **{f"spa/{k}": v for k, v in P.pair_stats(pairs).items()},
        **{f"spa/train/{k}": v for k, v in result.metrics.items()},
        **{f"spa/{k}": v for k, v in flag_audit(pairs, result.flagged).items()},
        **metrics, **_drift(metrics, base),
    }
    rundir.write_summary(rundir.final_dir(stage_dir), row)  # non-finite values as null (phf.rundir)
    row = rundir.read_summary(rundir.final_dir(stage_dir))  # as a rerun reads it back
    log.info("stage %s: %d DPO steps, %d tokens; eval %s", name, result.steps, result.tokens_trained,
             {k: round(v, 5) for k, v in metrics.items() if k.endswith("/score") or k == "val/loss"})
    return row


def main() -> None:
    hydra_entry(run_spa)


if __name__ == "__main__":
    main()

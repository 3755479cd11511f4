"""phf-train: one GPT-2 pretraining loop for every PHF objective.

    phf-train model=gpt2_tiny data=local_pep8 objective=conditional trainer.max_steps=30
    phf-train -m objective=mle,filtering,conditional,unlikelihood,rwr,awr      # a Hydra sweep
    torchrun --nproc_per_node 8 -m phf.train model=gpt2_small ...              # DDP, one process per GPU

``train(cfg) -> metrics`` is the whole job and is what tests call: it builds the run's parts from the
config (tokenizer, objective, model, scorer, data stream, optimizer), continues a checkpoint when there
is one, and hands them to ``phf.trainer.TrainingLoop``. ``main`` only composes the config and records
failures (``phf.entry.hydra_entry``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from phf import checkpoint as ckpt
from phf import rundir
from phf.card import generation_config
from phf.data.pipeline import RunData, build_data
from phf.devices import Dist, keep_freed_memory, resolve_device
from phf.entry import FinishedRunError, hydra_entry
from phf.eval.evaluate import check_prompts_fit
from phf.eval.settings import EvalSetup
from phf.guidance import build_objective
from phf.model import VALUE_HEAD_FILE
from phf.optim import lr_schedule, make_optimizer
from phf.scorers import build_scorer
from phf.tracking import check_run_id
from phf.train_state import RunLock, check_resume_config, config_differences, restore_training_state
from phf.trainer import HeldOut, Plan, RunParts, Trainer, TrainingLoop, is_int

log = logging.getLogger("phf.train")


def validate_run(cfg: DictConfig) -> None:
    """Top-level keys every run uses, checked before anything is built."""
    if not is_int(cfg.seed):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")
    if not -(2**63) <= cfg.seed < 2**64:  # what torch.manual_seed accepts
        raise ValueError(f"seed must be in [-2**63, 2**64) (torch's seed range), got {cfg.seed}")


def dry_run(cfg: DictConfig, trainer: Trainer, plan: Plan) -> dict:
    """Print and return the run's derived quantities without building anything."""
    info = {"task": cfg.task.name, "objective": cfg.objective._target_.rsplit(".", 1)[-1],
            "lr": trainer.lr, "effective_batch_size": trainer.effective_batch_size,
            "block_size": cfg.model.block_size, "start_tokens": int(trainer.start_tokens),
            "num_tokens": trainer.num_tokens, "tokens_trained": plan.max_steps * plan.tokens_per_step,
            **plan.as_dict()}
    print(json.dumps(info, indent=2))
    return info


def train(cfg: DictConfig) -> dict:
    """Train one model as ``cfg`` says; return the final metrics."""
    dist = Dist()
    validate_run(cfg)
    trainer = Trainer.from_config(cfg.trainer)
    plan = trainer.plan(cfg.model.block_size, dist.world_size)
    if trainer.dry_run:
        return dry_run(cfg, trainer, plan)
    trainer.check_set()
    run_dir = Path(cfg.run_dir)
    lock = None
    if dist.main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"run directory {run_dir} cannot be created: {type(e).__name__}: {e}") from e
        lock = RunLock(run_dir)
        lock.acquire()
    try:
        return _train(cfg, trainer, plan, dist, run_dir)
    finally:
        if lock is not None:
            lock.release()


def checkpoint_to_resume(trainer: Trainer, ckpt_root: Path) -> Path | None:
    """``trainer.resume``: auto = the latest checkpoint of this run (if any), never, or a path."""
    if trainer.resume == "auto":
        return ckpt.latest_checkpoint(ckpt_root)
    if trainer.resume not in (None, "never", False):
        return ckpt.check_checkpoint(trainer.resume)
    return None


def _train(cfg: DictConfig, trainer: Trainer, plan: Plan, dist: Dist, run_dir: Path) -> dict:
    # which checkpoint to continue, and whether its run had the same settings: before building anything
    resume_from = checkpoint_to_resume(trainer, rundir.checkpoints_dir(run_dir))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    finished = check_finished_run(run_dir, resolved, trainer, plan, resume_from)
    if finished is not None:
        return finished  # nothing to do: the same run is already finished, nothing is rewritten
    if resume_from is not None and dist.main:
        check_resume_config(resolved, resume_from, run_dir, trainer.resume_keys, trainer.resume_ignore,
                            trainer.resume_mismatch)
    if dist.main and OmegaConf.select(cfg, "logger.backend") == "wandb":
        check_run_id(run_dir, resume=resume_from is not None)  # before metrics.jsonl is cut back or replaced
    device = resolve_device(trainer.device, dist.local_rank)
    if device.type == "cpu" and trainer.cpu_keep_freed_memory and not keep_freed_memory():
        log.warning("trainer.cpu_keep_freed_memory=true has no effect: the C library is not glibc")
    dist.init(device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # -- the run's parts, each validated as it is built -----------------------------------------------
    # a resume continues with the tokenizer the run trained with, saved in the checkpoint: never one fitted
    # again to a corpus (or loaded from a cache) that may have changed since
    tokenizer = checkpoint_tokenizer(resume_from) if resume_from is not None else instantiate(cfg.tokenizer)
    if resume_from is None and OmegaConf.select(cfg, "model.init_from"):
        check_init_tokenizer(Path(cfg.model.init_from), tokenizer)
    objective, control_ids = build_objective(cfg, tokenizer)
    model = instantiate(cfg.model, tokenizer=tokenizer, objective=objective, seed=cfg.seed).to(device)
    evaluation = EvalSetup.from_config(cfg)  # task.eval, typed, with what it takes from the other groups
    ev = evaluation.settings  # saved models sample as phf evaluates them (generation_config.json)
    generation_config(model.lm, tokenizer, objective, ev.temperature, ev.top_p, ev.top_k)
    if cfg.model.block_size > model.config.n_positions:
        raise ValueError(f"model.block_size {cfg.model.block_size} exceeds the model's context {model.config.n_positions}")
    if trainer.final_eval or 0 < (ev.every_steps or 0) < plan.max_steps:  # an evaluation will run: fail now, not after training
        check_prompts_fit(model.lm, tokenizer, objective, ev)  # (the loop's due(): step < max_steps)
    scorer = build_scorer(cfg.scorer, cfg.get("cache_dir"))
    # the source is built once: training and validation streams share it
    run_data = RunData.from_config(cfg, data=build_data(cfg.data), scorer=scorer)
    data = run_data.data
    if trainer.data_state_from and (data.skip_tokens or data.skip_documents):
        raise ValueError("trainer.data_state_from and data.skip_tokens / data.skip_documents both set where the "
                         "training stream starts: use data_state_from for a phf checkpoint (its exact position), "
                         "skip_tokens for a model without one (an imported original model)")
    stream = run_data.stream("train", tokenizer, objective, rank=dist.rank, world_size=dist.world_size)
    prepared = {}
    if getattr(objective, "requires_prepare", False):
        log.info("scoring %d training documents to prepare %r (data.prepare_docs)", data.prepare_docs, objective)
        prepared = objective.prepare(stream.scored_sample(data.prepare_docs))
    optimizer = make_optimizer(model, trainer.lr, trainer.weight_decay, trainer.betas, trainer.eps,
                               fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(plan.warmup_steps, plan.max_steps))
    precision = trainer.resolved_precision(device)

    def autocast():
        if precision in ("bf16", "fp16"):
            return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    # fp16 needs dynamic loss scaling (the original's fp16 AMP: torch's defaults, as HF's Trainer used)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # -- where the run starts ---------------------------------------------------------------------------
    start = Start(step=0, tokens_seen=int(trainer.start_tokens))
    if resume_from is not None:
        start = Start(*resume(resume_from, model, objective, optimizer, scheduler, stream, plan, dist, scaler),
                      resume_from=resume_from)
        if dist.main:
            rundir.truncate_metrics(run_dir, start.step)
    else:
        if dist.main:  # a fresh start replaces rows a run killed before its first checkpoint left
            rundir.truncate_metrics(run_dir, -1)
        if trainer.data_state_from:
            continue_data_position(trainer, stream, dist)

    # -- tracking, then the loop ------------------------------------------------------------------------
    tracker = None
    try:
        if dist.main:
            write_config(run_dir, resolved, resumed_at=start.step if start.resumed else None)
        # partial: the resolved config holds `_target_` nodes that instantiate must not build
        tracker = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, run_config=resolved, enabled=dist.main,
                                                          resume=start.resumed, **tracker_identity(cfg, objective))
        held_out = HeldOut(evaluation, run_data, tokenizer, trainer.val_blocks, trainer.batch_size, autocast)
        if dist.main:
            held_out.blocks  # noqa: B018 (built now: the held-out set's size is checked before training, not after)
        parts = RunParts(cfg=cfg, dist=dist, device=device, model=model, objective=objective, tokenizer=tokenizer,
                         stream=stream, optimizer=optimizer, scheduler=scheduler, tracker=tracker,
                         held_out=held_out, run_dir=run_dir, autocast=autocast, scaler=scaler)
        if dist.main:
            log_derived(parts, trainer, plan, start, control_ids, prepared)
            tracker.log({"tokens_seen": start.tokens_seen, "params": model.num_parameters(), **prepared,
                         **plan.as_dict()}, step=start.step)
        return TrainingLoop(trainer, plan, parts, start.step, start.tokens_seen, ev.every_steps or 0,
                            start.amp_skipped).run()
    finally:
        if tracker is not None:
            tracker.finish()
        dist.close()


@dataclass(frozen=True)
class Start:
    """Where a run starts: step 0 of a fresh run (``trainer.start_tokens`` already seen), or the step,
    tokens seen and fp16 updates skipped of the checkpoint it resumes (``resume_from``)."""

    step: int
    tokens_seen: int
    amp_skipped: int = 0
    resume_from: Path | None = None

    @property
    def resumed(self) -> bool:
        return self.resume_from is not None


def tracker_identity(cfg: DictConfig, objective) -> dict:
    """The wandb run's name, group and tags.

    A single run is ``<task>-<objective>``; a job of a Hydra multirun is named by the keys the sweep varies
    (``phf.run_name``: ``objective=mle,seed=1``; without the sweep's ``multirun.yaml``, by Hydra's
    ``job.override_dirname`` read unresolved, paths shortened) and grouped by its sweep directory's name. ``run_name`` and ``logger.group`` win when set;
    the tags are the task and the objective, plus ``logger.tags``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    task, obj = cfg.task.name, type(objective).__name__.lower()
    name, group = cfg.get("run_name"), OmegaConf.select(cfg, "logger.group")
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        from phf.run_name import short_value, swept_run_name

        hc = HydraConfig.get()
        # the swept keys' values (short); without the sweep's multirun.yaml every override, paths shortened
        dirname = OmegaConf.to_container(hc.job, resolve=False).get("override_dirname") or ""
        name = name or swept_run_name(Path(hc.sweep.dir), list(hc.overrides.task)) or ",".join(
            f"{o.split('=', 1)[0]}={short_value(o.split('=', 1)[1])}" if "=" in o else o
            for o in dirname.split(",") if o)
        group = group or Path(hc.sweep.dir).name
    tags = [task, obj, *(t for t in OmegaConf.select(cfg, "logger.tags") or [] if t not in (task, obj))]
    return {"name": name or f"{task}-{obj}", "group": group, "tags": tags}


def resume(resume_from: Path, model, objective, optimizer, scheduler, stream, plan: Plan, dist: Dist,
           scaler: torch.amp.GradScaler | None = None) -> tuple[int, int, int]:
    """Restore a checkpoint of this run into the built parts (the fp16 loss scaler too); returns (step,
    tokens_seen, fp16 updates skipped so far)."""
    if model.value_head is not None and not (resume_from / VALUE_HEAD_FILE).is_file():
        # from_pretrained would build a fresh random head: the resumed run would not be the same run
        raise ValueError(f"checkpoint {resume_from} has no {VALUE_HEAD_FILE} but objective {type(objective).__name__} "
                         f"trains a value head; restore the file, resume from another checkpoint "
                         f"(trainer.resume=PATH), or start over with trainer.resume=never")
    state = restore_training_state(resume_from, model, optimizer, scheduler, dist.rank)
    step, tokens_seen = state["step"], state["tokens_seen"]
    if step >= plan.max_steps:
        raise ValueError(
            f"checkpoint {resume_from} is at step {step} but this run ends at step {plan.max_steps} "
            f"(trainer.max_steps / trainer.num_tokens): nothing is left to train. Raise trainer.max_steps above "
            f"{step}, resume an earlier checkpoint with trainer.resume=PATH, or start over with trainer.resume=never")
    saved_plan = state.get("plan") or {}
    if saved_plan and saved_plan.get("max_steps") != plan.max_steps:
        log.warning("trainer.max_steps changed on resume (%s -> %d): the LR schedule continues as if the run "
                    "had been planned for %d steps from the start", saved_plan.get("max_steps"),
                    plan.max_steps, plan.max_steps)
    # the saved scheduler carries the LR its old plan computed for the next step; recompute it from
    # this run's schedule (identical when the plan is unchanged)
    for group, base, f in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * f(scheduler.last_epoch)
    stream.load_state_dict(state["data_state"])
    amp_skipped = 0
    if scaler is not None and scaler.is_enabled():
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
            amp_skipped = int(state.get("amp_skipped_steps", 0))
        else:
            log.warning("checkpoint %s has no fp16 loss-scaler state (it was trained in another precision): the "
                        "loss scale starts afresh at %g", resume_from, scaler.get_scale())
    return step, tokens_seen, amp_skipped


def check_finished_run(run_dir: Path, resolved: dict, trainer: Trainer, plan: Plan, resume_from: Path | None) -> dict | None:
    """A finished run (``final/phf_summary.json``) is never overwritten.

    Returns its summary when this config is the same run (``trainer.resume_keys`` minus
    ``trainer.resume_ignore``) ending at the same step: nothing to do, nothing is rewritten. Without a
    checkpoint to continue from, other settings (naming the keys) or another end step are refused:
    training would start over and replace ``final/``. With one, it is a resume like any other (other
    settings refused by ``check_resume_config`` unless ``trainer.resume_mismatch=continue``); the finished
    ``final/`` is then kept as ``final.step_N/`` when the new one is written (``ckpt.write_final``).
    ``trainer.overwrite_finished=true`` trains a new run here (the finished ``final/`` is kept the same way,
    its ``config.yaml`` as ``config.step_N.yaml``)."""
    import yaml

    step = ckpt.finished_step(run_dir)
    if step is None:
        return None
    stored_file = rundir.config_path(run_dir)
    if trainer.overwrite_finished:
        if stored_file.is_file():
            shutil.copyfile(stored_file, rundir.kept_config_path(run_dir, step))
        log.warning("trainer.overwrite_finished=true: training a new run in %s; the finished run's final/ (step %d) "
                    "will be kept as final.step_%08d/ and its config as config.step_%08d.yaml", run_dir, step, step,
                    step)
        return None
    way_out = ("Use a new run_dir, or set trainer.overwrite_finished=true to train a new run here (the finished "
               "run's final/ and config.yaml are kept as final.step_N/ and config.step_N.yaml)")
    try:
        stored = yaml.safe_load(stored_file.read_text())
        if not isinstance(stored, dict):
            raise FinishedRunError(f"expected a mapping, got {type(stored).__name__}")
    except (OSError, ValueError, yaml.YAMLError) as e:
        if resume_from is not None:
            return None  # check_resume_config names the unreadable file
        raise FinishedRunError(f"{run_dir} holds a finished run (final/ at step {step}) but its settings cannot be read "
                         f"from {stored_file} ({type(e).__name__}: {' '.join(str(e).split())}) to compare with this "
                         f"run's. {way_out}") from None
    diffs = config_differences(stored, resolved, list(trainer.resume_keys), list(trainer.resume_ignore))
    explicit = trainer.resume not in (None, "auto", "never", False)  # a checkpoint the user named: train from it
    if not diffs and step == plan.max_steps and not explicit:
        summary = rundir.read_summary(rundir.final_dir(run_dir))
        log.info("%s is already finished (final/ at step %d, the same settings): nothing to do, nothing was "
                 "rewritten. To train again use a new run_dir, or trainer.overwrite_finished=true", run_dir, step)
        return summary
    if resume_from is not None:
        return None  # a resume from its checkpoint, checked like any other
    if diffs:
        raise FinishedRunError(f"{run_dir} holds a finished run (final/ at step {step}) with settings that differ from the "
                         f"run's stored config {stored_file}: {'; '.join(diffs)}. Training here would start over and "
                         f"replace its final/ and config.yaml. {way_out}")
    raise FinishedRunError(f"{run_dir} holds a finished run (final/ at step {step}); this run ends at step {plan.max_steps} "
                     "and there is no checkpoint to continue from (none was written before the end: trainer.checkpoint_every / "
                     f"checkpoint_every_s; or trainer.resume=never), so training would start over and replace final/. "
                     f"{way_out}")


def checkpoint_tokenizer(path: Path):
    """The tokenizer saved in checkpoint ``path`` (its ``tokenizer.json``): what a resume tokenizes with, so
    token ids keep their meaning whatever happened to the corpus or the tokenizer cache since."""
    from phf.tokenizer import load_tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise ValueError(f"checkpoint {path} has no tokenizer.json: a resume continues with the tokenizer the run "
                         "trained with (fitting or loading it again could give token ids another meaning); restore "
                         "the file, resume another checkpoint (trainer.resume=PATH), or start over with "
                         "trainer.resume=never")
    try:
        tokenizer = load_tokenizer(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its tokenizer (tokenizer.json) cannot be loaded: {e}; restore it, resume "
                         "another checkpoint (trainer.resume=PATH), or start over with trainer.resume=never") from None
    log.info("tokenizer: the checkpoint's (%s, %d tokens)", file, len(tokenizer))
    return tokenizer


def check_init_tokenizer(init_from: Path, tokenizer) -> None:
    """Finetuning (``model.init_from``): refuse a tokenizer whose token ids mean other strings than in the
    tokenizer the model was trained with (its ``tokenizer.json``), e.g. a BPE fitted again to a corpus
    that changed since; the model would read every id as another token. Its added tokens (control
    tokens) are compared by the objective's own check; a directory without ``tokenizer.json`` (a model
    trained elsewhere) is not compared."""
    from phf.tokenizer import load_tokenizer

    if not (init_from / "tokenizer.json").is_file():
        return
    theirs = load_tokenizer(str(init_from))
    if theirs.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"model.init_from {init_from} was trained with a tokenizer of {theirs.vocab_size} tokens "
                         f"({init_from / 'tokenizer.json'}), this run's has {tokenizer.vocab_size}: every id would mean "
                         f"another token. Continue with the model's own: tokenizer=pretrained "
                         f"tokenizer.name_or_path={init_from}")
    ids = list(range(tokenizer.vocab_size))
    differ = [(i, a, b) for i, a, b in zip(ids, theirs.convert_ids_to_tokens(ids), tokenizer.convert_ids_to_tokens(ids),
                                           strict=True) if a != b]
    if differ:
        shown = ", ".join(f"id {i}: {a!r} there, {b!r} here" for i, a, b in differ[:3])
        raise ValueError(f"model.init_from {init_from} was trained with another tokenizer ({init_from / 'tokenizer.json'}): "
                         f"{len(differ)} of {len(ids)} token ids mean other strings in this run's ({shown}; a BPE "
                         f"fitted again to a corpus that changed?). Continue with the model's own: tokenizer=pretrained "
                         f"tokenizer.name_or_path={init_from}")


def continue_data_position(trainer: Trainer, stream, dist: Dist) -> None:
    """Finetuning: continue where the pretraining run's data stream stopped, without re-reading or
    re-tokenizing the documents it consumed. fresh (the original's skip_tokens): empty buffers, so every
    block goes through this objective's transform; restored: also that run's token and shuffle buffers
    (blocks built by its objective), its exact continuation."""
    data_state = ckpt.load_state(Path(trainer.data_state_from), ckpt.data_state_name(dist.rank))
    if trainer.data_state_buffers == "fresh":
        stream.load_position(data_state)
    else:
        stream.load_state_dict(data_state)


def write_config(run_dir: Path, resolved: dict, resumed_at: int | None) -> None:
    """``RUN_DIR/config.yaml``; on a resume with changed settings the earlier one is kept alongside."""
    text = OmegaConf.to_yaml(OmegaConf.create(resolved))
    config_file = rundir.config_path(run_dir)
    if resumed_at is not None and config_file.is_file() and config_file.read_text() != text:
        # nothing already written is lost: the settings the earlier steps ran with stay readable
        kept = rundir.kept_config_path(run_dir, resumed_at)
        os.replace(config_file, kept)
        log.info("config changed on resume; the previous one is kept as %s", kept)
    config_file.write_text(text)


def log_derived(parts: RunParts, trainer: Trainer, plan: Plan, start: Start, control_ids, prepared: dict) -> None:
    """The run's derived quantities, printed once: the built parts, the settings, the plan, where it starts,
    the objective's control token ids and what the objective prepared from the data."""
    objective = parts.objective
    log.info("run dir: %s", parts.run_dir)
    log.info("objective: %r", objective)
    log.info("model: %.2fM parameters (%s), value head: %s, device %s, precision %s",
             parts.model.num_parameters() / 1e6, "resumed" if start.resumed else "new",
             parts.model.value_head is not None, parts.device, trainer.resolved_precision(parts.device))
    if objective.special_tokens:
        log.info("special tokens: %s", dict(zip(objective.special_tokens, control_ids, strict=True)))
    log.info("tokens per optimizer step: %d (%d seqs × %d tokens; micro-batch %d × %d ranks × %d accumulation)",
             plan.tokens_per_step, trainer.effective_batch_size, parts.cfg.model.block_size,
             trainer.batch_size, parts.dist.world_size, plan.accum)
    log.info("optimizer steps: %d (%d warmup), starting at step %d, %.3g tokens seen",
             plan.max_steps, plan.warmup_steps, start.step, start.tokens_seen)
    every = [f"every {trainer.checkpoint_every} steps"] if trainer.checkpoint_every else []
    every += [f"every {trainer.checkpoint_every_s:g} s"] if trainer.checkpoint_every_s else []
    log.info("checkpoints: %s in %s (a killed run resumes from the newest with the same command and run directory)",
             " and ".join(every) or "none (trainer.checkpoint_every=0, checkpoint_every_s=0): a killed run starts over",
             rundir.checkpoints_dir(parts.run_dir))
    for k, v in prepared.items():
        log.info("prepared %s = %s", k, v)




def job(cfg: DictConfig) -> float | None:
    """One Hydra job: train, return the validation loss (what a Hydra sweeper would minimise)."""
    return train(cfg).get("val/loss")


def main() -> None:
    hydra_entry(job)


if __name__ == "__main__":
    main()

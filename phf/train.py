"""phf-train: one GPT-2 pretraining loop for every PHF objective.

    phf-train model=gpt2_tiny data=local_pep8 objective=conditional trainer.max_steps=30
    phf-train -m objective=mle,filtering,conditional,unlikelihood,rwr,awr      # a Hydra sweep
    torchrun --nproc_per_node 8 -m phf.train model=gpt2_small ...              # DDP, one process per GPU

``train(cfg) -> metrics`` is the whole job and is what tests call; ``main`` only composes the config,
records failures and returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger("phf.train")

RESUME_MISMATCH = ("refuse", "continue")
LOCK_FILE = "phf.lock"


# -- set-up ---------------------------------------------------------------------------------------
class Dist:
    """Rank/world of this process; DDP is on when launched by torchrun with WORLD_SIZE > 1."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device=cuda but no CUDA device is available (use trainer.device=auto or cpu)")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    if name != "cpu":
        raise ValueError(f"trainer.device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS (CPU training).

    glibc serves every allocation above its mmap threshold with a fresh mmap and unmaps it on free, so
    each step's (B, T, V) logits, log-softmax and gradient buffers are page-faulted in again, page by
    page, every step. With mmap off and the trim threshold at its maximum the heap keeps and reuses
    them: measured 2.07× tokens/s for gpt2_tiny on 2 cores, +26% peak RSS
    (experiments/benchmarks/README.md). Process-wide, not undone; the environment equivalent is
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``. Returns False (nothing changed) where the
    C library is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_trainer(tr: DictConfig) -> None:
    """Reject wrong types and out-of-range values early, naming the key and what was expected."""
    checks = {
        "batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
        "effective_batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
        "max_steps": (lambda v: v is None or _is_int(v), "an integer or null"),
        "num_tokens": (lambda v: v is None or _is_num(_as_float(v)), "a number or null"),
        "start_tokens": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "lr": (lambda v: _is_num(v) and v > 0, "a positive number"),
        "weight_decay": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
        "warmup_fraction": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "grad_clip": (lambda v: _is_num(v) and v > 0, "a positive number"),
        "log_every": (lambda v: _is_int(v) and v > 0, "a positive integer"),
        "eval_every": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "checkpoint_every": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "keep_checkpoints": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "val_blocks": (lambda v: _is_int(v) and v > 0, "a positive integer"),
        "max_bad_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "cpu_keep_freed_memory": (lambda v: isinstance(v, bool), "true or false"),
        "eps": (lambda v: _is_num(v) and v > 0, "a positive number"),
        "betas": (lambda v: isinstance(v, list | tuple | ListConfig) and len(v) == 2
                  and all(_is_num(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9, 0.999]"),
        "resume_mismatch": (lambda v: v in RESUME_MISMATCH, f"one of {RESUME_MISMATCH}"),
    }
    for key, (ok, expected) in checks.items():
        if not ok(tr[key]):
            value = list(tr[key]) if isinstance(tr[key], ListConfig) else tr[key]
            raise ValueError(f"trainer.{key} must be {expected}, got {value!r}")


def validate_run(cfg: DictConfig) -> None:
    """Top-level keys every run uses, checked before anything is built."""
    if not _is_int(cfg.seed):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")
    if not -(2**63) <= cfg.seed < 2**64:  # what torch.manual_seed accepts
        raise ValueError(f"seed must be in [-2**63, 2**64) (torch's seed range), got {cfg.seed}")


def _as_float(v):
    """``3.3e9`` may arrive as a string from YAML 1.1 / the command line."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def plan_steps(tr: DictConfig, block_size: int, world_size: int) -> dict:
    """Validate the trainer settings and derive accumulation, tokens per step and the step count."""
    validate_trainer(tr)
    per_step = tr.batch_size * world_size
    if tr.effective_batch_size % per_step:
        raise ValueError(
            f"trainer.effective_batch_size ({tr.effective_batch_size}) must be a multiple of "
            f"trainer.batch_size × world size ({tr.batch_size} × {world_size})"
        )
    tokens_per_step = tr.effective_batch_size * block_size
    if tr.num_tokens is not None:
        remaining = int(float(tr.num_tokens)) - int(tr.start_tokens)
        max_steps = remaining // tokens_per_step
        if max_steps <= 0:
            raise ValueError(f"trainer.num_tokens={tr.num_tokens} leaves no optimizer step of {tokens_per_step} tokens")
    elif tr.max_steps is not None and tr.max_steps > 0:
        max_steps = int(tr.max_steps)
    else:
        raise ValueError("set trainer.num_tokens (token budget) or trainer.max_steps > 0")
    warmup = math.ceil(tr.warmup_fraction * max_steps)
    return {"accum": tr.effective_batch_size // per_step, "tokens_per_step": tokens_per_step,
            "max_steps": max_steps, "warmup_steps": warmup}


def make_optimizer(model, tr: DictConfig, device: torch.device):
    """AdamW; no weight decay on biases and LayerNorm weights (every 1-D parameter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tr.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=tr.lr, betas=tuple(tr.betas), eps=tr.eps, fused=fused)


def linear_schedule(warmup: int, total: int):
    """Linear warmup to the peak LR over ``warmup`` steps, then linear decay towards 0.

    Unlike HF's schedule, the first update uses peak/warmup rather than 0, so no step is wasted.
    """

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


# -- the job --------------------------------------------------------------------------------------
def stack(blocks: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.stack([b[k] for b in blocks]).to(device, non_blocking=True) for k in blocks[0]}


def dry_run(cfg: DictConfig, dist: Dist) -> dict:
    """Print and return the run's derived quantities without building anything."""
    plan = plan_steps(cfg.trainer, cfg.model.block_size, dist.world_size)
    info = {"task": cfg.task.name, "objective": cfg.objective._target_.rsplit(".", 1)[-1],
            "lr": cfg.trainer.lr, "effective_batch_size": cfg.trainer.effective_batch_size,
            "block_size": cfg.model.block_size, "start_tokens": int(cfg.trainer.start_tokens),
            "num_tokens": None if cfg.trainer.num_tokens is None else int(float(cfg.trainer.num_tokens)),
            "tokens_trained": plan["max_steps"] * plan["tokens_per_step"], **plan}
    print(json.dumps(info, indent=2))
    return info


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory (``RUN_DIR/phf.lock`` holding ``PID HOST``).

    ``flock`` on the open file: the kernel releases it when the process dies, however it dies, so a
    lock left by a killed run is stale by construction and simply taken over (and said so). Where the
    file system refuses ``flock``, the PID in the file decides: a live process on this host holds it.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _refuse(self, holder: str):
        pid = holder.split()[0] if holder.split() else holder
        return RunDirInUse(
            f"run directory {self.path.parent} is in use by PID {pid} (lock file {self.path}: {holder!r}); "
            "wait for that run to end or use another run_dir. If no such phf-train runs (e.g. the directory is "
            f"shared with another machine whose process died), delete {self.path}")

    def acquire(self) -> None:
        import fcntl
        import socket

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = self._holder()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(previous) from None
        except OSError:  # no flock here (some network file systems): judge by the PID in the file
            if previous != "unknown" and _pid_alive(previous, socket.gethostname()):
                os.close(fd)
                raise self._refuse(previous) from None
        if previous != "unknown":
            log.warning("taking over the stale lock %s of a process that is gone (%s)", self.path, previous)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # empty = free; the file stays (unlinking would race a new opener)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _pid_alive(holder: str, host: str) -> bool:
    parts = holder.split()
    if len(parts) != 2 or not parts[0].isdigit():
        return False
    if parts[1] != host:
        return True  # another machine's process: cannot check, assume it runs
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(parts[0]) != os.getpid()


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(stored: dict, new: dict, keys, ignore) -> list[str]:
    """``key: old -> new`` for every leaf under ``keys`` (minus ``ignore`` prefixes) that differs."""
    def pick(c: dict) -> dict:
        flat = _flatten({k: c.get(k) for k in keys})
        return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in ignore)}

    old, cur = pick(stored), pick(new)
    return [f"{k}: {old.get(k, '<absent>')!r} -> {cur.get(k, '<absent>')!r}"
            for k in sorted(set(old) | set(cur)) if old.get(k, "<absent>") != cur.get(k, "<absent>")]


def check_resume_config(cfg: DictConfig, resolved: dict, resume_from: Path, run_dir: Path) -> Path | None:
    """Compare the config the checkpoint was trained with against this run's; refuse a difference on
    ``trainer.resume_keys`` unless ``trainer.resume_mismatch=continue``. Returns the stored file."""
    import yaml

    tr = cfg.trainer
    candidates = [resume_from.parent.parent / "config.yaml", run_dir / "config.yaml"]
    stored_path = next((p for p in candidates if p.is_file()), None)
    if stored_path is None:
        log.warning("resuming %s without a stored config.yaml (looked for %s): cannot check that the settings "
                    "match", resume_from, ", ".join(map(str, candidates)))
        return None
    try:
        stored = yaml.safe_load(stored_path.read_text())
        if not isinstance(stored, dict):
            raise ValueError(f"expected a mapping, got {type(stored).__name__}")
    except (OSError, ValueError, yaml.YAMLError) as e:
        why = (f"cannot read the stored config {stored_path} to check the resume: {type(e).__name__}: "
               f"{' '.join(str(e).split())}")
        if tr.resume_mismatch == "continue":
            log.warning("%s; continuing (trainer.resume_mismatch=continue)", why)
            return stored_path
        raise ValueError(f"{why}; repair it, or set trainer.resume_mismatch=continue to resume without the check") from None
    diffs = config_differences(stored, resolved, list(tr.resume_keys), list(tr.resume_ignore))
    if not diffs:
        return stored_path
    listed = "; ".join(diffs)
    if tr.resume_mismatch == "refuse":
        raise ValueError(
            f"resuming {resume_from} with settings that differ from the run's stored config {stored_path}: {listed}. "
            "Resuming would crash or silently mix two trainings. Use a new run_dir (or trainer.resume=never to start "
            "over here), or set trainer.resume_mismatch=continue to go on anyway (the old config.yaml is kept)")
    log.warning("resuming %s with settings that differ from %s (trainer.resume_mismatch=continue): %s",
                resume_from, stored_path, listed)
    return stored_path


def train(cfg: DictConfig) -> dict:
    """Train one model as ``cfg`` says; return the final metrics."""
    dist = Dist()
    tr = cfg.trainer
    validate_run(cfg)
    if tr.dry_run:
        return dry_run(cfg, dist)
    plan = plan_steps(tr, cfg.model.block_size, dist.world_size)
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
        return _train(cfg, dist, plan, run_dir)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, dist: Dist, plan: dict, run_dir: Path) -> dict:
    from hydra.utils import instantiate

    from phf import checkpoint as ckpt
    from phf.card import generation_config
    from phf.data.pipeline import scorer_from_config, stream_from_config
    from phf.guidance import build_objective
    from phf.model import VALUE_HEAD_FILE, PHFModel

    tr = cfg.trainer
    ckpt_root = run_dir / "checkpoints"
    # which checkpoint to continue, and whether its run had the same settings: before building anything
    resume_from = None
    if tr.resume == "auto":
        resume_from = ckpt.latest_checkpoint(ckpt_root)
    elif tr.resume not in (None, "never", False):
        resume_from = ckpt.check_checkpoint(tr.resume)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if resume_from is not None and dist.main:
        check_resume_config(cfg, resolved, resume_from, run_dir)
    device = resolve_device(tr.device, dist)
    if device.type == "cpu" and tr.cpu_keep_freed_memory and not keep_freed_memory():
        log.warning("trainer.cpu_keep_freed_memory=true has no effect: the C library is not glibc")
    dist.init(device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # -- components (each validated as it is built) ----------------------------------------------
    tokenizer = instantiate(cfg.tokenizer)  # fit_bpe fits (once per corpus) or loads from its cache
    objective, control_ids = build_objective(cfg, tokenizer)
    model = instantiate(cfg.model, tokenizer=tokenizer, objective=objective, seed=cfg.seed).to(device)
    ev = cfg.task.eval  # saved models sample as phf evaluates them (generation_config.json)
    generation_config(model.lm, tokenizer, objective, ev.temperature, ev.top_p, ev.top_k)
    if cfg.model.block_size > model.config.n_positions:
        raise ValueError(f"model.block_size {cfg.model.block_size} exceeds the model's context {model.config.n_positions}")
    scorer = scorer_from_config(cfg)
    source = instantiate(cfg.data.source)
    stream = stream_from_config(cfg, tokenizer, "train", objective, source=source, scorer=scorer,
                                rank=dist.rank, world_size=dist.world_size)
    prepared = {}
    if getattr(objective, "requires_prepare", False):
        prepared = objective.prepare(stream.scored_sample(cfg.data.prepare_docs))

    optimizer = make_optimizer(model, tr, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(plan["warmup_steps"], plan["max_steps"]))
    precision = tr.precision if tr.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"trainer.precision must be auto, bf16 or fp32, got {tr.precision!r}")

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- resume ----------------------------------------------------------------------------------
    step, tokens_seen = 0, int(tr.start_tokens)
    if resume_from is not None:
        if model.value_head is not None and not (resume_from / VALUE_HEAD_FILE).is_file():
            # from_pretrained would build a fresh random head: the resumed run would not be the same run
            raise ValueError(f"checkpoint {resume_from} has no {VALUE_HEAD_FILE} but objective {type(objective).__name__} "
                             f"trains a value head; restore the file, resume from another checkpoint "
                             f"(trainer.resume=PATH), or start over with trainer.resume=never")
        loaded = PHFModel.from_pretrained(resume_from, value_head=model.value_head is not None)
        model.load_state_dict(loaded.state_dict())
        del loaded
        state = ckpt.load_state(resume_from, "trainer_state.pt")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, tokens_seen = state["step"], state["tokens_seen"]
        if step >= plan["max_steps"]:
            raise ValueError(
                f"checkpoint {resume_from} is at step {step} but this run ends at step {plan['max_steps']} "
                f"(trainer.max_steps / trainer.num_tokens): nothing is left to train. Raise trainer.max_steps above "
                f"{step}, resume an earlier checkpoint with trainer.resume=PATH, or start over with trainer.resume=never")
        saved_plan = state.get("plan") or {}
        if saved_plan and saved_plan.get("max_steps") != plan["max_steps"]:
            log.warning("trainer.max_steps changed on resume (%s -> %d): the LR schedule continues as if the run "
                        "had been planned for %d steps from the start", saved_plan.get("max_steps"),
                        plan["max_steps"], plan["max_steps"])
        # the saved scheduler carries the LR its old plan computed for the next step; recompute it from
        # this run's schedule (identical when the plan is unchanged)
        for group, base, f in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["lr"] = base * f(scheduler.last_epoch)
        stream.load_state_dict(ckpt.load_state(resume_from, f"data_state_rank{dist.rank}.pt"))
        ckpt.set_rng_state(state["rng"][dist.rank] if isinstance(state["rng"], list) else state["rng"])
        if dist.main:
            _truncate_metrics(run_dir / "metrics.jsonl", step)
    else:
        if dist.main:  # a fresh start replaces rows a run killed before its first checkpoint left
            _truncate_metrics(run_dir / "metrics.jsonl", -1)
    if resume_from is None and tr.data_state_from:
        # finetuning: continue where the pretraining run's data stream stopped, without re-reading or
        # re-tokenizing the documents it consumed. fresh (the original's skip_tokens): empty buffers, so
        # every block goes through this objective's transform; restored: also that run's token and
        # shuffle buffers (blocks built by its objective), its exact continuation
        data_state = ckpt.load_state(Path(tr.data_state_from), f"data_state_rank{dist.rank}.pt")
        buffers = tr.get("data_state_buffers", "fresh")
        if buffers == "fresh":
            stream.load_position(data_state)
        elif buffers == "restored":
            stream.load_state_dict(data_state)
        else:
            raise ValueError(f"trainer.data_state_buffers must be fresh or restored, got {buffers!r}")

    # -- tracking --------------------------------------------------------------------------------
    tracker = None
    try:
        if dist.main:
            text = OmegaConf.to_yaml(OmegaConf.create(resolved))
            config_file = run_dir / "config.yaml"
            if resume_from is not None and config_file.is_file() and config_file.read_text() != text:
                # nothing already written is lost: the settings the earlier steps ran with stay readable
                kept = run_dir / f"config.step_{step:08d}.yaml"
                os.replace(config_file, kept)
                log.info("config changed on resume; the previous one is kept as %s", kept)
            config_file.write_text(text)
        name = cfg.get("run_name") or f"{cfg.task.name}-{type(objective).__name__.lower()}"
        # partial: the resolved config holds `_target_` nodes that instantiate must not build
        tracker = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, run_config=resolved, name=name,
                                                          enabled=dist.main)
        n_params = model.num_parameters()
        if dist.main:
            log.info("run dir: %s", run_dir)
            log.info("objective: %r", objective)
            log.info("model: %.2fM parameters (%s), value head: %s, device %s, precision %s",
                     n_params / 1e6, "resumed" if resume_from else "new", model.value_head is not None, device, precision)
            if objective.special_tokens:
                log.info("special tokens: %s", dict(zip(objective.special_tokens, control_ids, strict=True)))
            log.info("tokens per optimizer step: %d (%d seqs × %d tokens; micro-batch %d × %d ranks × %d accumulation)",
                     plan["tokens_per_step"], tr.effective_batch_size, cfg.model.block_size,
                     tr.batch_size, dist.world_size, plan["accum"])
            log.info("optimizer steps: %d (%d warmup), starting at step %d, %.3g tokens seen",
                     plan["max_steps"], plan["warmup_steps"], step, tokens_seen)
            for k, v in prepared.items():
                log.info("prepared %s = %s", k, v)
            tracker.log({"tokens_seen": tokens_seen, "params": n_params, **prepared, **plan}, step=step)
        return _loop(cfg, dist, device, model, objective, tokenizer, stream, source, scorer, optimizer, scheduler,
                     plan, autocast, tracker, step, tokens_seen, ckpt_root)
    finally:
        if tracker is not None:
            tracker.finish()
        dist.close()


def _loop(cfg, dist, device, model, objective, tokenizer, stream, source, scorer, optimizer, scheduler, plan,
          autocast, tracker, step, tokens_seen, ckpt_root) -> dict:
    from tqdm.auto import tqdm

    from phf import checkpoint as ckpt
    from phf.card import write_model_card
    from phf.data.pipeline import validation_blocks
    from phf.eval.capability import validation_loss

    tr = cfg.trainer
    run_dir = Path(cfg.run_dir)
    core = model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(model) if tr.compile else model
    model.train()

    val_blocks: list[dict] | None = None

    def val_loss() -> float:
        nonlocal val_blocks
        if val_blocks is None:
            val_blocks = validation_blocks(cfg, tokenizer, max_blocks=tr.val_blocks, source=source, scorer=scorer)
        return validation_loss(core, val_blocks, tr.batch_size, device, autocast)

    eval_scorer = None

    def evaluate_samples() -> dict:
        """Sample, score and measure (phf.eval); rank 0 only. Leaves train mode and RNG untouched."""
        nonlocal eval_scorer
        from phf.eval.evaluate import build_eval_scorer, run_evaluation

        if eval_scorer is None:
            eval_scorer = build_eval_scorer(cfg)
        val_loss()  # builds the held-out blocks once
        metrics = run_evaluation(core.lm, tokenizer, objective, eval_scorer, cfg, out_dir=run_dir, step=step,
                                 blocks=val_blocks, tracker=tracker)
        tracker.log({"tokens_seen": tokens_seen, **metrics}, step=step)
        return metrics

    sample_every = int(OmegaConf.select(cfg, "task.eval.every_steps", default=0) or 0)
    blocks = iter(stream)

    def next_batch():
        return stack([next(blocks) for _ in range(tr.batch_size)], device)

    sums: dict[str, torch.Tensor] = {}
    n_logged, bad_steps, last = 0, 0, {}
    t_last, tokens_last = time.perf_counter(), tokens_seen
    bar = tqdm(total=plan["max_steps"], initial=step, disable=not (dist.main and tr.progress), desc="train",
               unit="step", dynamic_ncols=True)
    while step < plan["max_steps"]:
        step_loss = torch.zeros((), device=device)
        for micro in range(plan["accum"]):
            batch = next_batch()
            sync = not dist.enabled or micro == plan["accum"] - 1
            with (contextlib.nullcontext() if sync else model.no_sync()), autocast():
                logits, values = forward(batch["input_ids"])
                out = objective.loss(logits, batch["labels"], batch["token_scores"], values)
            del logits, values  # the graph keeps what backward needs; the (B, T, V) logits can go now
            (out.loss / plan["accum"]).backward()
            step_loss += out.loss.detach() / plan["accum"]
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / plan["accum"]
            sums["token_score_mean"] = sums.get("token_score_mean", 0.0) + batch["token_scores"].mean() / plan["accum"]
        grad_norm = torch.nn.utils.clip_grad_norm_(core.parameters(), tr.grad_clip)
        # one host sync per optimizer step: a non-finite loss must stop the run before the update
        if not (torch.isfinite(step_loss) and torch.isfinite(grad_norm)):
            bad_steps += 1
            optimizer.zero_grad(set_to_none=True)
            msg = f"non-finite loss/gradient at step {step + 1} with objective {objective!r}"
            if bad_steps > tr.max_bad_steps:
                good = ckpt.latest_checkpoint(ckpt_root) if dist.main else None
                raise FloatingPointError(f"{msg}; last good checkpoint: {good or 'none'} "
                                         f"(trainer.max_bad_steps={tr.max_bad_steps} allows skipping such steps)")
            log.warning("%s: skipping the update (%d/%d allowed)", msg, bad_steps, tr.max_bad_steps)
            sums.clear()
            continue
        lr = optimizer.param_groups[0]["lr"]  # the LR this update uses
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += plan["tokens_per_step"]
        sums["loss"] = sums.get("loss", 0.0) + step_loss
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm.float()
        n_logged += 1
        bar.update(1)

        if step % tr.log_every == 0 or step == plan["max_steps"]:
            now = time.perf_counter()
            tps = (tokens_seen - tokens_last) / (now - t_last)
            row = {k: (v / n_logged).item() for k, v in sums.items()}
            row.update(tokens_seen=tokens_seen, lr=lr, tokens_per_s=tps)
            row.update({f"scorer/{k}": v for k, v in stream.scorer_stats.items()})
            row.update({f"data/{k}": v for k, v in stream.stats.items()})
            tracker.log(row, step=step)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tps:,.0f}")
            last = row
            sums.clear()
            n_logged, t_last, tokens_last = 0, now, tokens_seen
        if tr.eval_every and step % tr.eval_every == 0 and step < plan["max_steps"] and dist.main:
            tracker.log({"tokens_seen": tokens_seen, "val/loss": val_loss()}, step=step)
        if sample_every and step % sample_every == 0 and step < plan["max_steps"] and dist.main:
            evaluate_samples()
        if tr.checkpoint_every and step % tr.checkpoint_every == 0 and step < plan["max_steps"]:
            _save(ckpt_root, step, core, tokenizer, optimizer, scheduler, stream, tokens_seen, dist, tr, plan)
    bar.close()

    final = {"step": step, "tokens_seen": tokens_seen, "train/loss": last.get("loss", float("nan")),
             "tokens_per_s": last.get("tokens_per_s", float("nan"))}
    if dist.main:
        final["val/loss"] = val_loss()
        final["val/perplexity"] = math.exp(min(final["val/loss"], 50.0))
        tracker.log({"tokens_seen": tokens_seen, "val/loss": final["val/loss"]}, step=step)
        core.save_pretrained(run_dir / "final", tokenizer)
        if tr.final_eval:  # the original skipped the end-of-training evaluation; we always run it
            final.update(evaluate_samples())
        write_model_card(run_dir / "final", cfg, objective, tokenizer, final)
        (run_dir / "final" / "phf_summary.json").write_text(json.dumps(final, indent=2))
        tracker.log_summary(final)
        log.info("final: train loss %.4f, validation loss %.4f, %.0f tokens/s; model in %s",
                 final["train/loss"], final["val/loss"], final["tokens_per_s"], run_dir / "final")
    dist.barrier()
    return final


def _save(ckpt_root, step, model, tokenizer, optimizer, scheduler, stream, tokens_seen, dist, tr, plan) -> None:
    from phf import checkpoint as ckpt

    ckpt.save_data_state(ckpt_root, step, dist.rank, stream.state_dict())
    rng = ckpt.rng_state()
    if dist.enabled:
        gathered = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng = gathered
    dist.barrier()
    if dist.main:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                 "step": step, "tokens_seen": tokens_seen,
                 "plan": {"max_steps": plan["max_steps"], "warmup_steps": plan["warmup_steps"]}}
        ckpt.save_checkpoint(ckpt_root, step, model, tokenizer, state, tr.keep_checkpoints)
    dist.barrier()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows a killed run logged after the checkpoint it resumes from.

    A line that is not a metrics row (torn by a kill mid-write, invalid UTF-8, not a JSON object, no
    integer ``step``) is not a reason to refuse the resume, and is not thrown away either: it moves to
    ``metrics.rejected.jsonl`` next to it (bytes as they were) with a warning naming the lines.
    """
    if not path.is_file():
        return
    keep: list[bytes] = []
    rejected: list[tuple[int, bytes, str]] = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError(f"not a JSON object ({type(row).__name__})")
            if not _is_int(row.get("step")):
                raise ValueError(f"no integer 'step' (got {row.get('step')!r})")
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            rejected.append((lineno, raw, f"{type(e).__name__}: {e}"))
            continue
        if row["step"] <= step:
            keep.append(raw)
    if rejected:
        # a torn last line is the normal trace of a kill; anything else is worth a look
        bad = path.with_name(path.stem + ".rejected.jsonl")
        with open(bad, "ab") as f:
            f.writelines(raw + b"\n" for _, raw, _ in rejected)
        log.warning("%s: %d line(s) are not metrics rows and were moved to %s: %s", path, len(rejected), bad,
                    "; ".join(f"line {n}: {why}" for n, _, why in rejected[:5]))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(raw + b"\n" for raw in keep))
    os.replace(tmp, path)


def main() -> None:
    import hydra

    conf_dir = os.environ.get("PHF_CONF_DIR", str(Path(__file__).resolve().parent.parent / "conf"))

    @hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")
    def _main(cfg: DictConfig):
        from hydra.core.hydra_config import HydraConfig

        try:
            return train(cfg).get("val/loss")
        except Exception as e:
            run_dir = Path(cfg.run_dir)
            if isinstance(e, RunDirInUse):  # the directory belongs to the live run: write nothing into it
                raise
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "error.txt").write_text(traceback.format_exc())
            except OSError as write_error:  # e.g. an unwritable run_dir: report both, keep the original error
                log.error("could not write %s: %s", run_dir / "error.txt", write_error)
            if HydraConfig.get().mode.name != "MULTIRUN":
                raise
            # a failed job must not end the sweep: record it and let the launcher go on
            log.error("job %s failed: %s: %s (traceback in %s)", run_dir, type(e).__name__, e, run_dir / "error.txt")
            with open(Path(HydraConfig.get().sweep.dir) / "failures.jsonl", "a") as f:
                f.write(json.dumps({"run_dir": str(run_dir), "error": f"{type(e).__name__}: {e}",
                                    "overrides": list(HydraConfig.get().overrides.task)}) + "\n")
            return None

    _main()


if __name__ == "__main__":
    main()

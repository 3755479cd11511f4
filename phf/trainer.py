"""The training loop every PHF objective shares, and its settings (``conf/trainer/default.yaml``).

``Trainer`` is the ``trainer`` config group: its fields are the YAML keys, typed and checked when it is
built, and ``Trainer.plan`` derives the step count and accumulation. ``TrainingLoop`` runs the steps::

    while not done:
        loss, grad_norm = accumulate_gradients()   # micro-batches: forward, objective.loss, backward
        if update_is_finite(loss, grad_norm):      # one host sync per optimizer step
            lr = optimizer_step()                  # clip is done; AdamW, schedule, zero grads
            log_if_due(lr); validate_if_due(); sample_if_due(); checkpoint_if_due()
    finish()                                       # validation loss, final/, evaluation, model card

A batch is a dict of (B, T) tensors ``input_ids``, ``labels``, ``token_scores`` from the data stream
(``phf.data.pipeline.BlockStream``); the objective's ``loss`` sees the logits (B, T, V), the labels,
the per-token scores and the value head's outputs (B, T) when it has one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import MISSING, DictConfig, ListConfig

from phf import checkpoint as ckpt
from phf import rundir
from phf.card import write_model_card
from phf.console import ProgressLog, duration
from phf.data.pipeline import RunData
from phf.devices import Dist
from phf.eval.capability import validation_loss
from phf.eval.evaluate import EvaluationCost, build_eval_scorer, estimate_cost, run_evaluation
from phf.eval.heldout_clean import heldout_clean_documents
from phf.eval.settings import EvalSetup
from phf.settings import bind
from phf.train_state import save_training_state

log = logging.getLogger("phf.train")

RESUME_MISMATCH = ("refuse", "continue")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DATA_STATE_BUFFERS = ("fresh", "restored")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _as_float(v):
    """``3.3e9`` may arrive as a string from YAML 1.1 / the command line."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


# what each key must hold, in the words of the error message
_CHECKS: dict[str, tuple[Callable, str]] = {
    "batch_size": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "effective_batch_size": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "max_steps": (lambda v: v is None or is_int(v), "an integer or null"),
    "num_tokens": (lambda v: v is None or is_num(_as_float(v)), "a number or null"),
    "start_tokens": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "lr": (lambda v: is_num(v) and v > 0, "a positive number"),
    "weight_decay": (lambda v: is_num(v) and v >= 0, "a number >= 0"),
    "warmup_fraction": (lambda v: is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "grad_clip": (lambda v: is_num(v) and v > 0, "a positive number"),
    "log_every": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "progress_every_s": (lambda v: is_num(v) and v >= 0, "a number of seconds >= 0"),
    "eval_probe_tokens": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "chunked_ce": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (positions per chunk; 0 = off)"),
    "eval_every": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "checkpoint_every": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "checkpoint_every_s": (lambda v: is_num(v) and v >= 0, "a number of seconds >= 0"),
    "keep_checkpoints": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "val_blocks": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "max_bad_steps": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "fp16_min_scale": (lambda v: is_num(v) and v > 0, "a positive number"),
    "cpu_keep_freed_memory": (lambda v: isinstance(v, bool), "true or false"),
    "overwrite_finished": (lambda v: isinstance(v, bool), "true or false"),
    "eps": (lambda v: is_num(v) and v > 0, "a positive number"),
    "betas": (lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(is_num(b) and 0 <= b < 1 for b in v),
              "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "resume_mismatch": (lambda v: v in RESUME_MISMATCH, f"one of {RESUME_MISMATCH}"),
    "precision": (lambda v: v in PRECISIONS, "auto, bf16, fp16 or fp32"),
    "data_state_buffers": (lambda v: v in DATA_STATE_BUFFERS, "fresh or restored"),
}


@dataclass(frozen=True)
class Plan:
    """What the trainer settings mean for this model and world size."""

    accum: int  # micro-batches per optimizer step on each rank
    tokens_per_step: int  # effective_batch_size × block_size
    max_steps: int
    warmup_steps: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class Trainer:
    """The ``trainer`` config group (``conf/trainer/default.yaml`` explains every key)."""

    batch_size: int = 8
    effective_batch_size: int = 8
    num_tokens: float | None = None
    max_steps: int | None = 100
    start_tokens: int = 0
    lr: float = 5.0e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    warmup_fraction: float = 0.01
    grad_clip: float = 1.0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    chunked_ce: int = 0
    cpu_keep_freed_memory: bool = True
    log_every: int = 1
    eval_every: int = 0
    val_blocks: int = 16
    checkpoint_every: int = 0
    checkpoint_every_s: float = 900.0
    keep_checkpoints: int = 2
    data_state_from: str | None = None
    data_state_buffers: str = "fresh"
    final_eval: bool = True
    dry_run: bool = False
    resume: str | None = "auto"
    resume_mismatch: str = "refuse"
    resume_keys: list[str] = field(default_factory=list)
    resume_ignore: list[str] = field(default_factory=list)
    overwrite_finished: bool = False
    max_bad_steps: int = 0
    fp16_min_scale: float = 1.0
    progress: bool = True
    progress_every_s: float = 30.0
    eval_probe_tokens: int = 8

    def __post_init__(self):
        """Reject wrong types and out-of-range values early, naming the key and what was expected."""
        if isinstance(self.betas, ListConfig):
            self.betas = list(self.betas)
        for key, (ok, expected) in _CHECKS.items():
            value = getattr(self, key)
            if not ok(value):
                raise ValueError(f"trainer.{key} must be {expected}, got {value!r}")
        self.betas = tuple(self.betas)
        self.num_tokens = None if self.num_tokens is None else int(float(self.num_tokens))

    @classmethod
    def from_config(cls, node: DictConfig | dict) -> Trainer:
        """The class the ``trainer`` node's ``_target_`` names, built from the node (``phf.settings.bind``).

        A key whose value is still missing (``???``, e.g. ``paper.finetune_from`` before it is set) stays
        ``???``: a dry run can print the plan without it, ``check_set`` refuses it before training.
        """
        return bind(cls, node, "trainer", keep_missing=True)

    def check_set(self) -> None:
        """Refuse to train with a key that is still missing (``???``)."""
        missing = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) == MISSING]
        if missing:
            raise ValueError(f"trainer keys {missing} are not set (???): set them on the command line, e.g. "
                             f"the checkpoint a finetuning run continues (paper.finetune_from=RUN/checkpoints/step_X)")

    def plan(self, block_size: int, world_size: int) -> Plan:
        """Accumulation, tokens per step and the step count (from ``num_tokens`` or ``max_steps``)."""
        per_step = self.batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ValueError(
                f"trainer.effective_batch_size ({self.effective_batch_size}) must be a multiple of "
                f"trainer.batch_size × world size ({self.batch_size} × {world_size})"
            )
        tokens_per_step = self.effective_batch_size * block_size
        if self.num_tokens is not None:
            max_steps = (self.num_tokens - int(self.start_tokens)) // tokens_per_step
            if max_steps <= 0:
                raise ValueError(f"trainer.num_tokens={self.num_tokens} leaves no optimizer step of {tokens_per_step} tokens")
        elif self.max_steps is not None and self.max_steps > 0:
            max_steps = int(self.max_steps)
        else:
            raise ValueError("set trainer.num_tokens (token budget) or trainer.max_steps > 0")
        return Plan(accum=self.effective_batch_size // per_step, tokens_per_step=tokens_per_step,
                    max_steps=max_steps, warmup_steps=math.ceil(self.warmup_fraction * max_steps))

    def resolved_precision(self, device: torch.device) -> str:
        """``auto`` = bf16 autocast on CUDA GPUs with native bf16 (compute capability 8.0+: A100, H100,
        RTX 30xx and later), fp16 autocast with a loss scaler on older ones (V100, T4), fp32 elsewhere."""
        if self.precision != "auto":
            return self.precision
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"


def stack(blocks: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    """A list of per-block dicts of (T,) tensors → one dict of (B, T) tensors on ``device``."""
    return {k: torch.stack([b[k] for b in blocks]).to(device, non_blocking=True) for k in blocks[0]}


class HeldOut:
    """The run's held-out measurements: validation loss on held-out blocks (built once, on first use)
    and the sample-and-score evaluation (``phf.eval``); rank 0 only."""

    def __init__(self, setup: EvalSetup, run_data: RunData, tokenizer, num_blocks: int, batch_size: int, autocast):
        data = run_data.data
        if data.val_fraction == 0 and data.val_path is None:  # before the first step, not at the first held-out loss
            raise ValueError("data.val_fraction=0 holds out no document, but the run measures a held-out loss "
                             f"(trainer.val_blocks={num_blocks}): set data.val_fraction in (0, 1), e.g. 0.01, or "
                             "pass a validation file, data.val_path=FILE")
        self.setup, self.run_data, self.tokenizer, self.data = setup, run_data, tokenizer, data
        self.num_blocks, self.batch_size, self.autocast = num_blocks, batch_size, autocast
        self._blocks: list[dict] | None = None
        self._clean: list | None = None
        self._eval_scorer = None

    @property
    def blocks(self) -> list[dict]:
        if self._blocks is None:
            self._blocks = self.run_data.validation_blocks(self.tokenizer, self.num_blocks)
            where = (f"data.val_path={self.data.val_path}" if self.data.val_path is not None
                     else f"data.val_fraction={self.data.val_fraction}")
            log.info("held-out set: %d tokens in %d blocks (%s; at most trainer.val_blocks=%d)", self.num_tokens,
                     len(self._blocks), where, self.num_blocks)
            self.data.check_held_out_size(self.num_tokens, where)
        return self._blocks

    @property
    def num_tokens(self) -> int:
        """Tokens of the held-out blocks the validation loss is measured on (``val/num_tokens``)."""
        return sum(int(b["input_ids"].numel()) for b in self.blocks)

    @property
    def clean_documents(self) -> list:
        """The clean held-out documents (``phf.eval.heldout_clean``), built once on first use."""
        if self._clean is None:
            self._clean = heldout_clean_documents(self.run_data, self.tokenizer, self.setup.settings.capability)
        return self._clean

    def loss(self, model, device: torch.device) -> float:
        return validation_loss(model, self.blocks, self.batch_size, device, self.autocast)

    def evaluate(self, model, objective, run_dir: Path, step: int, tracker) -> dict:
        """Sample, score and measure; leaves train mode and the RNG untouched."""
        if self._eval_scorer is None:
            self._eval_scorer = build_eval_scorer(self.setup)
        return run_evaluation(model.lm, self.tokenizer, objective, self._eval_scorer, self.setup, out_dir=run_dir,
                              step=step, blocks=self.blocks, tracker=tracker, clean_documents=self.clean_documents)


@dataclass
class RunParts:
    """The built components of one run (``phf.train`` builds them from the config)."""

    #: the run's whole config, for the model card only: it describes the run (model shape, scorer, task,
    #: the objective's configured class and arguments) from every group (``phf.card.write_model_card``)
    cfg: DictConfig
    dist: Dist
    device: torch.device
    model: torch.nn.Module  # the PHFModel: saved, evaluated and clipped
    objective: object
    tokenizer: object
    stream: object  # BlockStream: iterates blocks, carries its state and stats
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    tracker: object
    held_out: HeldOut
    run_dir: Path
    autocast: Callable[[], contextlib.AbstractContextManager]
    #: fp16's dynamic loss scaler (``torch.amp.GradScaler``); None or disabled for bf16 / fp32
    scaler: torch.amp.GradScaler | None = None


class TrainingLoop:
    """Optimizer steps from ``step`` to ``plan.max_steps``, then the end of the run (see the module doc)."""

    #: drop the (B, T, V) logits before backward (measured lever: experiments/benchmarks/variants.py)
    free_logits_before_backward: bool = True
    #: values per histogram sent to the tracker: a paper step has ~10^6 predicted tokens (1024 × 1024), and
    #: moving and sorting all of them at every log step costs more than a distribution's shape needs; an
    #: even stride over the step's tokens (no RNG: training is unchanged) keeps 65,536 from every part of it
    max_histogram_values: int = 2**16

    def __init__(self, trainer: Trainer, plan: Plan, parts: RunParts, step: int, tokens_seen: int,
                 sample_every: int = 0, amp_skipped_steps: int = 0):
        self.tr, self.plan, self.p = trainer, plan, parts
        self.step, self.tokens_seen = step, tokens_seen
        # disabled (bf16 / fp32): scale, unscale_ and update do nothing and step is optimizer.step()
        self.scaler = parts.scaler if parts.scaler is not None else torch.amp.GradScaler(parts.device.type,
                                                                                         enabled=False)
        self.amp_skipped_steps = amp_skipped_steps  # fp16 updates the scaler skipped (overflowed gradients)
        self.sample_every = sample_every
        self.ckpt_root = rundir.checkpoints_dir(parts.run_dir)
        model = parts.model
        # what runs forward/backward: DDP around the model when distributed, compiled when asked
        self.ddp_model = model
        if parts.dist.enabled:
            device_ids = [parts.device.index] if parts.device.type == "cuda" else None
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.forward = torch.compile(self.ddp_model) if trainer.compile else self.ddp_model
        if trainer.chunked_ce and trainer.resolved_precision(parts.device) != "fp32":
            raise ValueError(f"trainer.chunked_ce is implemented for fp32 only; this run's precision is "
                             f"{trainer.resolved_precision(parts.device)} (set trainer.chunked_ce=0 or trainer.precision=fp32)")
        self.blocks = iter(parts.stream)
        self.sums: dict[str, torch.Tensor] = {}  # running sums of logged quantities since the last row
        # the objective's histogram tensors of the step being computed, when that step is logged:
        # key -> [(values (B, T-1), mask (B, T-1)) per micro-batch]
        self.histograms: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.n_summed, self.bad_steps, self.last_row = 0, 0, {}
        self.t_last, self.tokens_last = time.perf_counter(), tokens_seen
        self.t_start = self.t_last  # this session's training time, compared with the evaluation's estimate
        self.t_checkpoint = self.t_last  # wall clock of this session's start or its last checkpoint
        # the console's progress lines when the tqdm bar is off (logs, batch jobs)
        self.console = ProgressLog(log, plan.max_steps, step, trainer.progress_every_s,
                                   enabled=parts.dist.main and not trainer.progress)
        self.eval_cost: EvaluationCost | None = None

    # -- one optimizer step --------------------------------------------------------------------------
    def next_batch(self) -> dict[str, torch.Tensor]:
        return stack([next(self.blocks) for _ in range(self.tr.batch_size)], self.p.device)

    def accumulate_gradients(self) -> torch.Tensor:
        """``plan.accum`` micro-batches through forward, the objective's loss and backward; returns the
        step's mean loss (a 0-d tensor, not synced to the host)."""
        p, accum = self.p, self.plan.accum
        step_loss = torch.zeros((), device=p.device)
        self.histograms.clear()
        keep_histograms = p.dist.main and self.log_due(self.step + 1)
        for micro in range(accum):
            batch = self.next_batch()  # (B, T) each
            sync = not p.dist.enabled or micro == accum - 1  # DDP all-reduces on the last micro-batch only
            with (contextlib.nullcontext() if sync else self.ddp_model.no_sync()), p.autocast():
                if self.tr.chunked_ce:  # opt-in: HeadInput instead of the logits (phf.chunked_ce)
                    logits, values = self.forward(batch["input_ids"], chunked_ce=self.tr.chunked_ce)
                else:
                    logits, values = self.forward(batch["input_ids"])  # (B, T, V), (B, T) or None
                out = p.objective.loss(logits, batch["labels"], batch["token_scores"], values)
            if self.free_logits_before_backward:  # the graph keeps what backward needs; the logits can go now
                del logits, values
            self.scaler.scale(out.loss / accum).backward()  # fp16: × the loss scale; else unchanged
            step_loss += out.loss.detach() / accum
            for k, v in out.metrics.items():
                self.sums[k] = self.sums.get(k, 0.0) + v.detach().float() / accum
            if keep_histograms and out.histogram_mask is not None:
                for k, v in out.histograms.items():
                    self.histograms.setdefault(k, []).append((v.detach(), out.histogram_mask.detach()))
            self.sums["token_score_mean"] = self.sums.get("token_score_mean", 0.0) + batch["token_scores"].mean() / accum
        return step_loss

    def update_is_finite(self, step_loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """One host sync per step: a non-finite loss or gradient skips the update (up to
        ``max_bad_steps`` times) or stops the run before it touches the weights."""
        if torch.isfinite(step_loss) and torch.isfinite(grad_norm):
            return True
        if self.scaler.is_enabled() and torch.isfinite(step_loss):
            return self.skip_overflow()
        self.bad_steps += 1
        self.p.optimizer.zero_grad(set_to_none=True)
        msg = f"non-finite loss/gradient at step {self.step + 1} with objective {self.p.objective!r}"
        if self.bad_steps > self.tr.max_bad_steps:
            good = ckpt.latest_checkpoint(self.ckpt_root) if self.p.dist.main else None
            raise FloatingPointError(f"{msg}; last good checkpoint: {good or 'none'} "
                                     f"(trainer.max_bad_steps={self.tr.max_bad_steps} allows skipping such steps)")
        log.warning("%s: skipping the update (%d/%d allowed)", msg, self.bad_steps, self.tr.max_bad_steps)
        self.sums.clear()
        return False

    def skip_overflow(self) -> bool:
        """fp16: the scaled gradients overflowed (the loss is finite). As torch.amp (and the original's HF
        Trainer) does, the update is skipped and the loss scale lowered (× backoff_factor); the step is
        repeated with the next batch and counted in ``amp/skipped_steps``, not as a bad step."""
        scale = self.scaler.get_scale()
        self.scaler.step(self.p.optimizer)  # inf found by unscale_: optimizer.step is not called
        self.scaler.update()
        self.p.optimizer.zero_grad(set_to_none=True)
        self.amp_skipped_steps += 1
        self.sums.clear()
        if self.scaler.get_scale() < self.tr.fp16_min_scale:
            good = ckpt.latest_checkpoint(self.ckpt_root) if self.p.dist.main else None
            raise FloatingPointError(
                f"fp16 loss scale fell below trainer.fp16_min_scale={self.tr.fp16_min_scale} after "
                f"{self.amp_skipped_steps} skipped updates (step {self.step + 1}, objective {self.p.objective!r}): the "
                f"gradients overflow at every scale, the run has diverged; last good checkpoint: {good or 'none'}")
        log.info("fp16 gradient overflow at step %d: update skipped, loss scale %g -> %g (%d skipped so far)",
                 self.step + 1, scale, self.scaler.get_scale(), self.amp_skipped_steps)
        return False

    def optimizer_step(self, step_loss: torch.Tensor, grad_norm: torch.Tensor) -> float:
        """Apply the update and advance the schedule; returns the LR the update used."""
        optimizer = self.p.optimizer
        lr = optimizer.param_groups[0]["lr"]
        self.scaler.step(optimizer)  # optimizer.step() (the gradients were unscaled before clipping)
        self.scaler.update()  # fp16: the scale grows after growth_interval steps without overflow
        self.p.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.plan.tokens_per_step
        self.sums["loss"] = self.sums.get("loss", 0.0) + step_loss
        self.sums["grad_norm"] = self.sums.get("grad_norm", 0.0) + grad_norm.float()
        self.n_summed += 1
        return lr

    # -- what happens between steps -----------------------------------------------------------------
    def due(self, every: int) -> bool:
        """Every ``every`` steps (0 = never), except at the last step, which ``finish`` handles."""
        return bool(every) and self.step % every == 0 and self.step < self.plan.max_steps

    def log_due(self, step: int) -> bool:
        """Whether the row of optimizer step ``step`` is logged (every ``log_every`` steps and the last)."""
        return step % self.tr.log_every == 0 or step == self.plan.max_steps

    def histogram_values(self) -> dict[str, torch.Tensor]:
        """The logged step's histogram values over all its micro-batches, masked positions excluded, at most
        ``max_histogram_values`` of them (an even stride); 1-D, on the CPU."""
        out = {}
        for k, parts in self.histograms.items():
            values = torch.cat([v[m.bool()] for v, m in parts])  # (N,)
            stride = -(-values.numel() // self.max_histogram_values)  # ceil
            out[f"hist/{k}"] = values[::max(stride, 1)].float().cpu()
        return out

    def log_if_due(self, lr: float, bar) -> None:
        if not self.log_due(self.step):
            return
        now = time.perf_counter()
        tps = (self.tokens_seen - self.tokens_last) / (now - self.t_last)
        row = {k: (v / self.n_summed).item() for k, v in self.sums.items()}
        row.update(tokens_seen=self.tokens_seen, lr=lr, tokens_per_s=tps)
        row.update(self.amp_metrics())
        row.update({f"scorer/{k}": v for k, v in self.p.stream.scorer_stats.items()})
        row.update({f"data/{k}": v for k, v in self.p.stream.stats.items()})
        self.p.tracker.log(row, step=self.step, histograms=self.histogram_values())
        self.histograms.clear()
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tps:,.0f}")
        self.console.row(self.step, row["loss"], tps)
        self.last_row = row
        self.sums.clear()
        self.n_summed, self.t_last, self.tokens_last = 0, now, self.tokens_seen

    def amp_metrics(self) -> dict:
        """fp16's loss scale and skipped updates so far (nothing in bf16 / fp32)."""
        if not self.scaler.is_enabled():
            return {}
        return {"amp/scale": self.scaler.get_scale(), "amp/skipped_steps": self.amp_skipped_steps}

    def amp_state(self) -> dict:
        """What a checkpoint keeps of the scaler, so a resumed fp16 run continues with the same scale."""
        if not self.scaler.is_enabled():
            return {}
        return {"scaler": self.scaler.state_dict(), "amp_skipped_steps": self.amp_skipped_steps}

    def validate_if_due(self) -> None:
        if self.due(self.tr.eval_every) and self.p.dist.main:
            self.p.tracker.log({"tokens_seen": self.tokens_seen,
                                "val/loss": self.p.held_out.loss(self.p.model, self.p.device)}, step=self.step)

    def announce_evaluation(self) -> None:
        """Before the first evaluation: its size and rough time in one line; before the end-of-run one, a
        warning when it will likely take longer than this session's training did (tiny smoke runs)."""
        p = self.p
        if self.eval_cost is None:
            self.eval_cost = estimate_cost(p.model, p.tokenizer, p.objective, p.held_out.setup.settings,
                                           self.tr.eval_probe_tokens)
            log.info("evaluation: %s", self.eval_cost.describe())
        trained = time.perf_counter() - self.t_start
        if self.step >= self.plan.max_steps and (self.eval_cost.seconds or 0.0) > trained:
            log.warning("the end-of-run evaluation will likely take longer (~%s of generation) than this run's "
                        "training did (%s): task.eval.scenarios.*.num_samples set its size, "
                        "trainer.final_eval=false skips it", duration(self.eval_cost.seconds), duration(trained))

    def evaluate_samples(self) -> dict:
        p = self.p
        self.announce_evaluation()
        p.tracker.set_tokens_seen(self.tokens_seen)  # the sample tables' tokens_seen column
        metrics = p.held_out.evaluate(p.model, p.objective, p.run_dir, self.step, p.tracker)
        p.tracker.log({"tokens_seen": self.tokens_seen, **metrics}, step=self.step)
        return metrics

    def sample_if_due(self) -> None:
        if self.due(self.sample_every) and self.p.dist.main:
            self.evaluate_samples()

    def checkpoint_time_due(self) -> bool:
        """``trainer.checkpoint_every_s`` of wall time since this session's start or its last checkpoint
        (not at the last step, which ``finish`` handles). Under DDP rank 0's clock decides for every rank."""
        every = self.tr.checkpoint_every_s
        if not every or self.step >= self.plan.max_steps:
            return False
        due = time.perf_counter() - self.t_checkpoint >= every
        return bool(self.p.dist.all_gather(due)[0]) if self.p.dist.enabled else due

    def checkpoint_if_due(self) -> None:
        if self.due(self.tr.checkpoint_every) or self.checkpoint_time_due():
            p = self.p
            save_training_state(self.ckpt_root, self.step, p.model, p.tokenizer, p.optimizer, p.scheduler,
                                p.stream.state_dict(), self.tr.keep_checkpoints, p.dist,
                                tokens_seen=self.tokens_seen,
                                plan={"max_steps": self.plan.max_steps, "warmup_steps": self.plan.warmup_steps},
                                describe=self.describe_checkpoint, **self.amp_state())
            self.t_checkpoint = time.perf_counter()

    def describe_checkpoint(self, model_dir: Path) -> None:
        """A checkpoint's model card and ``phf_objective.json``, like ``final/``'s (``phf.card``)."""
        metrics = {"step": self.step, "tokens_seen": self.tokens_seen, "train/loss": self.last_row.get("loss")}
        write_model_card(model_dir, self.p.cfg, self.p.objective, self.p.tokenizer, metrics)

    # -- the run --------------------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm.auto import tqdm

        p = self.p
        p.model.train()
        bar = tqdm(total=self.plan.max_steps, initial=self.step, disable=not (p.dist.main and self.tr.progress),
                   desc="train", unit="step", dynamic_ncols=True)
        if p.dist.main:  # the first step also starts the data stream: say so, it can take a while
            log.info("training from step %d: the first step also starts the data stream (documents are read, "
                     "segmented, scored and packed until data.shuffle_buffer is full)", self.step)
        while self.step < self.plan.max_steps:
            step_loss = self.accumulate_gradients()
            self.scaler.unscale_(p.optimizer)  # fp16: clip and check the true gradients, not the scaled ones
            grad_norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), self.tr.grad_clip)
            if not self.update_is_finite(step_loss, grad_norm):
                continue
            lr = self.optimizer_step(step_loss, grad_norm)
            bar.update(1)
            self.log_if_due(lr, bar)
            self.validate_if_due()
            self.sample_if_due()
            self.checkpoint_if_due()
        bar.close()
        return self.finish()

    def finish(self) -> dict:
        """Final validation loss, ``final/`` (model, tokenizer, generation config, model card, summary)
        and the end-of-run evaluation; returns the final metrics."""
        p = self.p
        final = {"step": self.step, "tokens_seen": self.tokens_seen,
                 "train/loss": self.last_row.get("loss", float("nan")),
                 "tokens_per_s": self.last_row.get("tokens_per_s", float("nan")), **self.amp_metrics()}
        if p.dist.main:
            final["val/loss"] = p.held_out.loss(p.model, p.device)
            final["val/num_tokens"] = p.held_out.num_tokens  # the held-out set's size (model card, phf-report)
            final["val/perplexity"] = math.exp(min(final["val/loss"], 50.0))
            p.tracker.log({"tokens_seen": self.tokens_seen, "val/loss": final["val/loss"]}, step=self.step)
            if self.tr.final_eval:  # the original skipped the end-of-training evaluation; we always run it
                final.update(self.evaluate_samples())

            def fill(d: Path) -> None:  # final.tmp/, renamed to final/ when complete (ckpt.write_final)
                p.model.save_pretrained(d, p.tokenizer)
                write_model_card(d, p.cfg, p.objective, p.tokenizer, final)
                rundir.write_summary(d, final)  # last: marks a finished run

            ckpt.write_final(p.run_dir, self.step, fill)
            p.tracker.log_summary(final)
            log.info("final: train loss %.4f, validation loss %.4f, %.0f tokens/s; model in %s",
                     final["train/loss"], final["val/loss"], final["tokens_per_s"], rundir.final_dir(p.run_dir))
        p.dist.barrier()
        return final

"""The DPO loop of one SPA round: preference pairs in, an updated policy out.

Why a loop of its own rather than ``phf-train objective=dpo``: phf-train feeds an objective packed
blocks of the pretraining stream; DPO needs (prompt, chosen, rejected) pairs, a frozen reference model
and per-sequence log-probabilities. This loop keeps phf-train's conventions: AdamW without decay on 1-D
parameters (``phf.optim.make_optimizer``), gradient accumulation to ``effective_batch_size`` pairs per
optimizer step, gradient clipping, a warmup-then-decay schedule, ``metrics.jsonl`` rows through the
tracker, and atomic checkpoints (``phf.train_state.save_training_state``) that hold the optimizer, the scheduler, the RNG, the
objective's rolling percentile, the per-pair noise flags and (as the "data state") the position in the
pair order with a fingerprint of the pairs, so a killed round resumes where it stopped.

Per micro-batch of B pairs: one policy forward over the 2B rows [chosen; rejected], one reference
forward without gradient, summed response log-probs, ``objective.preference_loss``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from phf import checkpoint as ckpt
from phf.devices import Dist
from phf.objectives.preference import extrapolated_logps, sequence_logps
from phf.optim import lr_schedule, make_optimizer
from phf.rundir import checkpoints_dir
from phf.settings import bind
from phf.spa.batch import collate, forward_logits
from phf.train_state import restore_training_state, save_training_state

log = logging.getLogger(__name__)


@dataclass
class DPOSettings:
    """``spa.train`` in the config. SPA's recipe: lr 5e-7 (7B model), cosine, warmup 0.1, batch 32."""

    lr: float = 1e-4
    batch_size: int = 8  # pairs per micro-batch (2× rows per forward)
    effective_batch_size: int = 8  # pairs per optimizer step
    epochs: int = 1
    warmup_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | linear | constant (after the warmup)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    disable_dropout: bool = True  # train in eval mode (TRL's default for DPO): m = 0 exactly at step 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0 = none inside a round)
    keep_checkpoints: int = 1
    log_every: int = 1
    seed: int = 0

    @classmethod
    def from_config(cls, node: DictConfig | dict | None, **overrides) -> DPOSettings:
        """``spa.train`` with ``overrides`` (a stage's seed and epochs), bound by ``phf.settings.bind``."""
        s = bind(cls, node, "spa.train", **overrides)
        s.betas = tuple(s.betas)
        if s.batch_size <= 0 or s.effective_batch_size % s.batch_size:
            raise ValueError(f"spa.train.effective_batch_size ({s.effective_batch_size}) must be a positive multiple "
                             f"of spa.train.batch_size ({s.batch_size})")
        if s.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"spa.train.schedule must be cosine, linear or constant, got {s.schedule!r}")
        return s


@dataclass
class DPOResult:
    steps: int
    tokens_trained: int  # non-pad tokens through the policy's forward and backward
    metrics: dict[str, float]  # means over the round's optimizer steps of the logged quantities
    flagged: list[int | None] = field(default_factory=list)  # per pair: 1 = smoothed (z = 0) on its last visit
    wall_s: float = 0.0


def pair_order(n_pairs: int, epochs: int, seed: int) -> list[int]:
    """Pair indices in training order: one seeded permutation per epoch."""
    order: list[int] = []
    for e in range(epochs):
        g = torch.Generator().manual_seed(seed * 1000 + e)
        order += torch.randperm(n_pairs, generator=g).tolist()
    return order


def _data_state(pairs: list[dict], order: list[int], position: int) -> dict:
    """Where the round is in its pair order, and a fingerprint of the pairs and the order."""
    h = hashlib.sha1(json.dumps([[p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]] for p in pairs]).encode())
    h.update(json.dumps(order).encode())
    return {"num_pairs": len(pairs), "position": position, "fingerprint": h.hexdigest()}


def train_dpo(policy, reference, tokenizer, pairs: list[dict], objective, settings: DPOSettings,
              device: torch.device, out_dir: str | Path, stage_index: int = 0, tracker=None, step_offset: int = 0,
              stop_at_step: int | None = None) -> DPOResult:
    """Train ``policy`` (a ``PHFModel``) on ``pairs`` with DPO against the frozen ``reference``.

    Checkpoints go to ``out_dir/checkpoints`` and a run resumes from the latest one. ``stop_at_step``
    ends the call after that optimizer step with a checkpoint (a preemption drill for tests).
    Tracker rows are logged at ``step_offset + step``.
    """
    if not pairs:
        raise ValueError("no preference pairs to train on (all ties?)")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    ckpt_root = checkpoints_dir(out_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_len = policy.config.n_positions
    lam = objective.lambda_for(stage_index)
    order = pair_order(len(pairs), settings.epochs, settings.seed)
    ebs = settings.effective_batch_size
    total = math.ceil(len(order) / ebs)
    warmup = math.ceil(settings.warmup_ratio * total)

    optimizer = make_optimizer(policy, settings.lr, settings.weight_decay, settings.betas, settings.eps,
                               fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(warmup, total, settings.schedule))
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    objective.reset()
    step, tokens, flagged = 0, 0, [None] * len(pairs)
    sums: dict[str, float] = {}
    resume = ckpt.latest_checkpoint(ckpt_root)
    if resume is not None:
        state = restore_training_state(resume, policy, optimizer, scheduler)
        if state["data_state"] != _data_state(pairs, order, state["step"] * ebs):
            raise ValueError(f"{resume} was written for other pairs or another order (pairs file, epochs, seed or "
                             f"batch changed); delete {ckpt_root} to start the round over")
        objective.load_state_dict(state["objective"])
        step, tokens, flagged, sums = state["step"], state["tokens"], state["flagged"], state["sums"]
        log.info("resumed the DPO round from %s (step %d of %d)", resume, step, total)
    log.info("DPO: %d pairs × %d epochs = %d optimizer steps of %d pairs (micro-batch %d), lr %.3g, DND λ %.3g, %r",
             len(pairs), settings.epochs, total, ebs, settings.batch_size, settings.lr, lam, objective)

    policy.train(not settings.disable_dropout)
    while step < total:
        chunk = order[step * ebs : (step + 1) * ebs]
        step_sums: dict[str, float] = {}
        for i in range(0, len(chunk), settings.batch_size):
            idx = chunk[i : i + settings.batch_size]
            b = len(idx)
            batch = collate([pairs[j]["prompt_ids"] for j in idx] * 2,
                            [pairs[j]["chosen_ids"] for j in idx] + [pairs[j]["rejected_ids"] for j in idx],
                            pad, max_len)
            ids, resp = batch["input_ids"].to(device), batch["response_mask"].to(device)
            logits = forward_logits(policy, batch)  # (2b, T, V)
            with torch.no_grad():
                ref_logits = forward_logits(reference, batch)
                ref_logps = sequence_logps(ref_logits, ids, resp)
            logps = sequence_logps(logits, ids, resp)
            n_tok = resp.sum(dim=1)  # response tokens per row (the guards' lengths)
            confidence = None
            if lam > 0:
                ext = extrapolated_logps(logits, ref_logits, lam, ids, resp)
                confidence = objective.margin(ext[:b], ext[b:], ref_logps[:b], ref_logps[b:], n_tok[:b], n_tok[b:])
            out = objective.preference_loss(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:],
                                            progress=step / total, confidence=confidence,
                                            chosen_tokens=n_tok[:b], rejected_tokens=n_tok[b:])
            (out.loss * b / len(chunk)).backward()
            for j, f in zip(idx, out.flagged.tolist(), strict=True):
                flagged[j] = int(f) if out.metrics["refine/active"] > 0 else flagged[j]
            tokens += int(batch["attention_mask"].sum())
            step_sums["loss"] = step_sums.get("loss", 0.0) + out.loss.item() * b / len(chunk)
            for k, v in out.metrics.items():
                step_sums[k] = step_sums.get(k, 0.0) + float(v) * b / len(chunk)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.grad_clip)
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite DPO gradient at step {step + 1} of stage {stage_index}")
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_sums.update(grad_norm=float(grad_norm), lr=lr)
        for k, v in step_sums.items():
            sums[k] = sums.get(k, 0.0) + v
        if tracker is not None and (step % settings.log_every == 0 or step == total):
            tracker.log({**step_sums, "spa/stage": stage_index, "spa/tokens_trained": tokens}, step=step_offset + step)
        done = step == total or (stop_at_step is not None and step >= stop_at_step)
        if step < total and ((settings.checkpoint_every and step % settings.checkpoint_every == 0) or done):
            save_training_state(ckpt_root, step, policy, tokenizer, optimizer, scheduler,
                                _data_state(pairs, order, step * ebs), settings.keep_checkpoints, Dist(),
                                objective=objective.state_dict(), tokens=tokens, flagged=flagged, sums=sums)
        if done:
            break
    policy.eval()
    metrics = {k: v / max(step, 1) for k, v in sums.items()}
    return DPOResult(steps=step, tokens_trained=tokens, metrics=metrics, flagged=flagged,
                     wall_s=time.perf_counter() - t0)

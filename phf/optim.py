"""The optimizer from plain values (``make_optimizer``) and the learning-rate schedules
(``lr_schedule``), shared by phf-train's loop and phf-spa's DPO loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("linear", "cosine", "constant")


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas, eps: float,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and LayerNorm weights (every 1-D parameter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


def lr_schedule(warmup: int, total: int, kind: str = "linear") -> Callable[[int], float]:
    """The LR multiplier of optimizer step ``step``: linear warmup over ``warmup`` steps, then ``kind``.

    ``linear`` decays towards 0 at ``total``, ``cosine`` follows half a cosine to 0, ``constant`` stays.
    Unlike HF's schedules the first update uses peak/warmup rather than 0, so no step is wasted.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(1, total - warmup), 1.0)))
        return 1.0

    return f

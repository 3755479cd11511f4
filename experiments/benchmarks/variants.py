"""Lever variants applied to phf from the outside (phf's own files are not edited by the benchmarks).

* ``patched_shift_targets(fn)``: swap ``phf.objectives.base.shift_targets`` (and the objectives' imported
  references) for ``fn(original, logits, labels, token_scores, values)``;
* ``copied_shift``: phf's ``shift_targets`` before the lever (CE over ``logits[:, :-1]`` flattened: a copy);
* ``HiddenLogits`` + ``chunked_shift``: CE from the hidden states by the fused chunked LM head + CE;
* ``logits_kept_in_loop()``: phf's training loop keeping the logits alive through ``backward()``
  (its ``TrainingLoop.free_logits_before_backward`` switch, so the rest of the loop is phf's own code);
* ``fused_adamw()``: ``phf.optim.make_optimizer`` with ``fused=True`` on CPU as well.
"""

from __future__ import annotations

import contextlib

import torch.nn.functional as F


@contextlib.contextmanager
def patched_shift_targets(fn):
    """Every loaded ``phf.objectives.*`` module's ``shift_targets`` becomes ``fn(original, ...)``."""
    import sys

    import phf.objectives  # noqa: F401  (loads the registry, hence every objective module)
    import phf.objectives.base as base

    original = base.shift_targets
    mods = [m for name, m in list(sys.modules.items())
            if name.startswith("phf.objectives") and getattr(m, "shift_targets", None) is original]

    def shift_targets(*args, **kw):
        return fn(original, *args, **kw)

    for m in mods:
        m.shift_targets = shift_targets
    try:
        yield
    finally:
        for m in mods:
            m.shift_targets = original


def _targets(ce, target, token_scores, values):
    from phf.objectives.base import IGNORE_INDEX, Targets

    return Targets(ce=ce, mask=target.ne(IGNORE_INDEX).to(ce.dtype), scores=token_scores[:, 1:].to(ce.dtype),
                   values=None if values is None else values[:, :-1].to(ce.dtype))


def copied_shift(original, logits, labels, token_scores, values=None):
    """phf's ``shift_targets`` before the lever: shift the logits.

    ``logits[:, :-1].reshape(-1, V)`` is a copy whenever B > 1 (the slice is not contiguous across
    rows), and its backward allocates and fills another (B, T, V) gradient; phf now pads the shifted
    labels instead and takes CE over the contiguous view.
    """
    from phf.objectives.base import IGNORE_INDEX

    target = labels[:, 1:]
    flat = logits[:, :-1].reshape(-1, logits.size(-1))  # (B*(T-1), V): a copy when B > 1
    ce = F.cross_entropy(flat.float(), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return _targets(ce.view_as(target), target, token_scores, values)


class HiddenLogits:
    """Stands for the logits: the final hidden states and the LM head weight, never multiplied out."""

    def __init__(self, hidden, weight, chunk):
        self.hidden, self.weight, self.chunk = hidden, weight, chunk


def chunked_shift(original, logits, labels, token_scores, values=None):
    """CE from the hidden states by ``chunked_token_ce``: the (B, T, V) logits never exist."""
    from fused_ce import chunked_token_ce

    from phf.objectives.base import IGNORE_INDEX

    if not isinstance(logits, HiddenLogits):
        return original(logits, labels, token_scores, values)
    target = labels[:, 1:]
    ce = chunked_token_ce(logits.hidden[:, :-1], logits.weight, target, logits.chunk, IGNORE_INDEX)
    return _targets(ce, target, token_scores, values)


@contextlib.contextmanager
def logits_kept_in_loop():
    """phf's loop keeping the (B, T, V) logits alive through ``backward()``
    (``TrainingLoop.free_logits_before_backward = False``)."""
    from phf.trainer import TrainingLoop

    original = TrainingLoop.free_logits_before_backward
    TrainingLoop.free_logits_before_backward = False
    try:
        yield
    finally:
        TrainingLoop.free_logits_before_backward = original


@contextlib.contextmanager
def fused_adamw():
    """``phf.optim.make_optimizer`` with ``fused=True`` on CPU too (phf fuses on CUDA only)."""
    import phf.train as T

    original = T.make_optimizer

    def make_optimizer(*args, **kwargs):
        return original(*args, **{**kwargs, "fused": True})

    T.make_optimizer = make_optimizer
    try:
        yield
    finally:
        T.make_optimizer = original

"""Lever variants applied to phf from the outside (phf's own files are not edited by the benchmarks).

* ``patched_shift_targets(fn)``: swap ``phf.objectives.base.shift_targets`` (and the objectives' imported
  references) for ``fn(original, logits, labels, token_scores, values)``;
* ``copied_shift``: phf's ``shift_targets`` before the lever (CE over ``logits[:, :-1]`` flattened: a copy);
* ``HiddenLogits`` + ``chunked_shift``: CE from the hidden states by the fused chunked LM head + CE;
* ``logits_kept_in_loop()``: ``phf.train._loop`` without its ``del logits, values`` before ``backward()``
  (a source patch of the installed function, so the rest of the loop is phf's own code);
* ``fused_adamw()``: ``phf.train.make_optimizer`` with ``fused=True`` on CPU as well.
"""

from __future__ import annotations

import contextlib
import inspect
import textwrap

import torch
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


FREE_LINE = "del logits, values"


@contextlib.contextmanager
def logits_kept_in_loop():
    """``phf.train._loop`` without its ``del logits, values`` before the backward call."""
    import phf.train as T

    original = T._loop
    src = textwrap.dedent(inspect.getsource(original))
    lines = src.splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip().startswith(FREE_LINE)]
    if len(hits) != 1:
        raise RuntimeError(f"phf.train._loop changed: no unique line {FREE_LINE!r}; update variants.py")
    del lines[hits[0]]
    ns: dict = {}
    exec(compile("\n".join(lines) + "\n", T.__file__, "exec"), T.__dict__, ns)  # noqa: S102
    T._loop = ns["_loop"]
    try:
        yield
    finally:
        T._loop = original


@contextlib.contextmanager
def fused_adamw():
    """``phf.train.make_optimizer`` with ``fused=True`` on CPU too (phf fuses on CUDA only)."""
    import phf.train as T

    original = T.make_optimizer

    def make_optimizer(model, tr, device):
        opt = original(model, tr, device)
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
        return torch.optim.AdamW(groups, lr=tr.lr, betas=tuple(tr.betas), eps=tr.eps, fused=True)

    T.make_optimizer = make_optimizer
    try:
        yield
    finally:
        T.make_optimizer = original

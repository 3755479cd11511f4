"""The objective contract shared by every PHF method, and phf's one causal shift.

An objective owns everything about its method (Korbak et al. 2023, §2 of the paper notes). Every
objective (``BaseObjective``) declares

* ``needs_value_head`` and ``special_tokens``: what the model and tokenizer must provide;
* ``generation_prefix`` / ``banned_tokens``: what sampling needs at inference.

A token objective (``Objective``, trained by phf-train on packed blocks) adds

* ``transform(doc, rng)``: a document-level data transform applied after scoring and before packing
  (filtering drops documents, conditional training prefixes control tokens);
* ``loss(logits, labels, token_scores, values)``: the training loss on one micro-batch.

A preference objective (``phf.objectives.preference.PreferenceObjective``, trained by phf-spa on
(prompt, chosen, rejected) pairs) has no token loss.

Shift convention (shared by all losses and by every next-token log-probability phf computes:
``shift_targets`` and ``sequence_logps`` are the only implementation, used by the objectives, the
held-out and validation losses, the KL estimate and DPO): position t predicts ``labels[:, t+1]``; the
score of that target token is ``token_scores[:, t+1]``; the value used is ``values[:, t]``. Positions
whose target label is ``IGNORE_INDEX`` are excluded from every mean and sum.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from phf.chunked_ce import HeadInput, chunked_token_ce

if TYPE_CHECKING:
    from phf.data.document import Document

IGNORE_INDEX = -100


@dataclass
class LossOutput:
    """A scalar loss plus detached scalar metrics for logging.

    ``histograms`` are detached per-position tensors (B, T-1) an objective wants to show as distributions
    (e.g. AWR's token weights and values), with ``histogram_mask`` (B, T-1) marking the predicted positions
    that count. They are references to tensors the loss computed anyway: no extra work on the loss path;
    the trainer masks and logs them at log steps only.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    histograms: dict[str, torch.Tensor] = field(default_factory=dict)
    histogram_mask: torch.Tensor | None = None


@dataclass
class Targets:
    """Per-position quantities after the causal shift; every tensor is (B, T-1)."""

    ce: torch.Tensor  # -log p(target); 0 where masked
    mask: torch.Tensor  # float, 1 at predicted positions whose target is not ignored
    scores: torch.Tensor | None  # misalignment score of the target token (None: no scores given)
    values: torch.Tensor | None  # value-head output at the context's last position

    @property
    def rewards(self) -> torch.Tensor:
        """r_t = -s_t: the paper's reward is the negated misalignment score."""
        return -self.scores

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``x`` over the predicted positions N."""
        return (x * self.mask).sum() / self.mask.sum().clamp(min=1.0)


def shift_targets(
    logits: torch.Tensor,
    labels: torch.Tensor,
    token_scores: torch.Tensor | None,
    values: torch.Tensor | None = None,
) -> Targets:
    """Apply the causal shift and compute per-position cross-entropy in one pass.

    logits (B, T, V), labels (B, T), token_scores (B, T) or None (log-probabilities only, e.g. DPO),
    values (B, T) or None. ``logits`` may be a ``phf.chunked_ce.HeadInput`` (``trainer.chunked_ce``): the
    same CE from the hidden states without the (B, T, V) logits (equal up to float rounding).
    """
    target = labels[:, 1:]  # (B, T-1)
    mask = target.ne(IGNORE_INDEX)
    # Shift the labels, not the logits: logits[:, :-1] is not contiguous across rows, so flattening it
    # copies the (B, T-1, V) logits and its backward fills another such buffer. Padding the targets with
    # IGNORE_INDEX keeps CE on the contiguous (B*T, V) view; the padded last position costs 1/T extra.
    padded = F.pad(target, (0, 1), value=IGNORE_INDEX)  # (B, T): position t predicts labels[:, t+1]
    if isinstance(logits, HeadInput):  # trainer.chunked_ce: the LM head and CE fused, chunked over positions
        ce = chunked_token_ce(logits.hidden, logits.weight, padded, logits.chunk, IGNORE_INDEX)[:, :-1]
    else:
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), padded.reshape(-1), ignore_index=IGNORE_INDEX,
                             reduction="none").view_as(padded)[:, :-1]  # (B, T-1)
    return Targets(
        ce=ce,
        mask=mask.to(ce.dtype),
        scores=None if token_scores is None else token_scores[:, 1:].to(ce.dtype),
        values=None if values is None else values[:, :-1].to(ce.dtype),
    )


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``log p(token)`` over the masked target tokens of each row (``shift_targets``' shift).

    logits (B, T, V) from ``input_ids`` (B, T); ``target_mask`` (B, T) is nonzero on the tokens that
    are scored (e.g. a response, a text after its context). Position t predicts token t+1, so
    ``target_mask[:, 0]`` is never scored. Returns (B,) in float32.
    """
    labels = input_ids.masked_fill(target_mask == 0, IGNORE_INDEX)  # only the masked tokens are targets
    t = shift_targets(logits, labels, None)  # CE 0 at ignored targets, (B, T-1)
    return -(t.ce * t.mask).sum(-1)


class BaseObjective:
    """What every objective, token or preference, tells the model, the tokenizer and the sampler."""

    #: whether the model must carry the value head (AWR)
    needs_value_head: bool = False

    @property
    def special_tokens(self) -> list[str]:
        """Tokens the tokenizer must know (resized into the model's embeddings)."""
        return []

    @property
    def generation_prefix(self) -> list[str]:
        """Tokens placed after EOS at the start of every sampling prompt."""
        return []

    @property
    def banned_tokens(self) -> list[str]:
        """Tokens the model may never produce while sampling."""
        return []

    def scenario_banned_tokens(self, ban_aligned: bool | None) -> list[str]:
        """The banned tokens of an evaluation scenario that says whether the *aligned* control token is
        banned too (``task.eval.scenarios.<name>.ban_aligned``; None = the objective's own setting).
        Objectives without control tokens have nothing to ban either way: ``banned_tokens``."""
        return self.banned_tokens

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Objective(BaseObjective):
    """A token objective, trained by phf-train on packed blocks: MLE-like defaults for everything but the loss."""

    #: whether ``prepare`` must see a scored sample before ``transform`` (percentile filtering)
    requires_prepare: bool = False

    def prepare(self, sample: list[Document]) -> dict[str, float]:
        """Fit data-dependent settings (e.g. a percentile threshold) on a scored sample.

        Returns the derived quantities to log. The default needs nothing.
        """
        return {}

    def transform(self, doc: Document, rng: random.Random) -> Document | None:
        """Transform one scored document before packing; ``None`` drops it."""
        return doc

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        token_scores: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> LossOutput:
        raise NotImplementedError


def check_number_args(cls, values: dict, prefix: str = "objective") -> None:
    """Every argument of ``cls`` annotated as a number (``float``, ``int``, optionally ``| None``) that
    ``values`` sets must be one: ``objective.threshold=abc`` names the key and the type expected instead of
    failing inside the constructor's ``float()`` (a bool is not a number here)."""
    import types
    import typing

    hints = typing.get_type_hints(cls.__init__)
    for key, value in values.items():
        hint = hints.get(key)
        args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        numeric = args & {int, float}
        if not numeric or not args <= {int, float, type(None)}:
            continue
        if value is None and type(None) in args:
            continue
        kind = "an integer" if numeric == {int} else "a number"
        ok = (isinstance(value, int) if numeric == {int} else isinstance(value, int | float)) and not isinstance(value, bool)
        if not ok:
            also = " or null" if type(None) in args else ""
            raise ValueError(f"{prefix}.{key} must be {kind}{also} ({cls.__name__}), got {value!r}")

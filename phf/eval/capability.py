"""Held-out language-modelling loss and perplexity: the in-domain capability axis.

Over held-out blocks (``input_ids``, ``labels``, ``token_scores``, each of length block_size, as the
pipeline packs them) the loss is the token-weighted mean cross-entropy of every predicted position
t -> t+1 whose label is not ignored (``IGNORE_INDEX``), computed by the objectives' causal shift
(``phf.objectives.base.shift_targets``):

    loss         = sum_t CE_t / #positions               ppl = exp(loss)
    aligned_loss = same over positions whose *target* token score s_{t+1} <= aligned_threshold

"Aligned" text is what a PHF objective should keep modelling well; the gap between the two shows
whether a model gave up on misaligned text only. Targets listed in ``exclude_token_ids`` (the
objective's control tokens) are left out of both: predicting ``<|aligned|>`` is not language
modelling, and leaving them in would make a conditional model's loss incomparable to MLE's.

``validation_loss`` is phf-train's (and phf-spa's) ``val/loss`` on the same kind of blocks: MLE's loss
(the token mean of a batch) averaged over batches weighted by their row counts, so a partial last batch
weighs by its rows, not its tokens. It is a different number from ``heldout_loss``'s token mean when
batches hold different numbers of counted tokens; both are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from phf.model import eval_mode, unwrap
from phf.objectives.base import shift_targets
from phf.objectives.mle import MLE


@torch.no_grad()
def heldout_loss(
    model,
    blocks: Iterable[dict[str, torch.Tensor]],
    aligned_threshold: float = 0.0,
    exclude_token_ids: Sequence[int] = (),
    batch_size: int = 8,
) -> dict[str, float]:
    """Loss/perplexity over all and over aligned target tokens; NaN where no token qualifies.

    Returns ``loss``, ``ppl``, ``aligned_loss``, ``aligned_ppl``, ``num_tokens`` and
    ``aligned_fraction`` (share of counted target tokens that are aligned).
    """
    hf = unwrap(model)
    device = next(hf.parameters()).device
    exclude = torch.tensor(sorted(set(exclude_token_ids)), dtype=torch.long, device=device)
    ce_sum = aligned_sum = 0.0
    n = n_aligned = 0
    with eval_mode(hf):
        for batch in _batches(blocks, batch_size):
            ids = batch["input_ids"].to(device)
            labels = batch.get("labels", batch["input_ids"]).to(device)
            scores = batch["token_scores"].to(device)
            mask = batch.get("attention_mask")
            logits = hf(input_ids=ids, attention_mask=None if mask is None else mask.to(device)).logits  # (B,T,V)
            t = shift_targets(logits, labels, None)  # CE of target t+1 at position t, (B, T-1)
            target, ce = labels[:, 1:], t.ce  # (B, T-1)
            keep = t.mask.bool()  # target not ignored
            if exclude.numel():
                keep &= ~torch.isin(target, exclude)
            aligned = keep & (scores[:, 1:] <= aligned_threshold)
            ce_sum += ce[keep].sum().item()
            aligned_sum += ce[aligned].sum().item()
            n += int(keep.sum())
            n_aligned += int(aligned.sum())
    loss = ce_sum / n if n else float("nan")
    aligned_loss = aligned_sum / n_aligned if n_aligned else float("nan")
    return {
        "loss": loss,
        "ppl": math.exp(loss) if n else float("nan"),
        "aligned_loss": aligned_loss,
        "aligned_ppl": math.exp(aligned_loss) if n_aligned else float("nan"),
        "num_tokens": float(n),
        "aligned_fraction": n_aligned / n if n else float("nan"),
    }


@torch.no_grad()
def validation_loss(model, blocks: list[dict], batch_size: int, device, autocast) -> float:
    """Mean next-token cross-entropy over held-out blocks (raw text, no objective transform).

    ``model`` is a ``PHFModel`` (``forward(input_ids) -> (logits, values)``) run under ``autocast()`` in
    eval mode; each batch of ``batch_size`` blocks contributes MLE's loss (its token mean), weighted by its
    number of rows. phf-train logs it as ``val/loss``.
    """
    total, n = 0.0, 0
    mle = MLE()
    with eval_mode(model):
        for batch in _batches(blocks, batch_size):
            b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast():
                logits, _ = model(b["input_ids"])  # (B, T, V)
            out = mle.loss(logits, b["labels"], b["token_scores"])
            k = b["input_ids"].shape[0]
            total += out.loss.item() * k
            n += k
    return total / max(n, 1)


def _batches(blocks: Iterable[dict[str, torch.Tensor]], batch_size: int):
    buf: list[dict[str, torch.Tensor]] = []
    for b in blocks:
        buf.append(b)
        if len(buf) == batch_size:
            yield _stack(buf)
            buf = []
    if buf:
        yield _stack(buf)


def _stack(blocks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = [k for k in ("input_ids", "labels", "token_scores", "attention_mask") if k in blocks[0]]
    return {k: torch.stack([torch.as_tensor(b[k]) for b in blocks]) for k in keys}


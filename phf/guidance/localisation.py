"""Localisation: does the learned token reward point at the tokens the scorer objects to?

Ground truth is a set of offending character spans per document: for PEP8, one character at each
pycodestyle violation (line, column) (``pep8_offending_spans``); for ``local_pii``, the injected
spans from the corpus's ``ground_truth.jsonl`` (pass them as ``(start, end)`` pairs). Documents are
tokenized as the packer does (EOS, then every segment on its own), and a token is **offending** when
its character span overlaps an offending span. We report the AUROC (Mann-Whitney, ties at
mid-ranks) of a token-level misalignment for offending vs other tokens:

* guidance: 1 - r_phi(token | prefix)   (higher = worse), from the reward model;
* broadcast: the token's segment score, PHF's per-token signal, for reference. It is computed with
  line-level supervision, so at *segment* level (every token of an offending line is positive) it
  is exact for PEP8 by construction; the token-level AUROC is the comparable number.

EOS tokens (not part of the text) are excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from phf.scorers.pep8 import PEP8Scorer
from phf.tokenizer import tokenize_text


def auroc(scores: Sequence[float] | torch.Tensor, labels: Sequence[bool] | torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (ties count 1/2); NaN without both classes."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels, dtype=torch.bool).flatten()
    n_pos = int(y.sum())
    n_neg = int(y.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    uniq, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    before = torch.cumsum(counts, 0) - counts  # values strictly smaller
    midrank = before.to(torch.float64) + (counts.to(torch.float64) + 1) / 2  # 1-based mid-ranks
    ranks = midrank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def tokenize_segments(tokenizer, segments: Sequence[str]) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Token ids (EOS first, then each segment), their character spans in the document, their segment index.

    EOS gets the empty span (0, 0) and segment -1.
    """
    enc = tokenize_text(tokenizer, list(segments), return_offsets_mapping=True)
    ids, spans, seg = [tokenizer.eos_token_id], [(0, 0)], [-1]
    offset = 0
    for j, (s_ids, s_off) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        ids += s_ids
        spans += [(offset + a, offset + b) for a, b in s_off]
        seg += [j] * len(s_ids)
        offset += len(segments[j])
    return ids, spans, seg


def pep8_offending_spans(text: str, scorer) -> list[tuple[int, int]]:
    """One-character spans at every pycodestyle violation of ``text`` (``PEP8Scorer.violations``)."""
    if not text:
        return []
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    out = []
    for line_number, col, _ in scorer.violations(text):
        line = min(max(line_number, 1), len(line_starts)) - 1
        c = min(line_starts[line] + max(col, 0), len(text) - 1)
        out.append((c, c + 1))
    return out


def token_labels(spans: Sequence[tuple[int, int]], offending: Sequence[tuple[int, int]]) -> list[bool]:
    """A token is offending when its (non-empty) span overlaps an offending span."""
    if not offending:
        return [False] * len(spans)
    n = max(max(b for _, b in spans), max(y for _, y in offending))
    hit = [0] * (n + 1)  # prefix counts of offending characters
    marked = [False] * n
    for x, y in offending:
        for c in range(max(x, 0), min(y, n)):
            marked[c] = True
    for c in range(n):
        hit[c + 1] = hit[c] + marked[c]
    return [b > a and hit[b] - hit[a] > 0 for a, b in spans]


@torch.no_grad()
def token_rewards(learner, ids: list[int], block_size: int, batch: int = 64) -> torch.Tensor:
    """r_phi for a token sequence of any length: consecutive windows of ``block_size``, batched.

    The last window is right-padded with EOS (causal: padding never changes earlier rewards).
    """
    n = len(ids)
    n_win = -(-n // block_size)
    padded = torch.full((n_win * block_size,), learner.eos, dtype=torch.long)
    padded[:n] = torch.tensor(ids, dtype=torch.long)
    windows = padded.view(n_win, block_size)
    out = [learner.rewards(windows[i : i + batch]).cpu() for i in range(0, n_win, batch)]
    return torch.cat(out).flatten()[:n]


def localisation(
    learner,
    docs,
    tokenizer,
    offending: Callable[[object], list[tuple[int, int]]],
    block_size: int | None = None,
) -> dict[str, float]:
    """Token- and segment-level localisation AUROC of the guidance reward and of the broadcast scores.

    ``docs``: scored :class:`~phf.data.document.Document` s; ``offending(doc)`` gives its offending
    character spans. Returns ``guidance_token_auroc``, ``guidance_segment_auroc``,
    ``broadcast_token_auroc``, ``broadcast_segment_auroc``, ``positive_token_fraction``, ``tokens``,
    ``docs``.
    """
    block_size = block_size or learner.model.n_positions
    g, b, y_tok, y_seg = [], [], [], []
    n_docs = 0
    for doc in docs:
        ids, spans, seg = tokenize_segments(tokenizer, doc.texts)
        labels = token_labels(spans, offending(doc))
        seg_bad = {s for s, lab in zip(seg, labels, strict=True) if lab and s >= 0}
        r = token_rewards(learner, ids, block_size)
        keep = [i for i, s in enumerate(seg) if s >= 0]
        g += [1.0 - float(r[i]) for i in keep]
        b += [float(doc.scores[seg[i]]) for i in keep]
        y_tok += [labels[i] for i in keep]
        y_seg += [seg[i] in seg_bad for i in keep]
        n_docs += 1
    return {
        "guidance_token_auroc": auroc(g, y_tok),
        "guidance_segment_auroc": auroc(g, y_seg),
        "broadcast_token_auroc": auroc(b, y_tok),
        "broadcast_segment_auroc": auroc(b, y_seg),
        "positive_token_fraction": sum(y_tok) / max(len(y_tok), 1),
        "tokens": float(len(y_tok)),
        "docs": float(n_docs),
    }


def pep8_localisation(learner, docs, tokenizer, scorer=None, block_size: int | None = None) -> dict[str, float]:
    """:func:`localisation` with pycodestyle's violations as the ground truth."""
    if scorer is None:
        scorer = PEP8Scorer()
    return localisation(learner, docs, tokenizer, lambda d: pep8_offending_spans(d.text, scorer), block_size)


def spans_by_document(records) -> dict[str, list[tuple[int, int]]]:
    """``local_pii`` ground truth (``source.ground_truth()``: ``doc_id, start, end, ...``) → spans per document id."""
    out: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        out.setdefault(r["doc_id"], []).append((int(r["start"]), int(r["end"])))
    return out


def pii_localisation(learner, docs, tokenizer, ground_truth, block_size: int | None = None) -> dict[str, float]:
    """:func:`localisation` with the injected PII spans as the ground truth (documents without any are all-negative)."""
    spans = spans_by_document(ground_truth)
    return localisation(learner, docs, tokenizer, lambda d: spans.get(d.id, []), block_size)

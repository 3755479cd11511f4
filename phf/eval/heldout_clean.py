"""Held-out loss on clean held-out documents, each model scored in the format it is sampled in.

The capability axis of Korbak et al. 2023 asks how well a model still models *text*, not how well it
models the misaligned sentences its objective was built to avoid. So the documents are the held-out
documents **before injection** (an injected corpus keeps its clean version: row i of
``source.clean_documents()`` is document i without its injected sentences), or, for a corpus without a
clean version (JSONL, HF, the standard library's code), the held-out documents whose every segment
scores at or below the task's aligned threshold. "Held-out" is the pipeline's split
(``phf.data.pipeline.in_validation``: content hash of the document as the models saw it), so no model
trained on any of them.

**Format.** A model is scored the way it is sampled (``phf.eval.sampling``): its context starts with
``EOS + objective.generation_prefix`` (``<|endoftext|><|aligned|>`` for conditional training, EOS alone
for every other objective), then the document's text. Where the objective lets the model write its
prefix mid-text (conditional PEP8 bans only ``<|misaligned|>``: line-level conditioning), the prefix
is also put, as context, before every segment, as in its training data; where both control tokens are
banned (prose tasks), the text follows the initial prefix with no further control token, exactly what
the sampler produces. Control tokens are context only: their own log-probs never enter the loss.

**Renormalisation.** The sampler never produces a control token in text (``bad_words_ids``), so the
distribution a model samples text from at temperature 1 is its next-token distribution restricted to
non-control tokens and renormalised. The loss of a text token x is therefore

    -log p(x | context, next token is not a control token)
        = -log softmax(logits with control-token logits set to -inf)[x]

A conditional model puts much of its mass on ``<|aligned|>`` at every sentence start (99% of training
segments start with one), which would otherwise be charged to the text it never emits there. For an
objective without control tokens this is the plain softmax. Hand-checked example (3-token vocabulary
{a, b, <|aligned|>}, logits (0, 0, log 2), so p = (1/4, 1/4, 1/2)): the renormalised p(a) is
(1/4) / (1/2) = 1/2, loss log 2 = 0.6931 nats, where the plain softmax would charge log 4 = 1.3863.

**Windows.** Documents are longer than a small model's context. Each document's text tokens (every
segment tokenized on its own, as the pipeline does) are cut into consecutive windows of at most
``window_tokens`` text tokens; each window is scored after its own ``EOS + prefix`` context, as if it
were a sample. Every text token is scored exactly once, so every model is scored on the same token set
(same tokenizer, same documents, same windows); only the control context differs. A window whose
context would exceed the model's positions (line-level prefixes on short lines) closes early.

**Numbers.** ``loss`` = sum of the text tokens' losses / their number (nats/token), ``ppl = exp(loss)``,
and a percentile-bootstrap interval over *documents* (documents are the sampled unit; tokens within a
document are not independent): resample documents with replacement, recompute the token-weighted ratio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from phf.data.document import Document
from phf.data.sources import is_placeholder
from phf.model import eval_mode, unwrap
from phf.tokenizer import encode_text, token_ids

log = logging.getLogger(__name__)


def sampling_format(objective) -> tuple[list[str], bool]:
    """(prefix after EOS, whether the prefix also goes before every segment) of ``objective``'s sampling:
    every segment only when the sampler may write the prefix mid-text (it is not banned)."""
    prefix = list(objective.generation_prefix) if objective is not None else []
    banned = set(objective.banned_tokens) if objective is not None else set()
    return prefix, bool(prefix) and not banned.intersection(prefix)


def windows(segments: Sequence[Sequence[int]], start: Sequence[int], segment_prefix: Sequence[int],
            window_tokens: int, context: int | None) -> list[tuple[list[int], list[int]]]:
    """Cut one document's segments (token ids) into scored windows ``(ids, weights)``.

    Every window is ``start`` (weight 0) then up to ``window_tokens`` text tokens (weight 1); with a
    ``segment_prefix``, a segment that starts inside a window is preceded by it (weight 0). A window
    closes early when the next token (and its segment prefix) would not fit in ``context`` positions.

    >>> windows([[1, 2], [3]], start=[0, 9], segment_prefix=[], window_tokens=2, context=None)
    [([0, 9, 1, 2], [0, 0, 1, 1]), ([0, 9, 3], [0, 0, 1])]
    >>> windows([[1, 2], [3]], start=[0, 9], segment_prefix=[9], window_tokens=4, context=None)
    [([0, 9, 1, 2, 9, 3], [0, 0, 1, 1, 0, 1])]
    """
    if window_tokens < 1:
        raise ValueError(f"task.eval.capability.window_tokens must be >= 1, got {window_tokens}")
    if context is not None and len(start) + 1 > context:
        raise ValueError(f"the scoring context ({len(start)} tokens) leaves no position for text in the "
                         f"model's {context}")
    out: list[tuple[list[int], list[int]]] = []
    ids, weights, n_text = list(start), [0] * len(start), 0
    for seg in segments:
        for j, tok in enumerate(seg):
            lead = list(segment_prefix) if j == 0 and n_text else []
            if n_text == window_tokens or (context is not None and len(ids) + len(lead) + 1 > context):
                out.append((ids, weights))
                ids, weights, n_text, lead = list(start), [0] * len(start), 0, []
            ids += [*lead, tok]
            weights += [0] * len(lead) + [1]
            n_text += 1
    if n_text:
        out.append((ids, weights))
    return out


@torch.no_grad()
def window_losses(model, batch: Sequence[tuple[list[int], list[int]]], exclude_ids: Sequence[int],
                  pad_id: int) -> list[tuple[float, int]]:
    """(sum of the scored tokens' losses, their number) of each window, the logits of ``exclude_ids``
    removed from every softmax (renormalised over the remaining vocabulary)."""
    hf = unwrap(model)
    device = next(hf.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    weight = torch.zeros((len(batch), width))
    for i, (row, w) in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        weight[i, : len(row)] = torch.tensor(w, dtype=torch.float)
    ids, mask, weight = ids.to(device), mask.to(device), weight.to(device)
    logits = hf(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
    if exclude_ids:
        logits[..., list(exclude_ids)] = float("-inf")
    logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1, (B, T-1, V)
    target = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    w = weight[:, 1:]
    nll = -(target * w).nan_to_num(0.0).sum(-1)  # 0 * (-inf) at unscored positions: nan, dropped
    return [(float(s), int(n)) for s, n in zip(nll.tolist(), w.sum(-1).tolist(), strict=True)]


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], confidence: float, resamples: int,
                    seed: int) -> tuple[float, float]:
    """Percentile-bootstrap interval of sum(num)/sum(den), resampling the (num, den) pairs together
    (scipy.stats.bootstrap, paired); NaN with fewer than two pairs."""
    if len(num) < 2:
        return float("nan"), float("nan")
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(num, dtype=float), np.asarray(den, dtype=float)),
                    lambda a, b, axis=-1: a.sum(axis) / b.sum(axis), paired=True, vectorized=True,
                    confidence_level=confidence, n_resamples=resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def clean_heldout_loss(model, tokenizer, objective, documents: Sequence[Document], window_tokens: int,
                       batch_size: int = 8, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0, per_document: list[dict] | None = None) -> dict[str, float]:
    """``loss``, ``loss_ci_low``, ``loss_ci_high``, ``ppl``, ``num_tokens``, ``num_docs`` of ``model`` on
    the (segmented) clean ``documents``, in the model's sampling format (see the module docstring).
    NaN where no text token qualifies. ``per_document`` receives ``{"id", "nll", "tokens"}`` per document
    (the total loss in nats and the number of scored tokens): what a paired comparison of two models needs."""
    hf = unwrap(model)
    prefix, every_segment = sampling_format(objective)
    prefix_ids = token_ids(tokenizer, prefix)
    exclude = token_ids(tokenizer, list(objective.special_tokens)) if objective is not None else []
    start = [tokenizer.eos_token_id, *prefix_ids]
    context = getattr(hf.config, "n_positions", None) or getattr(hf.config, "max_position_embeddings", None)
    per_doc: list[tuple[int, list[int]]] = []  # (document index, its windows' indices)
    flat: list[tuple[list[int], list[int]]] = []
    for d, doc in enumerate(documents):
        ws = windows(encode_text(tokenizer, list(doc.texts)), start, prefix_ids if every_segment else [],
                     window_tokens, context)
        per_doc.append((d, list(range(len(flat), len(flat) + len(ws)))))
        flat += ws
    scored: list[tuple[float, int]] = []
    with eval_mode(hf):
        for i in range(0, len(flat), batch_size):
            scored += window_losses(hf, flat[i : i + batch_size], exclude, tokenizer.eos_token_id)
    nll = [sum(scored[j][0] for j in idx) for _, idx in per_doc]
    count = [sum(scored[j][1] for j in idx) for _, idx in per_doc]
    if per_document is not None:
        per_document += [{"id": documents[d].id, "nll": nll[d], "tokens": count[d]} for d, _ in per_doc]
    keep = [i for i, n in enumerate(count) if n]
    nll, count = [nll[i] for i in keep], [count[i] for i in keep]
    n = sum(count)
    loss = sum(nll) / n if n else float("nan")
    low, high = bootstrap_ratio(nll, count, confidence, resamples, seed)
    return {"loss": loss, "loss_ci_low": low, "loss_ci_high": high, "ppl": math.exp(loss) if n else float("nan"),
            "num_tokens": float(n), "num_docs": float(len(keep))}


def clean_heldout_documents(data, segmenter, scorer, tokenizer, block_size: int, aligned_threshold: float,
                            max_docs: int | None = None) -> list[Document]:
    """The clean held-out documents of ``data`` (a ``phf.data.pipeline.Data``), segmented.

    With ``data.source.clean_documents()`` (an injected corpus): the clean version of every held-out
    document. Otherwise the held-out documents (segmented and scored by the pipeline) whose every
    segment scores at most ``aligned_threshold``. At most ``max_docs`` (None: all), in source order.
    ``tokenizer`` and ``block_size`` build the pipeline's validation stream (nothing is packed).
    """
    source, out = data.source_of("validation"), []
    clean = getattr(source, "clean_documents", None)
    if callable(clean):
        docs = clean()
        for i, doc in enumerate(source.iter_from(0)):
            if max_docs is not None and len(out) >= max_docs:
                break
            if is_placeholder(doc) or not data.holds_out(doc):
                continue
            if i >= len(docs):
                raise ValueError(f"{type(source).__name__}.clean_documents() has {len(docs)} documents but the "
                                 f"source has more (document {i}, {doc.id!r}): the clean version must match row by row")
            text = "".join(docs[i].texts)
            out.append(Document(segmenter(text), None, id=docs[i].id, meta=dict(docs[i].meta)))
        return out
    stream = data.stream("validation", tokenizer=tokenizer, segmenter=segmenter, scorer=scorer,
                         block_size=block_size, seed=0, epochs=1)
    batch: list[tuple[int, Document]] = []

    def flush():
        for d in stream.process(batch):
            if all(s <= aligned_threshold for s in d.scores) and (max_docs is None or len(out) < max_docs):
                out.append(Document(list(d.texts), list(d.scores), id=d.id, meta=dict(d.meta)))
        batch.clear()

    for i, doc in enumerate(source.iter_from(0)):
        if max_docs is not None and len(out) >= max_docs:
            break
        if is_placeholder(doc) or not data.holds_out(doc):
            continue
        batch.append((i, doc))
        if len(batch) >= data.score_batch_docs:
            flush()
    flush()
    if not out:
        log.warning("no clean held-out document (every held-out document has a segment scoring above %g): "
                    "the clean held-out loss is NaN", aligned_threshold)
    return out


def heldout_clean_documents(run_data, tokenizer, capability) -> list[Document]:
    """``clean_heldout_documents`` of a run's built data (``phf.data.pipeline.RunData``: its data, segmenter,
    training scorer and block size) with ``task.eval.capability``'s settings (``phf.eval.settings.Capability``)."""
    return clean_heldout_documents(run_data.data, run_data.segmenter, run_data.scorer, tokenizer,
                                   run_data.block_size, capability.aligned_threshold, capability.clean_max_docs)

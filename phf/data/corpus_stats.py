"""How misalignment is structured across and within a corpus's documents: the statistic that
``phf-corpus-stats`` (:mod:`phf.corpus_stats_cli`) reports, and the per-segment flags it is computed
from (ground truth or scores).

The statistic (:func:`structure_stats`), for documents given as a list of per-segment flags
(misaligned or not) and a content unit each:

* ``doc_rate``: share of documents with at least one misaligned segment; ``segment_rate``: share of
  segments misaligned; ``first_rate``: share of documents whose first segment is misaligned;
  ``density``: mean share of misaligned segments within the misaligned documents.
* Opening (documents with at least 2 segments; *later* = every segment after the first):
  ``later_doc|first_aligned`` and ``later_doc|first_misaligned``: share of documents with a misaligned
  later segment, among those whose first segment is aligned / misaligned; ``opening_lift`` = their
  ratio (misaligned / aligned). ``later_seg|first_aligned``, ``later_seg|first_misaligned`` and
  ``later_seg``: the same as shares of later *segments* (pooled), and ``opening_lift_seg`` their ratio.
  ``protocol_ratio`` = ``later_seg|first_aligned`` / ``later_seg``: the share of misaligned later
  segments left when one conditions on an aligned first segment, i.e. the misalignment reduction
  (conditional / MLE) that the paper's protocol (condition on ``<|aligned|>`` once, both control
  tokens banned afterwards) would give a model that learned this corpus exactly; 1 = the opening says
  nothing about the rest.
* Content: ``content_kappa``: how predictable misalignment is from a document's content unit (its
  package, README, genre: ``group=``). Two documents of one unit agree when both are misaligned or
  both clean; ``content_kappa`` = (P_o - P_e) / (1 - P_e), with P_o the chance that a document agrees
  with another document of its unit (averaged over the documents of units with >= 2 documents) and
  P_e = p^2 + (1 - p)^2 the chance for two documents drawn at random (p: their misaligned share),
  i.e. Cohen's kappa of same-unit pairs (:func:`content_kappa`). 0: the unit says nothing (documents
  misaligned at random), 1: the unit decides (every unit all-misaligned or all-clean), < 0: units mix
  more than chance. Single-document units carry no information about it and are left out
  (``units_2plus_docs`` says how many units count).

Intervals: Wilson score intervals (documents are independent trials; the segment-level ones treat
segments as independent, which they are not within a document, so they are narrower than the truth);
a ratio's interval is the MOVER combination of its two Wilson intervals (Newcombe 2013, §7.3.3;
Donner & Zou 2012), for the document-level ratio only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePosixPath


# -- statistics -----------------------------------------------------------------------------------
def wilson(k: int, n: int, confidence: float = 0.95) -> dict | None:
    """``{"p", "lo", "hi", "k", "n"}``: k of n with its Wilson score interval (scipy); None for n = 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return {"p": k / n, "lo": float(ci.low), "hi": float(ci.high), "k": k, "n": n}


def mover_ratio(a: dict | None, b: dict | None) -> dict | None:
    """The ratio a/b of two independent proportions with the MOVER interval from their intervals.

    With estimates p1, p2 and intervals (l1, u1), (l2, u2) (Newcombe 2013, eq. 7.3.3)::

        L = (p1 p2 - sqrt((p1 p2)^2 - l1 u2 (2 p1 - l1)(2 p2 - u2))) / (u2 (2 p2 - u2))
        U = (p1 p2 + sqrt((p1 p2)^2 - u1 l2 (2 p1 - u1)(2 p2 - l2))) / (l2 (2 p2 - l2))

    U is infinite when l2 = 0; None when b's estimate is 0 (no ratio).
    """
    if a is None or b is None or b["p"] == 0:
        return None
    p1, l1, u1, p2, l2, u2 = a["p"], a["lo"], a["hi"], b["p"], b["lo"], b["hi"]
    lo = (p1 * p2 - math.sqrt(max(0.0, (p1 * p2) ** 2 - l1 * u2 * (2 * p1 - l1) * (2 * p2 - u2)))) / (
        u2 * (2 * p2 - u2))
    den = l2 * (2 * p2 - l2)
    hi = math.inf if den <= 0 else (
        p1 * p2 + math.sqrt(max(0.0, (p1 * p2) ** 2 - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2)))) / den
    return {"ratio": p1 / p2, "lo": max(0.0, lo), "hi": hi}


def content_kappa(groups: Sequence[str], y: Sequence[bool]) -> float | None:
    """How much more often two documents of one content unit agree (both misaligned or both clean)
    than two documents drawn at random, on Cohen's kappa scale (module docstring).

    Over the documents of units with at least 2 documents (a unit of n documents, m misaligned):
    P_g = (m (m - 1) + (n - m)(n - m - 1)) / (n (n - 1)) is the chance that another document of the
    unit agrees with one of its documents; P_o = the mean of P_g over those documents (each unit
    weighted by n); P_e = p^2 + (1 - p)^2 with p their misaligned share; kappa = (P_o - P_e) / (1 - P_e).
    None when no unit has 2 documents or all of them agree by chance alone (P_e = 1).
    """
    sizes: dict[str, list[int]] = {}
    for g, v in zip(groups, y, strict=True):
        sizes.setdefault(g, [0, 0])
        sizes[g][0] += 1
        sizes[g][1] += int(bool(v))
    units = [(n, m) for n, m in sizes.values() if n >= 2]
    total = sum(n for n, _ in units)
    if not total:
        return None
    p = sum(m for _, m in units) / total
    p_o = sum((m * (m - 1) + (n - m) * (n - m - 1)) / (n - 1) for n, m in units) / total
    p_e = p * p + (1 - p) * (1 - p)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def structure_stats(docs: Sequence[tuple[str, Sequence[bool]]], confidence: float = 0.95) -> dict:
    """The structure statistic (module docstring) of documents given as ``(unit, segment flags)``."""
    docs = [(g, [bool(f) for f in flags]) for g, flags in docs if len(flags)]
    n_docs, n_segs = len(docs), sum(len(f) for _, f in docs)
    mis = [any(f) for _, f in docs]
    long = [f for _, f in docs if len(f) >= 2]
    a = [f for f in long if not f[0]]  # first segment aligned
    b = [f for f in long if f[0]]  # first segment misaligned
    later_doc_a = wilson(sum(any(f[1:]) for f in a), len(a), confidence)
    later_doc_b = wilson(sum(any(f[1:]) for f in b), len(b), confidence)
    later_seg_a = wilson(sum(sum(f[1:]) for f in a), sum(len(f) - 1 for f in a), confidence)
    later_seg_b = wilson(sum(sum(f[1:]) for f in b), sum(len(f) - 1 for f in b), confidence)
    later_seg = wilson(sum(sum(f[1:]) for f in long), sum(len(f) - 1 for f in long), confidence)
    lift_seg = None if not (later_seg_a and later_seg_b and later_seg_a["p"]) else later_seg_b["p"] / later_seg_a["p"]
    protocol = None if not (later_seg_a and later_seg and later_seg["p"]) else later_seg_a["p"] / later_seg["p"]
    misaligned = [f for f, m in zip((f for _, f in docs), mis, strict=True) if m]
    return {
        "documents": n_docs,
        "segments": n_segs,
        "units": len({g for g, _ in docs}),
        "doc_rate": wilson(sum(mis), n_docs, confidence),
        "segment_rate": wilson(sum(sum(f) for _, f in docs), n_segs, confidence),
        "first_rate": wilson(sum(f[0] for _, f in docs), n_docs, confidence),
        "density": sum(sum(f) / len(f) for f in misaligned) / len(misaligned) if misaligned else None,
        "later_doc|first_aligned": later_doc_a,
        "later_doc|first_misaligned": later_doc_b,
        "opening_lift": mover_ratio(later_doc_b, later_doc_a),
        "later_seg|first_aligned": later_seg_a,
        "later_seg|first_misaligned": later_seg_b,
        "later_seg": later_seg,
        "opening_lift_seg": lift_seg,
        "protocol_ratio": protocol,
        "content_kappa": content_kappa([g for g, _ in docs], mis),
        "units_2plus_docs": sum(1 for c in _counts(g for g, _ in docs).values() if c >= 2),
        "confidence": confidence,
    }


def _counts(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


# -- documents → flags ----------------------------------------------------------------------------
def unit_of_document(doc, key: str = "unit") -> str:
    """A document's content unit (``group=`` in the module docstring)."""
    from phf.data.corpora.prose import unit_of

    if key != "unit":
        if key not in doc.meta:
            raise ValueError(f"document {doc.id!r} has no metadata {key!r} for group={key} "
                             f"(it has {sorted(doc.meta)}; for data=jsonl set data.source.meta_keys=[{key}])")
        return str(doc.meta[key])
    if "unit" in doc.meta:
        return str(doc.meta["unit"])
    if "origin" in doc.meta:
        return unit_of(str(doc.meta["origin"]))
    parent = PurePosixPath(doc.id).parent.as_posix()  # a file id (local_pep8): its package directory
    return parent if parent != "." else PurePosixPath(doc.id).stem


def flags_from_truth(source, n: int = 0) -> list[tuple[str, list[bool]]]:
    """``(unit, flags)`` per document from an injected corpus's ``structure.jsonl``."""
    rows = source.structure()
    rows = rows[:n] if n else rows
    out = []
    for r in rows:
        flags = [False] * r["n_sentences"]
        for i in r["misaligned_sentences"]:
            flags[i] = True
        out.append((r["unit"], flags))
    return out


class _Untokenized:
    """What :class:`~phf.data.pipeline.BlockStream` needs of a tokenizer to segment and score without
    packing: nothing is tokenized here, so there is no EOS id."""

    eos_token_id = None


def flags_from_scores(run_data, threshold: float, n: int = 0,
                      group: str = "unit") -> tuple[list[tuple[str, list[bool]]], dict]:
    """Segment and score the first ``n`` documents (0 = all) of a run's built data
    (``phf.data.pipeline.RunData``: its source, the task's segmenter and the training scorer) through the
    training pipeline's own segment → score path (:meth:`BlockStream.process`, no objective); return
    ``(unit, score > threshold per segment)`` per document and what was used. The usual ``threshold`` is
    conditional training's (``conditional_threshold``)."""
    from phf.data.sources import is_placeholder

    data, scorer = run_data.data, run_data.scorer
    stream = data.stream("train", tokenizer=_Untokenized(), segmenter=run_data.segmenter,
                         scorer=scorer, block_size=2, seed=0)  # block_size: unused, nothing is packed
    out, batch = [], []

    def flush():
        for d in stream.process(batch):
            out.append((unit_of_document(d, group), [s > threshold for s in d.scores]))
        batch.clear()

    for position, doc in enumerate(data.source.iter_from(0)):
        if n and position >= n:
            break
        if not is_placeholder(doc):
            batch.append((position, doc))
        if len(batch) >= data.score_batch_docs:
            flush()
    flush()
    used = {"threshold": threshold, "scorer": getattr(scorer, "name", type(scorer).__name__),
            "segmenter": type(stream.segmenter).__name__, "skipped_bad": stream.stats["skipped_bad"]}
    return out, used


def conditional_threshold(cfg) -> float:
    """The score above which conditional training calls a segment misaligned: the task's
    ``task.objectives.conditional.threshold``."""
    return float(cfg.task.objectives.conditional.threshold)

"""Filtering: MLE on the documents whose average misalignment score is low enough.

Korbak et al. 2023, §2 ("Filtering"): drop every training document x with avg_score(x) > tau, then
maximise the likelihood of what is left,

    L = mean_{t in N} CE_t   over the kept documents only.

The paper calls its runs "Filtering median": tau is (roughly) the median document score. Pass either a
fixed ``threshold`` (the per-task values of the paper's configs) or a ``percentile`` of the document
scores (50 = median), which ``prepare`` computes from a scored sample of the training stream.
"""

from __future__ import annotations

import math
import random

from phf.data.document import Document
from phf.objectives.base import LossOutput, Objective
from phf.objectives.mle import MLE


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("cannot take a percentile of an empty sample")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Filtering(Objective):
    """MLE on documents with ``avg_score <= threshold``; the rest never reach the packer.

    Args:
        threshold: keep a document iff its ``avg_score`` is at most this (toxicity 0.00078,
            pii 0.000286, pep8 0.002361 in the paper's configs).
        percentile: instead of ``threshold``, keep documents at or below this percentile (0..100) of
            the document scores of the sample passed to ``prepare`` (50 = the paper's "median").

    Exactly one of them must be given. ``docs_seen`` / ``docs_dropped`` count the documents this
    instance has transformed (per process: data-loader workers each hold their own copy).
    """

    def __init__(self, threshold: float | None = None, percentile: float | None = None):
        if (threshold is None) == (percentile is None):
            raise ValueError(
                f"Filtering needs exactly one of threshold or percentile, got threshold={threshold!r}, "
                f"percentile={percentile!r} (e.g. objective.threshold=null objective.percentile=50)"
            )
        if percentile is not None and not 0.0 <= percentile <= 100.0:
            raise ValueError(f"Filtering percentile must be in [0, 100], got {percentile!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.percentile = None if percentile is None else float(percentile)
        self._mle = MLE()
        self._seen = 0
        self._dropped = 0

    @property
    def requires_prepare(self) -> bool:
        return self.percentile is not None

    @property
    def docs_seen(self) -> int:
        return self._seen

    @property
    def docs_dropped(self) -> int:
        return self._dropped

    def prepare(self, sample: list[Document]) -> dict[str, float]:
        """Fix the threshold from the sample's document scores (percentile mode) and report it.

        Returns ``filtering/threshold`` and ``filtering/kept_fraction`` (the fraction of the sample
        that passes) for logging, in either mode.
        """
        scores = [doc.avg_score for doc in sample]
        if self.percentile is not None:
            if not scores:
                raise ValueError("Filtering(percentile=...) needs a non-empty scored sample in prepare()")
            self.threshold = percentile(scores, self.percentile)
        kept = sum(s <= self.threshold for s in scores) / len(scores) if scores else float("nan")
        return {"filtering/threshold": self.threshold, "filtering/kept_fraction": kept}

    def transform(self, doc: Document, rng: random.Random) -> Document | None:
        if self.threshold is None:
            raise RuntimeError(
                f"Filtering(percentile={self.percentile}) has no threshold yet: call prepare(sample) on a "
                "scored sample of the training stream before transforming documents"
            )
        self._seen += 1
        if doc.avg_score > self.threshold:
            self._dropped += 1
            return None
        return doc

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        return self._mle.loss(logits, labels, token_scores, values)

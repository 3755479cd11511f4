"""The scorer contract: texts in, one misalignment score per text out (higher = worse)."""

from __future__ import annotations

import json


class Scorer:
    """Base class of every scorer plugin.

    Subclasses set ``name`` and ``version`` (together with ``settings()`` they identify the scoring
    function and form the score-cache key) and implement ``score``. Heavy libraries are imported
    lazily, on first use, so that ``import phf`` stays light.

    ``contextual`` scorers (PEP8) need a segment's document to score it: the pipeline then calls
    ``score_document(segments)`` once per document instead of batching segments across documents.
    """

    name: str = "scorer"
    version: str = "0"
    #: what a score measures, for plots and tables (phf-report's axes); "" = not declared
    unit: str = ""
    contextual: bool = False

    def settings(self) -> dict:
        """Every constructor argument that changes scores (not batch size or device)."""
        return {}

    @property
    def key(self) -> str:
        """Stable identity of the scoring function, used as the cache namespace."""
        return f"{self.name}@{self.version}:{json.dumps(self.settings(), sort_keys=True)}"

    def score(self, texts: list[str]) -> list[float]:
        """One misalignment score per text, scored independently of each other."""
        raise NotImplementedError

    def score_document(self, segments: list[str]) -> list[float]:
        """One score per segment of one document; context-free scorers score segments alone."""
        return self.score(segments)

    def misfit(self, texts: list[str]) -> str | None:
        """Why this scorer does not fit these documents (e.g. pycodestyle on prose), or None when it does.

        The pipeline asks once, with the first batch of documents it scores itself (pre-scored records
        are never asked about): a scorer that cannot mean anything on the text stops the run instead of
        scoring noise. None by default (any text fits)."""
        return None

    def sample_metrics(self, texts: list[str], cut: list[bool]) -> dict[str, float]:
        """Task-specific evaluation metrics of a batch of scored samples, beside the scores (e.g. PEP8's
        parse rate); ``cut[i]``: sample i was stopped by the token limit, not by EOS. None by default."""
        return {}

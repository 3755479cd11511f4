"""Profanity misalignment: the probability of offensive language from ``alt-profanity-check``.

alt-profanity-check ships its trained model (a linear SVM over a bag of words, calibrated, pickled
with the scikit-learn version it pins), so this scorer works offline with no download. It is phf's
offline default for the toxicity task; the paper used Detoxify (see :mod:`phf.scorers.detoxify`),
whose scale differs: tune task thresholds for the scorer in use.
"""

from __future__ import annotations

from importlib.metadata import version as _dist_version

from phf.scorers.base import Scorer
from phf.scorers.errors import call_batched


class ProfanityScorer(Scorer):
    """score(text) = ``profanity_check.predict_prob([text])[0]`` in [0, 1], computed in batches.

    ``batch_size`` only bounds memory; it does not change scores (one string per call is ~250x
    slower than batches of 1000, so always give the scorer many texts at once).
    """

    name = "profanity"
    unit = "profanity probability (profanity-check)"

    def __init__(self, batch_size: int = 1024):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        # the model is a scikit-learn pickle: its predictions depend on both versions
        self.version = (
            f"alt-profanity-check-{_dist_version('alt-profanity-check')}"
            f"+scikit-learn-{_dist_version('scikit-learn')}"
        )
        self._predict_prob = None

    def _load(self):
        if self._predict_prob is None:
            from profanity_check import predict_prob

            self._predict_prob = predict_prob
        return self._predict_prob

    def score(self, texts: list[str]) -> list[float]:
        predict_prob = self._load()
        return call_batched(self.name, lambda chunk: predict_prob(chunk).tolist(), texts, self.batch_size)

    def __getstate__(self):  # picklable for worker processes; the model is reloaded there
        state = dict(self.__dict__)
        state["_predict_prob"] = None
        return state

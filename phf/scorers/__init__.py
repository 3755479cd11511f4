"""Scorer plugins. Classes are imported lazily so that ``import phf.scorers`` stays cheap."""

from importlib import import_module

from phf.scorers.base import Scorer

_LAZY = {
    "PEP8Scorer": "phf.scorers.pep8",
    "ProfanityScorer": "phf.scorers.profanity",
    "PIIScorer": "phf.scorers.pii",
    "DetoxifyScorer": "phf.scorers.detoxify",
    "ScorerError": "phf.scorers.errors",
    "CachedScorer": "phf.scorers.cache",
    "ScoreCache": "phf.scorers.cache",
    "build_scorer": "phf.scorers.cache",
}

__all__ = ["Scorer", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phf.scorers' has no attribute {name!r}")

"""Scorer plugins. Classes are imported lazily so that ``import phf.scorers`` stays cheap."""

from importlib import import_module

from phf.scorers.base import Scorer

_LAZY = {
    "PEP8Scorer": "phf.scorers.pep8",
}

__all__ = ["Scorer", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phf.scorers' has no attribute {name!r}")

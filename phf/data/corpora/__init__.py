"""Offline corpora built from text found on the machine (prose for the toxicity and PII tasks)."""

from importlib import import_module

_LAZY = {
    "LocalProseSource": "phf.data.corpora.prose",
    "LocalPIISource": "phf.data.corpora.pii",
    "LocalToxicitySource": "phf.data.corpora.toxicity",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phf.data.corpora' has no attribute {name!r}")

"""Scoring a batch of segmented documents: the one scoring path of the training pipeline and phf-score.

A context-free scorer (profanity, PII, Detoxify) gets one ``score`` call over every segment of the
batch, so a batching scorer (Detoxify on a GPU) sees the whole batch at once; a contextual scorer (PEP8:
a line is judged within its file) gets one ``score_document`` call per document. A failure is a
``RuntimeError`` naming the scorer and the document it happened in (a ``ScorerError`` already names the
offending segment; the document is found by that segment); a ``ScoreCacheError`` passes unchanged (it
names the cache file and is not the document's fault). A document is anything with ``texts`` (its
segments) and ``id`` (``phf.data.document.Document``; not imported: phf.data depends on phf.scorers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phf.scorers.cache import ScoreCacheError
from phf.scorers.errors import ScorerError


def scorer_name(scorer) -> str:
    return getattr(scorer, "name", type(scorer).__name__)


def call_scorer(name: str, fn: Callable, doc, batch: Sequence = ()):
    """``fn()``, its failure re-raised naming the scorer and ``doc`` (or the document of ``batch`` that
    holds the segment a ``ScorerError`` names)."""
    try:
        return fn()
    except ScoreCacheError:
        raise
    except ScorerError as e:
        if doc is None:
            doc = next((d for d in batch if getattr(e, "text", None) in d.texts), None)
        raise RuntimeError(f"{e}" + (f" (in document {doc.id!r})" if doc is not None else "")) from e
    except Exception as e:
        where = f" on document {doc.id!r} (first segment {doc.texts[0][:80]!r})" if doc is not None else ""
        raise RuntimeError(f"scorer {name!r} failed{where}: {type(e).__name__}: {e}") from e


def score_batch(scorer, docs: Sequence) -> list[list[float]]:
    """One list of segment scores per document of ``docs``, in order."""
    name = scorer_name(scorer)
    if getattr(scorer, "contextual", False):
        return [[float(s) for s in call_scorer(name, lambda d=d: scorer.score_document(d.texts), d)] for d in docs]
    flat = [s for d in docs for s in d.texts]
    scores = call_scorer(name, lambda: scorer.score(flat), docs[0] if len(docs) == 1 else None, docs)
    if len(scores) != len(flat):
        raise RuntimeError(f"scorer {name!r} returned {len(scores)} scores for {len(flat)} segments")
    out, i = [], 0
    for d in docs:
        out.append([float(s) for s in scores[i : i + len(d.texts)]])
        i += len(d.texts)
    return out

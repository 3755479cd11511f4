"""Scorer failures and the batching helper every library-backed scorer shares.

A scorer never turns a failure into a score (the original code's broad ``except`` returned 0, which
reads as "perfectly aligned"). A failing batch is re-run text by text to find the offending text, and
a :class:`ScorerError` names the scorer and that text (truncated).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

PREVIEW_CHARS = 120


_NO_TEXT = object()


def preview(text, limit: int = PREVIEW_CHARS) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters, with its full length when cut."""
    if not isinstance(text, str):
        return f"{text!r:.{limit}} (a {type(text).__name__}, not a str)"
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"


class ScorerError(RuntimeError):
    """A scorer failed (or returned a non-finite score) on a specific text (``text``)."""

    def __init__(self, scorer: str, text=_NO_TEXT, reason: str = "failed"):
        self.scorer, self.reason = scorer, reason
        self.text = None if text is _NO_TEXT else text
        self._has_text = text is not _NO_TEXT
        where = f" on text {preview(text)}" if self._has_text else ""
        super().__init__(f"scorer {scorer!r} failed{where}: {reason}")

    def __reduce__(self):  # survives pickling (errors cross process boundaries in phf-score)
        return _rebuild, (self.scorer, self._has_text, self.text, self.reason)


def _rebuild(scorer: str, has_text: bool, text, reason: str) -> ScorerError:
    return ScorerError(scorer, text, reason) if has_text else ScorerError(scorer, reason=reason)


def check_scores(scorer: str, texts: Sequence[str], scores) -> list[float]:
    """``scores`` as floats, or a ScorerError if there is not one finite score per text."""
    scores = [float(s) for s in scores]
    if len(scores) != len(texts):
        raise ScorerError(scorer, reason=f"returned {len(scores)} scores for {len(texts)} texts")
    for t, s in zip(texts, scores, strict=True):
        if not math.isfinite(s):
            raise ScorerError(scorer, t, f"non-finite score {s!r}")
    return scores


def call_batched(
    scorer: str, fn: Callable[[list[str]], Sequence[float]], texts: Sequence[str], batch_size: int
) -> list[float]:
    """Score ``texts`` with ``fn`` in chunks of ``batch_size``; every score is checked to be finite.

    When a chunk raises, its texts are scored one by one to name the offending text in the
    :class:`ScorerError` (chained to the library's exception).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        try:
            scores = fn(chunk)
        except Exception as batch_error:
            for t in chunk:
                try:
                    fn([t])
                except Exception as e:
                    raise ScorerError(scorer, t, f"{type(e).__name__}: {e}") from e
            raise ScorerError(
                scorer,
                chunk[0],
                f"a batch of {len(chunk)} texts failed ({type(batch_error).__name__}: "
                f"{batch_error}) but each text alone succeeded; first text of the batch shown",
            ) from batch_error
        out.extend(check_scores(scorer, chunk, scores))
    return out

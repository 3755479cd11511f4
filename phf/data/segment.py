"""Segmenters: split a raw document into the units that get one misalignment score each.

Both are lossless: ``"".join(segmenter(text)) == text`` for every string.
"""

from __future__ import annotations

import re


class LineSegmenter:
    """One segment per line for code; each line keeps its ``\\n`` (only ``\\n`` splits, so ``\\r\\n``
    stays inside its line and form feeds do not split)."""

    def __call__(self, text: str) -> list[str]:
        lines = text.split("\n")
        segments = [line + "\n" for line in lines[:-1]]
        if lines[-1]:
            segments.append(lines[-1])
        return segments


class SentenceSegmenter:
    """One segment per sentence for prose; trailing whitespace stays with its sentence.

    ``backend="regex"`` (default, fast, no dependency) cuts after sentence-final punctuation (plus
    closing quotes/brackets) followed by whitespace, and at blank lines. ``backend="spacy"`` uses a
    blank English spaCy pipeline with the rule-based ``sentencizer``, as the paper's data builder did.
    """

    _BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+|\n[ \t]*\n\s*")

    def __init__(self, backend: str = "regex"):
        if backend not in ("regex", "spacy"):
            raise ValueError(f"SentenceSegmenter backend must be 'regex' or 'spacy', got {backend!r}")
        self.backend = backend
        self._nlp = None

    def __call__(self, text: str) -> list[str]:
        if self.backend == "spacy":
            return self._spacy(text)
        segments, start = [], 0
        for m in self._BOUNDARY.finditer(text):
            segments.append(text[start : m.end()])
            start = m.end()
        if start < len(text):
            segments.append(text[start:])
        return segments

    def _spacy(self, text: str) -> list[str]:
        if self._nlp is None:
            import spacy

            self._nlp = spacy.blank("en")
            self._nlp.add_pipe("sentencizer")
            self._nlp.max_length = max(self._nlp.max_length, 10**8)
        if not text:
            return []
        segments = [s.text_with_ws for s in self._nlp(text).sents]
        # spaCy folds leading whitespace into the first token's span; keep the invariant explicit
        head = text[: len(text) - len("".join(segments))]
        if head:
            segments[0] = head + segments[0]
        return segments

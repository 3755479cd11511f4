"""A scorer of your own: regular-expression matches per character.

score(text) = number of non-overlapping matches of any of ``patterns`` in ``text`` / len(text), the same
scale as phf's PII and PEP8 scorers (hits per character), 0 for an empty text. E.g. with the default
e-mail pattern, ``"mail a@b.io"`` (11 characters, one address) scores 1/11 = 0.0909.
"""

from __future__ import annotations

import re

from phf.scorers.base import Scorer

#: what the example looks for when no pattern is given: an e-mail address
EMAIL = r"[\w.+-]+@[\w-]+\.[\w.-]+"


class PatternScorer(Scorer):
    name = "pattern"
    version = "1"  # bump when the scores change for another reason than this file (phf fingerprints the file)

    def __init__(self, patterns: list[str] | None = None, ignore_case: bool = True):
        self.patterns = list(patterns) if patterns is not None else [EMAIL]
        if not self.patterns:
            raise ValueError("scorer.patterns is empty: give at least one regular expression")
        self.ignore_case = ignore_case
        flags = re.IGNORECASE if ignore_case else 0
        try:
            self._regex = re.compile("|".join(f"(?:{p})" for p in self.patterns), flags)
        except re.error as e:
            raise ValueError(f"scorer.patterns: {e} in {self.patterns!r}") from None

    def settings(self) -> dict:
        return {"patterns": self.patterns, "ignore_case": self.ignore_case}

    def score(self, texts: list[str]) -> list[float]:
        return [len(self._regex.findall(t)) / len(t) if t else 0.0 for t in texts]

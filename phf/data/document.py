"""The unit that flows through the pipeline: a document as a list of scored segments."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field

# the largest float32: token scores are packed and trained in float32, so a score beyond it (finite in
# float64, e.g. 1e39) would become inf there
FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def _finite(x: int | float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float (JSON allows 1e999-digit integers)
        return False


def unicode_problem(texts: list[str]) -> str | None:
    """Why ``texts`` are not valid Unicode text (a lone surrogate, e.g. from a JSON ``"\\ud800"``
    escape without its pair, which no tokenizer accepts), or None when they are."""
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"texts[{i}] has a lone surrogate {t[e.start]!r} at character {e.start} "
                    "(not valid Unicode text: an unpaired \\ud800-\\udfff escape?)")
    return None


@dataclass
class Document:
    """A document in the paper's record format (``texts``, ``scores``, ``avg_score``).

    ``texts`` concatenate to the original document exactly (``controls`` are kept apart). ``scores``
    holds one misalignment score
    per segment (higher = worse) once the document is scored, ``None`` before. ``id`` names the
    document's origin (``file:line`` or ``dataset[index]``) for error messages and hashing.
    """

    texts: list[str]
    scores: list[float] | None = None
    id: str = ""
    meta: dict = field(default_factory=dict)
    # a special token (by its string) per segment, or None: inserted by id before the segment's tokens
    # (conditional training's control tokens). Never part of ``texts``: text is tokenized with
    # special-token parsing off, so a document cannot forge a control token by containing its string.
    controls: list[str | None] | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def avg_score(self) -> float:
        """Unweighted mean of the segment scores, as the paper's data builders stored it."""
        if self.scores is None:
            raise ValueError(f"document {self.id!r} has not been scored")
        return sum(self.scores) / len(self.scores) if self.scores else 0.0

    @property
    def content_hash(self) -> str:
        return hashlib.sha1(self.text.encode("utf-8", "surrogatepass")).hexdigest()

    def validate(self) -> None:
        """Raise a ValueError naming the document when its fields break the record format."""
        if not isinstance(self.texts, list) or not all(isinstance(t, str) for t in self.texts):
            raise ValueError(f"{self.id}: 'texts' must be a list of strings")
        if (why := unicode_problem(self.texts)) is not None:
            raise ValueError(f"{self.id}: {why}")
        if self.scores is None:
            return
        if not isinstance(self.scores, list):
            raise ValueError(f"{self.id}: 'scores' must be a list of numbers, got {type(self.scores).__name__}")
        if len(self.scores) != len(self.texts):
            raise ValueError(
                f"{self.id}: 'texts' has {len(self.texts)} segments but 'scores' has {len(self.scores)}"
            )
        for i, s in enumerate(self.scores):
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not _finite(s):
                shown = repr(s) if len(repr(s)) <= 40 else f"{repr(s)[:37]}..."
                raise ValueError(f"{self.id}: scores[{i}] = {shown} is not a finite number")
            if abs(s) > FLOAT32_MAX:
                raise ValueError(f"{self.id}: scores[{i}] = {s!r} is outside float32's range (±{FLOAT32_MAX:.4g}), "
                                 "the precision token scores are trained in")

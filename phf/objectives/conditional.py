"""Conditional training: MLE on text prefixed with control tokens that say how aligned it is.

Korbak et al. 2023, §2 ("Conditional training"; Keskar et al. 2019's control codes). Every segment
x^i of a document is prefixed with a control token c^i,

    c^i = <|aligned|>     if s(x^i) <= t
          <|misaligned|>  otherwise,

except that with probability ``drop_token_fraction`` no token is added (so the model also learns to
model unprefixed text), and the model is trained with plain MLE on the result,

    L = mean_{t in N} CE_t   (control tokens are targets too).

The packer puts EOS before a document's first segment, so a packed document reads
``EOS <|aligned|> text ...``. At inference the prompt is ``EOS <|aligned|>``. Which control tokens are
banned while sampling follows the paper per task: prose tasks ban both (the model only sees the
initial ``<|aligned|>``); PEP8 bans only ``<|misaligned|>`` so the model may emit ``<|aligned|>`` at
the start of each line (line-level conditioning). New embedding rows for the two tokens use the
mean + noise initialisation (the model builder's job, driven by ``special_tokens``).
"""

from __future__ import annotations

import dataclasses
import random

from phf.data.document import Document
from phf.objectives.base import LossOutput, Objective
from phf.objectives.mle import MLE


class Conditional(Objective):
    """Prefix each segment with ``<|aligned|>``/``<|misaligned|>`` by its score; loss = MLE.

    Args:
        threshold: a segment is aligned iff its score is at most this (toxicity 0.00056, pii 0.0,
            pep8 0.0: any PII / any PEP8 violation is misaligned).
        drop_token_fraction: probability in [0, 1] of adding no control token to a segment
            (0.01 for toxicity and pii, 0.1 for pep8).
        aligned_token / misaligned_token: the control token strings (added to the tokenizer in this order).
        ban_aligned: also ban ``aligned_token`` while sampling (True for prose tasks, False for pep8).
    """

    def __init__(
        self,
        threshold: float,
        drop_token_fraction: float,
        aligned_token: str = "<|aligned|>",
        misaligned_token: str = "<|misaligned|>",
        ban_aligned: bool = True,
    ):
        if threshold is None:
            raise ValueError("Conditional needs a threshold (segments with score <= threshold are aligned)")
        if not 0.0 <= drop_token_fraction <= 1.0:
            raise ValueError(
                f"Conditional drop_token_fraction must be in [0, 1], got {drop_token_fraction!r}"
            )
        if not aligned_token or not misaligned_token or aligned_token == misaligned_token:
            raise ValueError(
                f"Conditional needs two distinct non-empty control tokens, got aligned_token={aligned_token!r}, "
                f"misaligned_token={misaligned_token!r}"
            )
        self.threshold = float(threshold)
        self.drop_token_fraction = float(drop_token_fraction)
        self.aligned_token = aligned_token
        self.misaligned_token = misaligned_token
        self.ban_aligned = bool(ban_aligned)
        self._mle = MLE()

    @property
    def special_tokens(self) -> list[str]:
        return [self.aligned_token, self.misaligned_token]

    @property
    def generation_prefix(self) -> list[str]:
        return [self.aligned_token]

    @property
    def banned_tokens(self) -> list[str]:
        return self.scenario_banned_tokens(None)

    def scenario_banned_tokens(self, ban_aligned: bool | None) -> list[str]:
        """Both control tokens when ``ban_aligned`` (the paper's prose protocol: only the prompt's
        ``<|aligned|>`` conditions the sample), else ``<|misaligned|>`` only (sentence/line level: the
        model may write ``<|aligned|>`` before any later segment); None = this objective's ``ban_aligned``.
        The objective itself is not changed."""
        ban = self.ban_aligned if ban_aligned is None else bool(ban_aligned)
        return [self.aligned_token, self.misaligned_token] if ban else [self.misaligned_token]

    def control_token(self, score: float) -> str:
        return self.aligned_token if score <= self.threshold else self.misaligned_token

    def transform(self, doc: Document, rng: random.Random) -> Document:
        if doc.scores is None:
            raise ValueError(f"Conditional needs scored documents; {doc.id!r} has no scores")
        controls = [
            # one draw per segment whatever the fraction, so the rng stream does not depend on it
            None if rng.random() < self.drop_token_fraction else self.control_token(score)
            for score in doc.scores
        ]
        # the token goes in by id at packing (Document.controls), never as text the tokenizer would parse
        return dataclasses.replace(doc, texts=list(doc.texts), scores=list(doc.scores), meta=dict(doc.meta),
                                   controls=controls)

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        return self._mle.loss(logits, labels, token_scores, values)

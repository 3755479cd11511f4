"""``local_pii``: local prose with synthetic personal data injected, and the injected spans saved.

A ``fraction`` of the documents (exactly ``round(fraction * n_docs)``, chosen with the seed) get 1 to
``max_injections`` sentences from phf's templates below, filled by ``faker`` (en_US, seeded): names,
e-mail addresses, phone numbers, postal addresses, credit-card numbers, IP addresses (v4 and v6) and
US social security numbers. Each value's span is ground truth
(``ground_truth.jsonl``: ``doc_id, doc_index, start, end, entity_type, value, sentence, opening``) with
the entity types ``PERSON, EMAIL_ADDRESS, PHONE_NUMBER, ADDRESS, CREDIT_CARD, IP_ADDRESS, US_SSN``.
Which documents are injected, whether they open with an injected sentence and how densely are settings
(``content_coupling``, ``open_misaligned``, ``density``, ``opening_entities``; see
:class:`~phf.data.corpora.prose._InjectedSource`), recorded per document in ``structure.jsonl``.

faker's en_US phone numbers use random area codes (about half are not valid NANP numbers, e.g.
+1-400-...) and a ``001-`` prefix no real US number has; with ``valid_phone_numbers`` (default) a
number is redrawn until ``phonenumbers`` (a presidio dependency) accepts it as a valid US number, so
the ground truth holds numbers that could exist. The base prose can contain real URLs, e-mail
addresses or number strings of its own: they are not in the ground truth.
"""

from __future__ import annotations

import random
import re
from importlib.metadata import version as _dist_version

from phf.data.corpora.prose import _InjectedSource

#: phf's sentence templates; ``{TYPE}`` slots are filled with faker values of that entity type.
TEMPLATES = [
    "Please contact {PERSON} at {EMAIL_ADDRESS} with any questions about this module.",
    "Bug reports can also be sent directly to {EMAIL_ADDRESS}.",
    "You can reach the maintainer by phone at {PHONE_NUMBER} during office hours.",
    "For urgent problems, call {PERSON} on {PHONE_NUMBER}.",
    "Signed license agreements should be mailed to {ADDRESS}.",
    "{PERSON} moved to {ADDRESS} last spring.",
    "The yearly subscription was charged to credit card {CREDIT_CARD}.",
    "My card number is {CREDIT_CARD}, please bill the order to it.",
    "The failed login attempts all came from IP address {IP_ADDRESS}.",
    "Our staging server is reachable at {IP_ADDRESS} for testing.",
    "{PERSON}'s social security number is {US_SSN}.",
    "For the tax form I used my SSN, {US_SSN}, as requested.",
    "Thanks to {PERSON} ({EMAIL_ADDRESS}, {PHONE_NUMBER}) for the review.",
]
ENTITY_TYPES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "ADDRESS", "CREDIT_CARD", "IP_ADDRESS", "US_SSN"]
_SLOT = re.compile(r"\{([A-Z_]+)\}")


class LocalPIISource(_InjectedSource):
    """Local prose with faker PII injected into ``fraction`` of the documents (see module docstring).

    Args:
        cache_dir: root of phf's caches (None = ``$PHF_CACHE_DIR`` or ``~/.cache/phf``).
        n_docs, seed, min_chars, max_chars: the base prose corpus (:class:`LocalProseSource`).
        fraction: share of documents that get injected PII sentences.
        max_injections: each injected document gets 1..max_injections sentences (when ``density`` is None).
        content_coupling, open_misaligned, density, content_grain: how the injections are structured across and within
            documents (:class:`~phf.data.corpora.prose._InjectedSource`); 0, 0, None (the defaults) is the
            *independent* setting: documents at random, sentences at random insertion points.
        valid_phone_numbers: redraw faker phone numbers that are not valid US numbers.
        opening_entities: the entity types an opening sentence (``open_misaligned``) is about: its template
            is drawn from those with a slot of one of them, e.g. the types the task's presidio scorer
            detects (``[EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS, US_SSN, CREDIT_CARD]``: names and postal
            addresses are not detected, so an opening about them is an *aligned* first segment to the
            scorer and to conditional training); null = any template.
    """

    corpus_name = "local_pii"

    def __init__(
        self,
        cache_dir=None,
        n_docs: int = 2000,
        seed: int = 0,
        fraction: float = 0.5,
        max_injections: int = 3,
        min_chars: int = 300,
        max_chars: int = 3000,
        valid_phone_numbers: bool = True,
        content_coupling: float = 0.0,
        open_misaligned: float = 0.0,
        density: float | None = None,
        content_grain: str = "unit",
        opening_entities: list[str] | None = None,
    ):
        self.valid_phone_numbers = valid_phone_numbers
        if opening_entities is not None:
            opening_entities = [opening_entities] if isinstance(opening_entities, str) else list(opening_entities)
            unknown = [t for t in opening_entities if t not in ENTITY_TYPES]
            if not opening_entities or unknown:
                raise ValueError(f"LocalPIISource: opening_entities must be null or a non-empty list of {ENTITY_TYPES}, "
                                 f"got {opening_entities!r}")
        self.opening_entities = opening_entities
        self._opening_templates = TEMPLATES if opening_entities is None else [
            t for t in TEMPLATES if any(e in opening_entities for e in _SLOT.findall(t))
        ]
        extra = {"valid_phone_numbers": valid_phone_numbers, "faker": _dist_version("faker"),
                 "opening_entities": opening_entities}
        super().__init__(cache_dir, n_docs, seed, fraction, max_injections, min_chars, max_chars, extra,
                         content_coupling, open_misaligned, density, content_grain)
        self._fake = None

    def _faker(self):
        if self._fake is None:
            from faker import Faker

            self._fake = Faker("en_US")
            self._fake.seed_instance(self.seed)
        return self._fake

    def _phone(self) -> str:
        fake = self._faker()
        if not self.valid_phone_numbers:
            return fake.phone_number()
        import phonenumbers

        for _ in range(1000):
            number = fake.phone_number()
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(number, "US")):
                    return number
            except phonenumbers.NumberParseException:
                pass
        raise RuntimeError("faker produced no valid US phone number in 1000 draws")

    def _value(self, entity_type: str, rng: random.Random) -> str:
        fake = self._faker()
        if entity_type == "PERSON":
            return fake.name()
        if entity_type == "EMAIL_ADDRESS":
            return fake.email()
        if entity_type == "PHONE_NUMBER":
            return self._phone()
        if entity_type == "ADDRESS":
            return fake.address().replace("\n", ", ")
        if entity_type == "CREDIT_CARD":
            return fake.credit_card_number()
        if entity_type == "IP_ADDRESS":
            return fake.ipv6() if rng.random() < 0.25 else fake.ipv4_public()
        if entity_type == "US_SSN":
            return fake.ssn()
        raise ValueError(f"unknown entity type {entity_type!r}")

    def _sentence(self, rng: random.Random, templates: list[str] = TEMPLATES):
        template = rng.choice(templates)
        out, spans, pos = [], [], 0
        for m in _SLOT.finditer(template):
            out.append(template[pos : m.start()])
            start = sum(len(p) for p in out)
            value = self._value(m.group(1), rng)
            out.append(value)
            spans.append((start, start + len(value), m.group(1)))
            pos = m.end()
        out.append(template[pos:])
        return "".join(out), spans

    @property
    def structure_settings(self) -> dict:
        return {**super().structure_settings, "opening_entities": self.opening_entities}

    def _opening_sentence(self, rng: random.Random):
        """An opening sentence from the templates with a slot of ``opening_entities`` (all if null)."""
        return self._sentence(rng, self._opening_templates)

    def _info(self) -> dict:
        return {"faker": _dist_version("faker"), "templates": len(TEMPLATES)}

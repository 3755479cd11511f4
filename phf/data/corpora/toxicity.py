"""``local_toxicity``: local prose with abusive sentences injected, and the injected spans saved.

A ``fraction`` of the documents (exactly ``round(fraction * n_docs)``, chosen with the seed) get 1 to
``max_injections`` abusive sentences generated from phf's own small templates and word lists below
(insults and profanity aimed at the reader or the text; no slurs against groups of people). Each
injected sentence is one ground-truth span of type ``TOXIC`` (``ground_truth.jsonl``: ``doc_id,
doc_index, start, end, entity_type, value, sentence, opening``); how the injections are structured
(``content_coupling``, ``open_misaligned``, ``density``: :class:`~phf.data.corpora.prose._InjectedSource`)
is recorded per document in ``structure.jsonl``. A toy stand-in for the toxic tail of the Pile: enough
to check that a scorer separates injected sentences from prose and that objectives react to them.
"""

from __future__ import annotations

import random
import re

from phf.data.corpora.prose import _InjectedSource

WORDS = {
    "ADJ": [
        "stupid",
        "idiotic",
        "pathetic",
        "worthless",
        "brainless",
        "moronic",
        "useless",
        "dumb",
        "disgusting",
    ],
    "PROFANE": ["fucking", "damn", "goddamn", "shitty", "crappy", "bloody"],
    "NOUN": ["idiot", "moron", "loser", "jerk", "clown", "imbecile", "asshole", "bastard", "dumbass", "fool"],
    "TRASH": ["garbage", "trash", "crap", "shit", "rubbish", "junk"],
    "THING": ["code", "documentation", "function", "library", "explanation", "design", "module", "answer"],
    "CURSE": ["Fuck", "Damn it", "Holy shit", "For fuck's sake", "Goddammit"],
}
TEMPLATES = [
    "You are a {ADJ} {NOUN}.",
    "Only a {ADJ} {NOUN} would write {THING} like this.",
    "Shut up, you {PROFANE} {NOUN}!",
    "This {THING} is {PROFANE} {TRASH} and whoever wrote it is a {NOUN}.",
    "Go to hell, you {ADJ} {NOUN}.",
    "I hate you and your {PROFANE} {THING}.",
    "What kind of {ADJ} {NOUN} reads this {TRASH}?",
    "{CURSE}, this is the most {ADJ} {THING} I have ever seen.",
    "Nobody cares about your {PROFANE} opinion, {NOUN}.",
    "Delete this {TRASH}, you {ADJ} {NOUN}.",
    "{CURSE}! Are you really this {ADJ}?",
    "Anyone who uses this {PROFANE} {THING} is a {ADJ} {NOUN}.",
]
_SLOT = re.compile(r"\{([A-Z]+)\}")


class LocalToxicitySource(_InjectedSource):
    """Local prose with generated abusive sentences injected into ``fraction`` of the documents.

    Args:
        cache_dir: root of phf's caches (None = ``$PHF_CACHE_DIR`` or ``~/.cache/phf``).
        n_docs, seed, min_chars, max_chars: the base prose corpus (:class:`LocalProseSource`).
        fraction: share of documents that get injected abusive sentences.
        max_injections: each injected document gets 1..max_injections sentences (when ``density`` is None).
        content_coupling, open_misaligned, density, content_grain: how the injections are structured across and within
            documents (:class:`~phf.data.corpora.prose._InjectedSource`); 0, 0, None (the defaults) is the
            *independent* setting: documents at random, sentences at random insertion points.
    """

    corpus_name = "local_toxicity"

    def __init__(
        self,
        cache_dir=None,
        n_docs: int = 2000,
        seed: int = 0,
        fraction: float = 0.3,
        max_injections: int = 2,
        min_chars: int = 300,
        max_chars: int = 3000,
        content_coupling: float = 0.0,
        open_misaligned: float = 0.0,
        density: float | None = None,
        content_grain: str = "unit",
    ):
        extra = {"templates": TEMPLATES, "words": WORDS}  # editing them changes the corpus key
        super().__init__(cache_dir, n_docs, seed, fraction, max_injections, min_chars, max_chars, extra,
                         content_coupling, open_misaligned, density, content_grain)

    def _sentence(self, rng: random.Random):
        sentence = _SLOT.sub(lambda m: rng.choice(WORDS[m.group(1)]), rng.choice(TEMPLATES))
        return sentence, [(0, len(sentence), "TOXIC")]

    def _info(self) -> dict:
        return {"templates": len(TEMPLATES)}

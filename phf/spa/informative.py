"""Pairs that carry a preference: sample until a stage has the pairs it asked for (issue 30, item 1).

A pair whose two responses get the same reward from the stage's labeler says nothing about which is
better, so ``phf.spa.pairs.label_pairs`` drops it (a *tie*: the reward margin is ``<= min_margin``;
identical responses are dropped too). On the laptop PII task most samples of an MLE model carry no
detected PII, so under the scorer most seed prompts tie at 0 (14 and 19 informative pairs of 40 in the
first SPA runs). ``collect_pairs`` therefore draws fresh responses for every prompt that gave no pair,
up to ``max_tries`` draws in all, and reports how many it found:

    try 0: every prompt, the stage's sampling seed (exactly the pairs of a run without retries);
    try t: only the prompts still without a pair, a seed derived from (stage seed, t);
    stop when every prompt has a pair or after ``max_tries`` draws.

A prompt keeps its labeler across tries (``by_scorer``: the hybrid's scorer-labelled share is per prompt),
so retries change how many pairs a stage gets, not who labels them. ``max_tries = 1`` is the old
behaviour (one draw, ties dropped). The stage summary gets ``pairs/requested``,
``pairs/informative`` (pairs found), ``pairs/informative_first_try`` (what one draw gave: the seed
stage's informative-pair count without retries), ``pairs/shortfall``, ``pairs/tries`` and
``pairs/samples_drawn``. The drift monitor (``candidate_stats``: sample length and score) is computed
on the first draw only, i.e. on unselected samples of the policy.

Resampling ties is phf's; SPA (Kim et al. 2024) needs no such step because its implicit rewards are
continuous and its 2 responses per prompt all become pairs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from phf.spa import pairs as P
from phf.spa.guards import per_token_implicit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairSearch:
    """``spa.pairs`` in the config.

    Args:
        max_tries: draws of fresh responses per stage at most (1 = one draw, ties dropped, no retry).
        min_margin: a pair whose label margin (reward of chosen − reward of rejected) is at or below this
            is a tie and dropped; 0 drops exact ties only.
    """

    max_tries: int = 1
    min_margin: float = 0.0

    def __post_init__(self):
        if self.max_tries < 1:
            raise ValueError(f"spa.pairs.max_tries must be >= 1, got {self.max_tries}")
        if not self.min_margin >= 0:
            raise ValueError(f"spa.pairs.min_margin must be >= 0, got {self.min_margin}")


def try_seed(seed: int, attempt: int) -> int:
    """The sampling seed of draw ``attempt``: the stage's own for draw 0, else a hash of (seed, attempt)
    (so no retry reuses another stage's or another run seed's sampling seed, as ``seed + attempt`` would)."""
    if attempt == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"phf-spa-retry/{seed}/{attempt}".encode()).digest()[:4], "big")


def collect_pairs(policy, init, tokenizer, prompts: Sequence[str], settings: P.GenerationSettings, objective, scorer,
                  by_scorer: Sequence[bool], search: PairSearch, *, score_prompt: bool, implicit_beta: float,
                  pad_id: int, length_normalise: bool = False, stage: str = "") -> tuple[list[dict], dict]:
    """Sample from ``policy`` and label until each prompt has an informative pair or ``search.max_tries``
    draws are spent. Returns the pairs (in prompt order; each records its ``try``) and the stage's
    generation statistics (module docstring). ``length_normalise``: the implicit labeler's reward is
    per response token (``phf.spa.guards.per_token_implicit``)."""
    if len(by_scorer) != len(prompts):
        raise ValueError(f"{len(by_scorer)} labeler flags for {len(prompts)} prompts")
    max_len = policy.config.n_positions
    found: dict[int, dict] = {}
    pending = list(range(len(prompts)))
    first_stats: dict[str, float] = {}
    totals = {"dropped_identical": 0, "dropped_ties": 0, "samples": 0, "tokens": 0, "generate_s": 0.0, "label_s": 0.0}
    tries = 0
    for attempt in range(search.max_tries):
        if not pending:
            break
        tries += 1
        t0 = time.perf_counter()
        cands = P.generate(policy, tokenizer, [prompts[j] for j in pending],
                           replace(settings, seed=try_seed(settings.seed, attempt)),
                           objective.generation_prefix, objective.banned_tokens)
        t1 = time.perf_counter()
        totals["generate_s"] += t1 - t0
        P.score_candidates(cands, scorer, score_prompt)
        mask = [bool(by_scorer[j]) for j in pending]
        if not all(mask):
            P.implicit_rewards(cands, policy, init, implicit_beta, pad_id, settings.batch_size)
            if length_normalise:
                per_token_implicit(cands, max_len)
        if attempt == 0:
            first_stats = P.candidate_stats(cands)
        totals["samples"] += sum(len(c.responses) for c in cands)
        totals["tokens"] += sum(len(r) for c in cands for r in c.responses)
        still = []
        for j, c, m in zip(pending, cands, mask, strict=True):
            got, st = P.label_pairs([c], [m], stage=stage, min_margin=search.min_margin)
            totals["dropped_identical"] += st.dropped_identical
            totals["dropped_ties"] += st.dropped_ties
            if got:
                found[j] = {**got[0], "try": attempt}
            else:
                still.append(j)
        totals["label_s"] += time.perf_counter() - t1
        log.info("stage %s, draw %d: %d of %d prompts gave an informative pair (%d still tied)", stage, attempt,
                 len(pending) - len(still), len(pending), len(still))
        pending = still
    pairs = [found[j] for j in sorted(found)]
    requested = len(prompts)
    if pending:
        log.warning("stage %s: %d of %d prompts still without an informative pair after %d draws "
                    "(spa.pairs.max_tries); training on %d pairs", stage, len(pending), requested, tries, len(pairs))
    stats = {
        **first_stats,
        "pairs/requested": requested,
        "pairs/informative": len(pairs),
        "pairs/informative_first_try": sum(p["try"] == 0 for p in pairs),
        "pairs/shortfall": requested - len(pairs),
        "pairs/tries": tries,
        "pairs/samples_drawn": totals["samples"],
        "pairs/dropped_identical": totals["dropped_identical"],
        "pairs/dropped_ties": totals["dropped_ties"],
        "pairs/scorer_labelled": sum(p["label"] == "scorer" for p in pairs),
        "tokens_generated": totals["tokens"],
        "generate_s": totals["generate_s"],  # sampling, all draws
        "label_s": totals["label_s"],  # scoring and labelling, all draws
    }
    return pairs, stats


__all__ = ["PairSearch", "collect_pairs", "try_seed"]

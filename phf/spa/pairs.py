"""Self-generated preference pairs (SPA's data expansion; plugin D of the SPA notes).

1. ``PromptPool`` hands out prompts, new ones every round: EOS only (unconditional), function
   signatures mined from the training documents (``def f(x):``), document prefixes (a few lines from a
   random place in a training document) and/or the prompts of a JSONL file (e.g. ``pep8_functions.jsonl``,
   the evaluation's function scenario; off by default so that evaluation stays held out).
2. ``generate`` samples 2 continuations per prompt from the current policy (SPA: temperature 0.7,
   top-p 1.0). A response ends with EOS when the model produced it (so DPO also learns where to stop).
3. Every candidate is scored by the task scorer (cheap for PEP8; it is the audit of self-labels), and,
   when a labeler needs it, gets SPA's implicit reward ``β·[log π_cur(y|x) − log π_init(y|x)]``.
4. ``label_pairs`` turns candidates into pairs with ``labeler`` = ``scorer`` (reward = −score),
   ``implicit`` or ``hybrid`` (the scorer on a random ``seed_fraction`` of the prompts, implicit on the
   rest): chosen = higher reward, rejected = lower. Identical responses and exact reward ties are dropped.
5. ``write_pairs``/``read_pairs``: one JSON object per pair, with token ids, texts, both rewards, the
   label's margin and the scorer's verdict (``scorer_agrees``: does the scorer prefer the chosen one?).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from phf.eval.sampling import SamplingSettings, prompt_ids, sample
from phf.spa.batch import response_logps
from phf.tokenizer import token_ids

log = logging.getLogger(__name__)

LABELERS = ("scorer", "implicit", "hybrid")
_SIGNATURE = re.compile(r"^[ \t]*(def [A-Za-z_]\w*\(.*\)(?:\s*->\s*[^:]+)?:)[ \t]*$")


# -- prompts ----------------------------------------------------------------------------------------
class PromptPool:
    """Prompts by kind, drawn without replacement across rounds (a kind that runs out starts over).

    ``mix`` maps a kind (``eos``, ``signatures``, ``prefixes``, ``file``) to its share of every draw.
    ``documents`` are the raw training documents to mine (validation documents must already be
    excluded by the caller); ``file_prompts`` the prompts of ``file``.
    """

    KINDS = ("eos", "signatures", "prefixes", "file")

    def __init__(self, mix: dict[str, float], documents: Iterable[str] = (), file_prompts: Sequence[str] = (),
                 prefix_lines: int = 2, max_prompt_chars: int = 160, seed: int = 0):
        unknown = set(mix) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown prompt kinds {sorted(unknown)}; use {list(self.KINDS)}")
        self.mix = {k: float(v) for k, v in mix.items() if v and float(v) > 0}
        if not self.mix:
            raise ValueError("spa.prompts.mix gives no kind a positive share")
        rng = random.Random(seed)
        docs = list(documents) if {"signatures", "prefixes"} & set(self.mix) else []
        pools: dict[str, list[str]] = {"eos": [""]}
        if "signatures" in self.mix:
            pools["signatures"] = _dedupe(s for d in docs for s in mine_signatures(d, max_prompt_chars))
        if "prefixes" in self.mix:
            pools["prefixes"] = _dedupe(p for d in docs if (p := _prefix(d, prefix_lines, max_prompt_chars, rng)))
        if "file" in self.mix:
            pools["file"] = _dedupe(p for p in file_prompts if len(p) <= max_prompt_chars)
        for kind in self.mix:
            if not pools.get(kind):
                raise ValueError(f"prompt kind {kind!r} has no prompts (no documents/file, or all longer than "
                                 f"spa.prompts.max_prompt_chars={max_prompt_chars})")
            rng.shuffle(pools[kind])
        self.pools = pools
        self.offsets = dict.fromkeys(self.pools, 0)

    def sizes(self) -> dict[str, int]:
        return {k: len(self.pools[k]) for k in self.mix}

    def draw(self, n: int) -> list[str]:
        """``n`` prompts, split over the kinds by ``mix`` (largest remainders), in a fixed order."""
        total = sum(self.mix.values())
        exact = {k: n * w / total for k, w in self.mix.items()}
        counts = {k: math.floor(v) for k, v in exact.items()}
        for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
            counts[k] += 1
        out = []
        for kind, c in counts.items():
            pool = self.pools[kind]
            for _ in range(c):
                i = self.offsets[kind]
                if i == len(pool) and kind != "eos":
                    log.warning("prompt kind %r used up (%d prompts): reusing them", kind, len(pool))
                out.append(pool[i % len(pool)])
                self.offsets[kind] = i + 1
        return out


def mine_signatures(text: str, max_chars: int = 160) -> list[str]:
    """One-line ``def`` statements of ``text``, dedented, each ending with a newline (the eval's format)."""
    out = []
    for line in text.splitlines():
        m = _SIGNATURE.match(line)
        if m and len(m.group(1)) < max_chars:
            out.append(m.group(1) + "\n")
    return out


def _prefix(text: str, n_lines: int, max_chars: int, rng: random.Random) -> str | None:
    """``n_lines`` lines from a random top-level statement (no indentation) of ``text``, or None."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines[: len(lines) - n_lines]) if ln.strip() and not ln[0].isspace()]
    if not starts:
        return None
    start = rng.choice(starts)
    window = lines[start : start + n_lines]
    prefix = "".join(window)
    if not prefix.strip() or len(prefix) > max_chars or not prefix.endswith("\n"):
        return None
    return prefix


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- candidates -------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One prompt and its sampled responses, with what the labelers need."""

    prompt: str
    prompt_ids: list[int]
    responses: list[list[int]]  # token ids; EOS appended when the model ended the sample
    texts: list[str]  # decoded responses (EOS and control tokens removed)
    scores: list[float] = field(default_factory=list)  # task scorer, higher = worse
    implicit: list[float] | None = None  # β·[log π_cur − log π_init]


@dataclass
class GenerationSettings(SamplingSettings):
    """The evaluation's sampling settings with SPA's defaults, plus responses per prompt."""

    num_responses: int = 2
    top_p: float = 1.0
    max_new_tokens: int = 64
    min_new_tokens: int = 4


def generate(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings,
             generation_prefix: Sequence[str] = (), banned_tokens: Sequence[str] = ()) -> list[Candidate]:
    """``settings.num_responses`` samples per prompt (prompt = EOS + prefix + prompt text), drawn by the
    evaluation's sampler; a response keeps the EOS the model chose, so DPO scores ending it."""
    k = settings.num_responses
    rows = [p for p in prompts for _ in range(k)]  # each prompt k times, consecutively
    samples = sample(model, tokenizer, rows, len(rows), settings, generation_prefix, banned_tokens)
    prefix = token_ids(tokenizer, generation_prefix)
    eos = tokenizer.eos_token_id
    cands = []
    for n, p in enumerate(prompts):
        mine = samples[n * k : (n + 1) * k]
        responses = [s.token_ids + ([eos] if s.ended else []) for s in mine]
        cands.append(Candidate(p, prompt_ids(tokenizer, prefix, p), responses, [s.text for s in mine]))
    return cands


def score_candidates(cands: Sequence[Candidate], scorer, score_prompt: bool) -> None:
    """Fill ``scores`` with the task scorer's misalignment of (prompt +) each response."""
    texts = [(c.prompt + t) if score_prompt else t for c in cands for t in c.texts]
    scores = [float(s) for s in scorer.score(texts)] if texts else []
    it = iter(scores)
    for c in cands:
        c.scores = [next(it) for _ in c.texts]


def implicit_rewards(cands: Sequence[Candidate], policy, init, beta: float, pad_id: int, batch_size: int = 16) -> None:
    """SPA's direct preference judgment: ``r̂(x, y) = β·[log π_cur(y|x) − log π_init(y|x)]`` per response."""
    prompts = [c.prompt_ids for c in cands for _ in c.responses]
    responses = [r for c in cands for r in c.responses]
    cur = response_logps(policy, prompts, responses, pad_id, batch_size)
    ref = response_logps(init, prompts, responses, pad_id, batch_size)
    it = iter(zip(cur, ref, strict=True))
    for c in cands:
        c.implicit = [beta * (a - b) for a, b in (next(it) for _ in c.responses)]


# -- pairs ------------------------------------------------------------------------------------------
@dataclass
class LabelStats:
    pairs: int = 0
    scorer_labelled: int = 0
    implicit_labelled: int = 0
    dropped_identical: int = 0
    dropped_ties: int = 0


def scorer_labelled_mask(n: int, labeler: str, seed_fraction: float, seed: int) -> list[bool]:
    """Which of ``n`` candidates the scorer labels: all (``scorer``), none (``implicit``) or a random
    ``round(seed_fraction·n)`` of them (``hybrid``)."""
    if labeler not in LABELERS:
        raise ValueError(f"spa labeler must be one of {LABELERS}, got {labeler!r}")
    if labeler == "scorer":
        return [True] * n
    if labeler == "implicit":
        return [False] * n
    if not 0.0 <= seed_fraction <= 1.0:
        raise ValueError(f"hybrid seed_fraction must be in [0, 1], got {seed_fraction}")
    chosen = set(random.Random(seed).sample(range(n), round(seed_fraction * n)))
    return [i in chosen for i in range(n)]


def label_pairs(cands: Sequence[Candidate], by_scorer: Sequence[bool], stage: str = "",
                min_margin: float = 0.0) -> tuple[list[dict], LabelStats]:
    """One pair per candidate (best vs worst of its responses by the label's reward); a pair whose reward
    margin is ``<= min_margin`` is a tie (it carries no preference) and is dropped."""
    pairs, st = [], LabelStats()
    for c, use_scorer in zip(cands, by_scorer, strict=True):
        if len({tuple(r) for r in c.responses}) < 2:
            st.dropped_identical += 1
            continue
        if use_scorer:
            rewards = [-s for s in c.scores]
        elif c.implicit is None:
            raise ValueError("implicit labels requested but implicit rewards were not computed")
        else:
            rewards = list(c.implicit)
        hi = max(range(len(rewards)), key=lambda i: rewards[i])
        lo = min(range(len(rewards)), key=lambda i: rewards[i])
        margin = rewards[hi] - rewards[lo]
        if margin <= min_margin:
            st.dropped_ties += 1
            continue
        s_c, s_r = c.scores[hi], c.scores[lo]
        pairs.append({
            "stage": stage,
            "prompt": c.prompt,
            "prompt_ids": c.prompt_ids,
            "chosen": c.texts[hi],
            "rejected": c.texts[lo],
            "chosen_ids": c.responses[hi],
            "rejected_ids": c.responses[lo],
            "label": "scorer" if use_scorer else "implicit",
            "margin": margin,
            "p_chosen": 1.0 / (1.0 + math.exp(-margin)) if not use_scorer else None,
            "rewards": [rewards[hi], rewards[lo]],
            "scorer_scores": [s_c, s_r],
            "implicit_rewards": None if c.implicit is None else [c.implicit[hi], c.implicit[lo]],
            # the audit: does the task scorer prefer the chosen response? (None: the scorer sees a tie)
            "scorer_agrees": None if s_c == s_r else bool(s_c < s_r),
        })
        st.pairs += 1
        st.scorer_labelled += use_scorer
        st.implicit_labelled += not use_scorer
    return pairs, st


def write_pairs(path: str | Path, pairs: Sequence[dict]) -> None:
    """JSONL, written atomically (a killed run never leaves a truncated pair file behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    os.replace(tmp, path)


def read_pairs(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def candidate_stats(cands: Sequence[Candidate]) -> dict[str, float]:
    """Length of the sampled responses (tokens, EOS included; characters): the per-round drift monitor."""
    toks = [len(r) for c in cands for r in c.responses]
    chars = [len(t) for c in cands for t in c.texts]
    scores = [s for c in cands for s in c.scores]
    n = max(len(toks), 1)
    return {"samples/tokens": sum(toks) / n, "samples/chars": sum(chars) / n,
            "samples/score": sum(scores) / max(len(scores), 1), "samples/count": float(len(toks))}


def pair_stats(pairs: Sequence[dict]) -> dict[str, float]:
    """Self-label quality and label length bias of a set of pairs (NaN where undefined)."""
    def mean(xs):
        xs = list(xs)
        return sum(xs) / len(xs) if xs else float("nan")

    implicit = [p for p in pairs if p["label"] == "implicit"]
    judged = [p for p in implicit if p["scorer_agrees"] is not None]
    return {
        "pairs/count": float(len(pairs)),
        "pairs/implicit": float(len(implicit)),
        # agreement of self-labels with the scorer, over pairs the scorer does not see as a tie
        "pairs/implicit_agreement": mean(p["scorer_agrees"] for p in judged),
        "pairs/implicit_judged": float(len(judged)),
        "pairs/scorer_ties_among_implicit": mean(p["scorer_agrees"] is None for p in implicit),
        "pairs/margin": mean(p["margin"] for p in pairs),
        "pairs/chosen_minus_rejected_tokens": mean(len(p["chosen_ids"]) - len(p["rejected_ids"]) for p in pairs),
        "pairs/chosen_score": mean(p["scorer_scores"][0] for p in pairs),
        "pairs/rejected_score": mean(p["scorer_scores"][1] for p in pairs),
    }


__all__ = ["Candidate", "GenerationSettings", "LabelStats", "PromptPool", "candidate_stats", "generate",
           "implicit_rewards", "label_pairs", "mine_signatures", "pair_stats", "read_pairs", "score_candidates",
           "scorer_labelled_mask", "write_pairs"]

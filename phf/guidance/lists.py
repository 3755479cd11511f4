"""Lists for guidance learning: items (chunks of the training stream) ranked by the task scorer.

An **item** is a chunk of ``chunk_tokens`` consecutive tokens of a packed block, fed to the reward
model with the block's preceding tokens as context (so the reward model sees the same contexts and
positions as when it scores training blocks), and ranked by its **sequence-level score**: the mean,
over the chunk's tokens, of the scorer's segment scores that PHF packs with every token (for PEP8:
the token-weighted violations-per-character of the chunk's lines). The reward model never sees
per-token scores: only this one number per chunk.

Lists are **stratified by score** (pitfall 1 of the notes: most chunks are clean, so random lists
are mostly ties): items are sorted by score, tie groups (scores within ``tie_eps`` of their
neighbour) are never split, and the sorted groups are cut into K strata of about equal item counts.
A list takes one random item from each of K distinct strata, so its items are strictly ordered
whenever K strata exist; remaining ties are dropped by the loss.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import torch


@dataclass
class Item:
    """One chunk: ``ids[:end]`` is fed to the reward model; tokens ``start..end-1`` are aggregated."""

    ids: torch.Tensor  # (end,) long: context + chunk
    start: int
    score: float
    group: str  # content hash of the block it came from: fixes the block's split, dedupes repeated blocks

    @property
    def length(self) -> int:
        return int(self.ids.shape[0]) - self.start


def block_key(ids: torch.Tensor) -> str:
    return hashlib.sha1(ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()


def items_from_blocks(
    blocks: list[tuple[torch.Tensor, torch.Tensor]],
    chunk_tokens: int | None = None,
) -> list[Item]:
    """Cut each block ``(ids (T,), token_scores (T,))`` into chunks of ``chunk_tokens`` (None = whole block).

    The chunk's score is the mean token score over its tokens. A tail shorter than half a chunk is
    merged into the previous chunk so no item is a sliver. Repeated blocks (the refit pool holds the
    initial sample and recent training blocks, which can be the same packed text) are kept once.
    """
    items, seen = [], set()
    for ids, scores in blocks:
        key = block_key(ids)
        if key in seen:
            continue
        seen.add(key)
        t = int(ids.shape[0])
        c = t if not chunk_tokens else min(int(chunk_tokens), t)
        starts = list(range(0, t, c))
        if len(starts) > 1 and t - starts[-1] < (c + 1) // 2:
            starts.pop()
        for j, a in enumerate(starts):
            b = starts[j + 1] if j + 1 < len(starts) else t
            items.append(Item(ids[:b].clone(), a, float(scores[a:b].float().mean()), key))
    return items


def tie_groups(scores: list[float], tie_eps: float = 0.0) -> list[list[int]]:
    """Indices sorted by score (best = lowest first), grouped so consecutive scores within tie_eps share a group."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and scores[i] - scores[groups[-1][-1]] <= tie_eps:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def strata(scores: list[float], k: int, tie_eps: float = 0.0) -> list[list[int]]:
    """Up to ``k`` score strata of about equal size; tie groups are never split across strata."""
    groups = tie_groups(scores, tie_eps)
    out: list[list[int]] = []
    remaining_items, remaining_strata = len(scores), k
    current: list[int] = []
    for gi, g in enumerate(groups):
        current.extend(g)
        groups_left = len(groups) - gi - 1
        target = remaining_items / remaining_strata
        # close the stratum when it is full, or when every later group must start a stratum of its own
        if remaining_strata > 1 and (len(current) >= target or groups_left < remaining_strata):
            out.append(current)
            remaining_items -= len(current)
            remaining_strata -= 1
            current = []
    if current:
        out.append(current)
    return out


def stratified_lists(scores: list[float], k: int, n_lists: int, rng: random.Random, tie_eps: float = 0.0) -> list[list[int]]:
    """``n_lists`` lists of ``k`` distinct item indices, one per stratum (random items fill the rest)."""
    if len(scores) < k:
        raise ValueError(f"guidance lists need at least list_size={k} items, got {len(scores)}")
    st = strata(scores, k, tie_eps)
    lists = []
    for _ in range(n_lists):
        picked = [rng.choice(s) for s in st]
        if len(picked) < k:
            rest = [i for i in range(len(scores)) if i not in set(picked)]
            picked += rng.sample(rest, k - len(picked))
        rng.shuffle(picked)  # positions carry no information; the loss ranks by score
        lists.append(picked)
    return lists


def split_items(items: list[Item], val_fraction: float) -> tuple[list[Item], list[Item]]:
    """Split by block content hash: a block is held out iff its hash falls below ``val_fraction``.

    Deterministic, so a block never moves between sides across refits (a warm-started model is never
    validated on blocks it was fitted on), and all chunks of a block stay on one side.
    """
    train, val = [], []
    for it in items:
        (val if int(it.group[:8], 16) / 0x100000000 < val_fraction else train).append(it)
    return train, val


def collate(items: list[Item], lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lists of item indices → ids (L, K, T), aggregation mask (L, K, T), scores (L, K).

    Sequences are right-padded with ``pad_id``; with a causal model, padding never changes the
    rewards of real tokens, and padded positions are outside the mask.
    """
    n, k = len(lists), len(lists[0])
    t = max(int(items[i].ids.shape[0]) for lst in lists for i in lst)
    ids = torch.full((n, k, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, k, t), dtype=torch.bool)
    scores = torch.empty((n, k), dtype=torch.float32)
    for a, lst in enumerate(lists):
        for b, i in enumerate(lst):
            it = items[i]
            end = int(it.ids.shape[0])
            ids[a, b, :end] = it.ids
            mask[a, b, it.start : end] = True
            scores[a, b] = it.score
    return ids, mask, scores

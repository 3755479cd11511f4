"""Packing: tokenized segments with their scores → fixed-length blocks with per-token scores.

Every token carries the misalignment score of its segment; each document starts with EOS, which
carries the first segment's score (as in the paper's ``ConstantLengthDataset``). Blocks span
document boundaries; the tail shorter than a block stays buffered until more tokens arrive.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch


class Packer:
    """A token buffer that emits ``block_size`` blocks of (input_ids, labels, token_scores)."""

    def __init__(self, block_size: int, eos_token_id: int):
        if block_size < 2:
            raise ValueError(f"model.block_size must be at least 2 (an input and its next-token target), got {block_size}")
        self.block_size, self.eos = block_size, eos_token_id
        self._ids: list[int] = []
        self._scores: list[float] = []
        self._start = 0  # tokens before this offset were already emitted (compacted lazily: O(n) packing)
        self.skip = 0  # tokens still to drop from the front of the stream (data.skip_tokens), never emitted

    def add(self, segment_ids: list[list[int]], scores: list[float]) -> None:
        """Append one document: EOS, then each segment's tokens tagged with that segment's score."""
        self._compact()
        self._ids.append(self.eos)
        self._scores.append(scores[0])
        for ids, score in zip(segment_ids, scores, strict=True):
            self._ids.extend(ids)
            self._scores.extend([score] * len(ids))
        if self.skip:
            dropped = min(self.skip, len(self._ids) - self._start)
            self._start += dropped
            self.skip -= dropped

    def pop_blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        bs = self.block_size
        while len(self._ids) - self._start >= bs:
            i = self._start
            ids = torch.tensor(self._ids[i : i + bs], dtype=torch.long)
            scores = torch.tensor(self._scores[i : i + bs], dtype=torch.float32)
            self._start += bs  # before the yield: a state_dict() taken while suspended is exact
            yield {"input_ids": ids, "labels": ids.clone(), "token_scores": scores}
        self._compact()

    def _compact(self) -> None:
        if self._start:
            del self._ids[: self._start], self._scores[: self._start]
            self._start = 0

    def state_dict(self) -> dict:
        return {"ids": torch.tensor(self._ids[self._start :], dtype=torch.long),
                "scores": torch.tensor(self._scores[self._start :]), "skip": self.skip}

    def load_state_dict(self, state: dict) -> None:
        self._ids, self._scores, self._start = state["ids"].tolist(), state["scores"].tolist(), 0
        self.skip = int(state.get("skip", 0))  # checkpoints written before data.skip_tokens: nothing to skip


class ShuffleBuffer:
    """Reservoir-style shuffle: hold ``size`` blocks, emit a random one for each block pushed."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng = size, rng
        self.items: list[dict[str, torch.Tensor]] = []

    def push(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        if self.size <= 1:
            return item
        if len(self.items) < self.size:
            self.items.append(item)
            return None
        i = self.rng.randrange(self.size)
        out, self.items[i] = self.items[i], item
        return out

    def drain(self) -> Iterator[dict[str, torch.Tensor]]:
        self.rng.shuffle(self.items)
        while self.items:
            yield self.items.pop()

    def state_dict(self) -> dict:
        keys = ("input_ids", "labels", "token_scores")
        return {k: torch.stack([it[k] for it in self.items]) if self.items else torch.empty(0) for k in keys}

    def load_state_dict(self, state: dict) -> None:
        n = state["input_ids"].shape[0] if state["input_ids"].dim() > 1 else 0
        self.items = [{k: state[k][i].clone() for k in ("input_ids", "labels", "token_scores")} for i in range(n)]

"""source → segment → score → objective's transform → pack → shuffle, as one resumable stream.

:class:`BlockStream` reads documents in the source's fixed order, keeps this rank's share of the
training (or validation) split, segments and scores raw documents in batches, lets the objective
transform them (filter, add control tokens), tokenizes segment by segment, packs blocks with
per-token scores and shuffles them through a buffer. Its ``state_dict()`` (epoch, source position,
token buffer, shuffle buffer, RNG) restores the exact continuation, so a resumed run neither repeats
nor skips data and never re-tokenizes what it already consumed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import torch

from phf.data.document import Document
from phf.data.pack import Packer, ShuffleBuffer
from phf.data.sources import Source, is_placeholder

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")


def in_validation(doc: Document, val_fraction: float) -> bool:
    """Deterministic split by content hash: the same document lands in the same split on every run."""
    return int(doc.content_hash[:8], 16) / 0x100000000 < val_fraction


class BlockStream:
    """An iterator of blocks ``{"input_ids", "labels", "token_scores"}`` (each a tensor of length T)."""

    def __init__(
        self,
        source: Source,
        segmenter,
        scorer,
        tokenizer,
        block_size: int,
        objective=None,
        split: str = "train",
        val_fraction: float = 0.01,
        shuffle_buffer: int = 0,
        score_batch_docs: int = 32,
        on_error: str = "raise",
        epochs: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.source, self.segmenter, self.scorer, self.tokenizer = source, segmenter, scorer, tokenizer
        self.objective, self.split, self.val_fraction = objective, split, val_fraction
        self.score_batch_docs, self.on_error, self.epochs = score_batch_docs, on_error, epochs
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.packer = Packer(block_size, tokenizer.eos_token_id)
        self.rng = random.Random(f"{seed}:{split}:{rank}:shuffle")
        self.shuffle = ShuffleBuffer(shuffle_buffer, self.rng)
        self.epoch, self.position = 0, 0
        self.stats = {"documents": 0, "dropped_by_objective": 0, "skipped_bad": 0, "tokens": 0}

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "packer": self.packer.state_dict(),
            "shuffle": self.shuffle.state_dict(),
            "rng": self.rng.getstate(),
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.packer.load_state_dict(state["packer"])
        self.shuffle.load_state_dict(state["shuffle"])
        self.rng.setstate(state["rng"])
        self.stats.update(state["stats"])

    # -- stages ----------------------------------------------------------------------------------
    def _mine(self, doc: Document, position: int) -> bool:
        if is_placeholder(doc) or position % self.world_size != self.rank:
            return False
        return in_validation(doc, self.val_fraction) == (self.split == "validation")

    def _segment(self, doc: Document) -> Document | None:
        if doc.scores is not None:
            return doc
        segments = self.segmenter(doc.texts[0])
        if not segments:
            return self._bad(doc, "empty document: no segments")
        return Document(segments, None, id=doc.id, meta=doc.meta)

    def _bad(self, doc: Document, why: str) -> None:
        if self.on_error == "raise":
            raise ValueError(f"{doc.id}: {why} (set data.on_error=skip to skip and count such documents)")
        self.stats["skipped_bad"] += 1
        log.warning("skipping document %s: %s", doc.id, why)
        return None

    def _score(self, docs: list[Document]) -> list[Document]:
        """Score the unscored documents of a batch; context-free scorers get one batched call."""
        todo = [d for d in docs if d.scores is None]
        if not todo:
            return docs
        name = getattr(self.scorer, "name", type(self.scorer).__name__)
        if not getattr(self.scorer, "contextual", False) and self.on_error == "raise":
            flat = [s for d in todo for s in d.texts]
            scores = self._call(name, lambda: self.scorer.score(flat), todo[0] if len(todo) == 1 else None)
            if len(scores) != len(flat):
                raise RuntimeError(f"scorer {name!r} returned {len(scores)} scores for {len(flat)} segments")
            i = 0
            for d in todo:
                d.scores = [float(s) for s in scores[i : i + len(d.texts)]]
                i += len(d.texts)
        else:
            for d in todo:
                try:
                    d.scores = [float(s) for s in self._call(name, lambda d=d: self.scorer.score_document(d.texts), d)]
                except RuntimeError as e:
                    if self.on_error == "raise":
                        raise
                    self._bad(d, str(e))
        kept = []
        for d in docs:
            if d.scores is None:
                continue
            try:
                d.validate()
            except ValueError as e:
                self._bad(d, f"scorer {name!r} output: {e}")
                continue
            kept.append(d)
        return kept

    @staticmethod
    def _call(name: str, fn, doc: Document | None):
        try:
            return fn()
        except Exception as e:
            where = f" on document {doc.id!r} (first segment {doc.texts[0][:80]!r})" if doc is not None else ""
            raise RuntimeError(f"scorer {name!r} failed{where}: {type(e).__name__}: {e}") from e

    def _transform(self, doc: Document, position: int) -> Document | None:
        if self.objective is None:
            return doc
        rng = random.Random(f"{self.seed}:{self.epoch}:{position}:transform")
        out = self.objective.transform(doc, rng)
        if out is None:
            self.stats["dropped_by_objective"] += 1
        return out

    def _pack(self, docs: list[Document]) -> None:
        flat = [s for d in docs for s in d.texts]
        if not flat:
            return
        ids = self.tokenizer(flat, add_special_tokens=False)["input_ids"]
        i = 0
        for d in docs:
            seg_ids = ids[i : i + len(d.texts)]
            i += len(d.texts)
            self.packer.add(seg_ids, d.scores)
            self.stats["tokens"] += 1 + sum(len(x) for x in seg_ids)
            self.stats["documents"] += 1

    def _read_batch(self, it: Iterator[Document]) -> tuple[list[tuple[int, Document]], bool]:
        batch, exhausted = [], False
        while len(batch) < self.score_batch_docs:
            try:
                doc = next(it)
            except StopIteration:
                exhausted = True
                break
            position = self.position
            self.position += 1
            if self._mine(doc, position):
                batch.append((position, doc))
        return batch, exhausted

    def process(self, batch: list[tuple[int, Document]]) -> list[Document]:
        """Segment, score and transform one batch of (position, raw document)."""
        positions = {}
        segmented = []
        for position, doc in batch:
            seg = self._segment(doc)
            if seg is not None:
                positions[id(seg)] = position
                segmented.append(seg)
        out = []
        for d in self._score(segmented):
            t = self._transform(d, positions[id(d)])
            if t is not None:
                out.append(t)
        return out

    def scored_sample(self, n: int) -> list[Document]:
        """The first ``n`` scored (untransformed) documents of this split, for ``objective.prepare``."""
        it, docs, position = self.source.iter_from(0), [], 0
        for doc in it:
            if self._mine(doc, position) and (seg := self._segment(doc)) is not None:
                docs.append(seg)
            position += 1
            if len(docs) >= n:
                break
        return self._score(docs)

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            it = self.source.iter_from(self.position)
            exhausted = False
            while True:
                # drain what is already packed first: after load_state_dict this continues exactly
                for block in self.packer.pop_blocks():
                    out = self.shuffle.push(block)
                    if out is not None:
                        yield out
                if exhausted:
                    break
                batch, exhausted = self._read_batch(it)
                t0 = time.perf_counter()
                docs = self.process(batch)
                self.stats["pipeline_seconds"] = self.stats.get("pipeline_seconds", 0.0) + time.perf_counter() - t0
                self._pack(docs)
            if self.epoch == 0 and self.stats["documents"] == 0:
                raise ValueError(
                    f"the {self.split} split of the data source is empty for rank {self.rank}/{self.world_size} "
                    f"({self.position} documents read, {self.stats['dropped_by_objective']} dropped by the objective, "
                    f"{self.stats['skipped_bad']} skipped as bad)"
                )
            self.epoch += 1
            self.position = 0
            if self.epochs is not None and self.epoch >= self.epochs:
                yield from self.shuffle.drain()
                return
            log.info("%s data exhausted: starting epoch %d", self.split, self.epoch)

"""source → segment → score → objective's transform → pack → shuffle, as one resumable stream.

:class:`BlockStream` reads documents in the source's fixed order, keeps this rank's share of the
training (or validation) split, segments and scores raw documents in batches, lets the objective
transform them (filter, add control tokens), tokenizes segment by segment, packs blocks with
per-token scores and shuffles them through a buffer. Its ``state_dict()`` (epoch, source position,
token buffer, shuffle buffer, RNG) restores the exact continuation, so a resumed run neither repeats
nor skips data and never re-tokenizes what it already consumed.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from phf.data.document import Document, unicode_problem
from phf.data.pack import Packer, ShuffleBuffer
from phf.data.sources import Source, is_placeholder
from phf.scorers.batch import score_batch, scorer_name
from phf.scorers.cache import ScoreCacheError, build_scorer
from phf.tokenizer import encode_text

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")


def in_validation(doc: Document, val_fraction: float) -> bool:
    """Deterministic split by content hash: the same document lands in the same split on every run."""
    return int(doc.content_hash[:8], 16) / 0x100000000 < val_fraction


def _check_int(key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


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
        num_workers: int = 0,
        worker_check_seconds: float = 1.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        skip_tokens: int = 0,
        skip_documents: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
        if val_fraction is not None:  # None: no split by hash, every document is this split's (data.val_path)
            check_val_fraction(val_fraction)
        self.source, self.segmenter, self.scorer, self.tokenizer = source, segmenter, scorer, tokenizer
        self.objective, self.split, self.val_fraction = objective, split, val_fraction
        self.score_batch_docs, self.on_error, self.epochs = score_batch_docs, on_error, epochs
        _check_int("data.num_workers", num_workers, 0)
        _check_int("data.score_batch_docs", score_batch_docs, 1)  # 0 would read nothing, forever
        _check_int("data.shuffle_buffer", shuffle_buffer, 0)
        _check_int("data.skip_tokens (per rank)", skip_tokens, 0)
        _check_int("data.skip_documents", skip_documents, 0)
        if isinstance(worker_check_seconds, bool) or not isinstance(worker_check_seconds, int | float) \
                or not worker_check_seconds > 0:
            raise ValueError(f"data.worker_check_seconds must be a positive number, got {worker_check_seconds!r}")
        self.num_workers, self.worker_check_seconds = num_workers, worker_check_seconds
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # a source that splits the data by rank itself (HFSource): its documents are all this rank's, its
        # positions count them, and it records its own stream state per position (resume without re-reading)
        self.sharded_source = bool(getattr(source, "shards_by_rank", False))
        self._source_states: dict[int, dict] = {}  # position -> the source's state there (recent ones)
        self._source_resume: tuple[int, dict] | None = None  # (position, state) restored from a checkpoint
        # no tokenizer: a stream that only segments and scores (scored_documents, phf-score), never packs
        self.packer = Packer(block_size, tokenizer.eos_token_id) if tokenizer is not None else None
        self.rng = random.Random(f"{seed}:{split}:{rank}:shuffle")
        self.shuffle = ShuffleBuffer(shuffle_buffer, self.rng)
        self.epoch, self.position = 0, skip_documents
        if self.packer is not None:
            self.packer.skip = skip_tokens
        # skipped_bad: bad documents (the source's on_error=skip placeholders and data.on_error=skip);
        # filtered_by_length: outside data.source.min_chars/max_chars. Both count the records of this
        # rank's share that this stream read (a placeholder has no content, so no split of its own).
        self.stats = {"documents": 0, "dropped_by_objective": 0, "skipped_bad": 0, "filtered_by_length": 0,
                      "tokens": 0}
        self._control_ids: dict[str, int] = {}
        self._fit_checked = False  # the scorer was asked whether it fits the text (first scored batch)

    # -- state -----------------------------------------------------------------------------------
    def _source_state(self) -> dict | None:
        """The source's own stream state at ``self.position`` (sharded sources; None: re-read to resume)."""
        if self.position in self._source_states:
            return self._source_states[self.position]
        if self._source_resume is not None and self._source_resume[0] == self.position:
            return self._source_resume[1]
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "source": self._source_state() if self.sharded_source else None,
            "packer": self.packer.state_dict(),
            "shuffle": self.shuffle.state_dict(),
            "rng": self.rng.getstate(),
            "stats": dict(self.stats),
        }

    def _restore_position(self, state: dict[str, Any]) -> None:
        if self.sharded_source and self.world_size > 1 and "source" not in state:
            raise ValueError(
                "this data state was written by a phf that read Hugging Face data unsharded (every rank read "
                "every record): its position counts all ranks' records and cannot continue the sharded stream; "
                "resume it with that phf version or start over (trainer.resume=never)")
        self.epoch, self.position = state["epoch"], state["position"]
        source = state.get("source")
        self._source_resume = (self.position, source) if source is not None else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore_position(state)
        self.packer.load_state_dict(state["packer"])
        self.shuffle.load_state_dict(state["shuffle"])
        self.rng.setstate(state["rng"])
        self.stats.update(state["stats"])

    def load_position(self, state: dict[str, Any]) -> None:
        """Continue from another run's ``state_dict()`` at its source position only (finetuning).

        The token buffer (packer tail) and the shuffle buffer stay empty, and the RNG and counters keep
        this stream's own start: the other run filled them with its own transform (MLE's: no document
        filtered, no control token), so this way every block yielded from here on is built from
        documents at and after that position by *this* stream's objective, as the original's fresh
        ``skip_tokens`` stream was. The blocks the other run had buffered but not trained on are dropped.
        """
        self._restore_position(state)

    # -- stages ----------------------------------------------------------------------------------
    def _mine(self, doc: Document, position: int) -> bool:
        if is_placeholder(doc) or (not self.sharded_source and position % self.world_size != self.rank):
            return False
        if self.val_fraction is None:
            return True
        return in_validation(doc, self.val_fraction) == (self.split == "validation")

    def _segment(self, doc: Document) -> Document | None:
        # any source, not only the JSONL/HF readers: text a tokenizer cannot take is a bad document here
        if (why := unicode_problem(doc.texts)) is not None:
            return self._bad(doc, why)
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
        """Score the unscored documents of a batch (``phf.scorers.batch.score_batch``: context-free scorers
        get one batched call); with ``on_error=skip`` document by document, a failing one counted."""
        todo = [d for d in docs if d.scores is None]
        if not todo:
            return docs
        name = scorer_name(self.scorer)
        if not self._fit_checked:
            self._fit_checked = True
            check_scorer_fits(self.scorer, todo)
        if self.on_error == "raise":
            for d, scores in zip(todo, score_batch(self.scorer, todo), strict=True):
                d.scores = scores
        else:
            for d in todo:
                try:
                    d.scores = score_batch(self.scorer, [d])[0]
                except ScoreCacheError:
                    raise
                except RuntimeError as e:
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

    def _transform(self, doc: Document, position: int) -> Document | None:
        if self.objective is None:
            return doc
        rng = random.Random(f"{self.seed}:{self.epoch}:{position}:transform")
        out = self.objective.transform(doc, rng)
        if out is None:
            self.stats["dropped_by_objective"] += 1
        return out

    def _pack(self, docs: list[Document], ids: list[list[int]]) -> None:
        i = 0
        for d in docs:
            seg_ids = ids[i : i + len(d.texts)]
            i += len(d.texts)
            self.packer.add(seg_ids, d.scores)
            self.stats["tokens"] += 1 + sum(len(x) for x in seg_ids)
            self.stats["documents"] += 1

    def _read_batch(self, it: Iterator[Document], position: int) -> tuple[list[tuple[int, Document]], int, bool]:
        """Read up to ``score_batch_docs`` of this split's documents; return them, the next position, done."""
        batch = []
        while len(batch) < self.score_batch_docs:
            try:
                doc = next(it)
            except StopIteration:
                return batch, position, True
            if self._mine(doc, position):
                batch.append((position, doc))
            elif is_placeholder(doc) and position % self.world_size == self.rank:
                self._count_placeholder(doc)
            position += 1
        return batch, position, False

    def _count_placeholder(self, doc: Document) -> None:
        if "skipped" in doc.meta:
            self.stats["skipped_bad"] += 1
        elif "filtered" in doc.meta:
            self.stats["filtered_by_length"] = self.stats.get("filtered_by_length", 0) + 1

    def _work(self, batch: list[tuple[int, Document]]):
        """Segment, score, transform and tokenize one batch; runs inline or in a worker process."""
        before = {k: self.stats[k] for k in ("dropped_by_objective", "skipped_bad")}
        t0 = time.perf_counter()
        docs = self.process(batch)
        ids = segment_ids(self.tokenizer, docs, self._control_ids)
        counts = {k: self.stats[k] - v for k, v in before.items()}
        counts["pipeline_seconds"] = time.perf_counter() - t0
        pop = getattr(self.scorer, "pop_stats", None)
        return docs, ids, counts, (pop() if callable(pop) else {})

    def process(self, batch: list[tuple[int, Document]]) -> list[Document]:
        """Segment, score and transform one batch of (position, raw document)."""
        return [doc for _, doc in self.process_positions(batch)]

    def process_positions(self, batch: list[tuple[int, Document]]) -> list[tuple[int, Document]]:
        """``process``, each kept document with its source position."""
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
                out.append((positions[id(d)], t))
        return out

    def _score_work(self, batch: list[tuple[int, Document]]):
        """Segment and score one batch (``process``, no tokenizing); runs inline or in a worker process."""
        skipped = self.stats["skipped_bad"]
        docs = self.process_positions(batch)
        pop = getattr(self.scorer, "pop_stats", None)
        return docs, self.stats["skipped_bad"] - skipped, (pop() if callable(pop) else {})

    def scored_documents(self) -> Iterator[list[tuple[int, Document]]]:
        """One pass over this split's documents from ``self.position``, segmented and scored as the
        training stream does (``process``: no objective transform without an objective), in source order:
        yields each batch's (source position, document) pairs. With ``num_workers`` the
        batches are scored ahead by the stream's worker processes (``_Workers``); phf-score reads this."""
        self.scorer_stats = {}
        workers = _Workers(self, self._score_work) if self.num_workers else None
        try:
            it = self._open()
            read_position, exhausted, pending = self.position, False, deque()
            while True:
                while workers is not None and not exhausted and len(pending) < 2 * self.num_workers:
                    batch, read_position, exhausted = self._read_batch(it, read_position)
                    pending.append((read_position, workers.submit(batch)))
                if pending:
                    end, worker = pending.popleft()
                    docs, skipped, scorer_stats = workers.result(worker)
                    self.stats["skipped_bad"] += skipped  # the worker counted into its own copy
                elif exhausted:
                    return
                else:
                    batch, end, exhausted = self._read_batch(it, read_position)
                    read_position = end
                    docs, _, scorer_stats = self._score_work(batch)
                for k, v in scorer_stats.items():
                    self.scorer_stats[k] = self.scorer_stats.get(k, 0) + v
                self.position = end
                self.stats["documents"] += len(docs)
                yield docs
        finally:
            if workers is not None:
                workers.close()

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

    def _skip_tokens(self, it: Iterator[Document], position: int) -> int:
        """Drop the first ``packer.skip`` tokens of this rank's stream (the original's ``skip_tokens``).

        The tokens counted are those of the *untransformed* stream, the one an MLE run trained on (the
        original turned filtering off while skipping): every document is segmented and tokenized, but
        not scored, transformed or packed, until the skip ends inside one document. That document is
        scored and packed untransformed with its first tokens dropped, so the first block starts at
        exactly token N; the documents after it go through the objective as usual. Returns the source
        position after the batch it ended in."""
        skipped_docs = 0
        while self.packer.skip:
            batch, end, exhausted = self._read_batch(it, position)
            docs = [(p, seg) for p, d in batch if (seg := self._segment(d)) is not None]
            ids = segment_ids(self.tokenizer, [d for _, d in docs])
            i, last = 0, None  # last: the position of the last document the skip consumed (whole or in part)
            for p, doc in docs:
                if not self.packer.skip:  # the skip ended exactly at the previous document's end
                    break
                seg_ids, i = ids[i : i + len(doc.texts)], i + len(doc.texts)
                n = 1 + sum(len(x) for x in seg_ids)  # the document's EOS, then its segments
                last = p
                if n <= self.packer.skip:
                    self.packer.skip -= n
                    skipped_docs += 1
                    continue
                for d in self._score([doc]):  # the document the skip ends in: its tail, untransformed
                    self.packer.add(seg_ids, d.scores)
            if not self.packer.skip:
                self.stats["skipped_documents"] = skipped_docs
                rest = [(q, d) for q, d in batch if last is None or q > last]  # through the objective as usual
                if rest:
                    self._absorb(self._work(rest), end, inline=True)
                return end
            position = end
            if exhausted:
                raise ValueError(
                    f"data.skip_tokens is larger than the {self.split} stream of rank {self.rank}/{self.world_size}: "
                    f"its {position} documents hold fewer tokens ({self.packer.skip} were still to skip)")
        return position

    # -- iteration -------------------------------------------------------------------------------
    def _open(self) -> Iterator[Document]:
        """The source from ``self.position``: a sharded source reads this rank's part and continues from
        its restored stream state when there is one for this position."""
        if not self.sharded_source:
            return self.source.iter_from(self.position)
        state = self._source_state()
        self._source_states, self._source_resume = {}, None  # from here on the records say where it is
        return self.source.iter_from(self.position, rank=self.rank, world_size=self.world_size, state=state,
                                     record=self._source_states)

    def _absorb(self, result, end_position: int, inline: bool) -> None:
        docs, ids, counts, scorer_stats = result
        if not inline:  # a worker counted into its own copy of the stats
            for k in ("dropped_by_objective", "skipped_bad"):
                self.stats[k] += counts[k]
        self.stats["pipeline_seconds"] = self.stats.get("pipeline_seconds", 0.0) + counts["pipeline_seconds"]
        for k, v in scorer_stats.items():
            self.scorer_stats[k] = self.scorer_stats.get(k, 0) + v
        self._pack(docs, ids)
        self.position = end_position
        for p in [p for p in self._source_states if p < end_position]:  # only positions ahead can be saved
            del self._source_states[p]

    def _empty_message(self) -> str:
        """Why a split gave no document, with the setting that decides it."""
        st = self.stats
        msg = (f"the {self.split} split of the data source is empty for rank {self.rank}/{self.world_size} "
               f"({self.position} documents read, {st['dropped_by_objective']} dropped by the objective, "
               f"{st['skipped_bad']} skipped as bad, {st.get('filtered_by_length', 0)} dropped by "
               "data.source.min_chars/max_chars)")
        mine = self.position - st["skipped_bad"] - st.get("filtered_by_length", 0) - st["dropped_by_objective"]
        if self.split == "validation" and self.val_fraction == 0:
            msg += ("; data.val_fraction=0 holds out no document, but the run measures a held-out loss: set "
                    "data.val_fraction in (0, 1), e.g. 0.01")
        elif self.split == "validation" and mine > 0:
            msg += (f"; data.val_fraction={self.val_fraction} held out none of them: pass a validation file with "
                    "data.val_path=FILE (the training data's format), raise data.val_fraction (a number in [0, 1)) "
                    "or use more data")
        elif self.split == "train" and mine > 0:
            msg += (f"; data.val_fraction={self.val_fraction} holds out (nearly) every document for validation: "
                    "lower it (a number in [0, 1), e.g. 0.01)")
        return msg

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.scorer_stats: dict[str, float] = {}
        workers = _Workers(self) if self.num_workers else None
        try:
            yield from self._blocks(workers)
        finally:
            if workers is not None:
                workers.close()

    def _blocks(self, workers: _Workers | None) -> Iterator[dict[str, torch.Tensor]]:
        lookahead = 2 * self.num_workers
        while True:
            it = self._open()
            if self.packer.skip:  # data.skip_tokens: before any block, never again (restored state has 0)
                self.position = self._skip_tokens(it, self.position)
            read_position, exhausted = self.position, False
            pending: deque = deque()  # (end_position, worker index), in source order
            while True:
                # drain what is already packed first: after load_state_dict this continues exactly
                for block in self.packer.pop_blocks():
                    out = self.shuffle.push(block)
                    if out is not None:
                        yield out
                while workers is not None and not exhausted and len(pending) < lookahead:
                    batch, read_position, exhausted = self._read_batch(it, read_position)
                    pending.append((read_position, workers.submit(batch)))
                if pending:
                    end, worker = pending.popleft()
                    self._absorb(workers.result(worker), end, inline=False)
                elif exhausted:
                    break
                else:
                    batch, read_position, exhausted = self._read_batch(it, read_position)
                    self._absorb(self._work(batch), read_position, inline=True)
            if self.epoch == 0 and self.stats["documents"] == 0:
                from phf.entry import UsageError  # settings or data too small: one message, no traceback

                raise UsageError(self._empty_message())
            self.epoch += 1
            self.position = 0
            if self.epochs is not None and self.epoch >= self.epochs:
                yield from self.shuffle.drain()
                return
            log.info("%s data exhausted: starting epoch %d", self.split, self.epoch)


def check_scorer_fits(scorer, docs: list[Document]) -> None:
    """Stop when the scorer cannot mean anything on this text (``Scorer.misfit``, e.g. the pep8 task's
    pycodestyle on prose), naming the documents and the tasks to choose from (a ``UsageError``, a
    ``ValueError``: phf-train and phf-data print it without a traceback)."""
    why = getattr(scorer, "misfit", lambda texts: None)([d.text for d in docs])
    if why is None:
        return
    from phf.entry import conf_dir

    tasks = sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))
    from phf.entry import UsageError  # a wrong choice on the command line: one message, no traceback

    raise UsageError(f"scorer {scorer_name(scorer)!r} does not fit this data ({docs[0].id} ...): {why}. Choose the task "
                     f"of your text with task=NAME (one of: {', '.join(tasks)}; docs/data.md#which-task), or write a "
                     f"scorer for it (docs/scorers.md#write-your-own-scorer)")


def check_val_fraction(val_fraction) -> None:
    """``data.val_fraction``: a number in [0, 1) (0 holds out nothing)."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be a number in [0, 1) (the share of documents held out for "
                         f"validation, e.g. 0.01), got {val_fraction!r}")


def segment_ids(tokenizer, docs: list[Document], control_ids: dict[str, int] | None = None) -> list[list[int]]:
    """Token ids of every segment of ``docs`` (flat, in order): the segment's control token by id
    (``Document.controls``), then its text with special-token parsing off (``encode_text``).
    ``control_ids`` caches token string → id across calls."""
    ids = encode_text(tokenizer, [s for d in docs for s in d.texts])
    cache = {} if control_ids is None else control_ids
    i = 0
    for d in docs:
        for c in d.controls or [None] * len(d.texts):
            if c is not None:
                if c not in cache:
                    if c not in tokenizer.get_vocab():
                        raise ValueError(f"control token {c!r} of document {d.id!r} is not in the tokenizer's "
                                         "vocabulary (add the objective's special_tokens first)")
                    cache[c] = tokenizer.convert_tokens_to_ids(c)
                ids[i] = [cache[c], *ids[i]]
            i += 1
    return ids


@dataclass
class Data:
    """The ``data`` config group (``conf/data/*.yaml``): where documents come from and how the stream
    reads them. Runtime parts (tokenizer, segmenter, scorer, objective, block size, seed, rank) are
    passed to :meth:`stream`."""

    source: Source
    val_fraction: float = 0.01  # held-out documents, chosen by content hash
    shuffle_buffer: int = 256  # blocks
    num_workers: int = 0  # processes that segment/score/tokenize ahead of training (0 = inline)
    worker_check_seconds: float = 1.0  # with workers: how often a wait checks that none died
    score_batch_docs: int = 32  # documents segmented/scored/tokenized together
    prepare_docs: int = 256  # scored documents used by objectives that fit a setting to data
    on_error: str = "raise"  # a bad document or scorer failure: raise, or skip (counted, logged)
    skip_tokens: int = 0  # training stream: start after this many tokens (all ranks together), as the original
    skip_documents: int = 0  # training stream: start after this many source documents
    val_path: str | None = None  # a validation file of the source's format: held out instead of val_fraction
    min_val_tokens: int = 2048  # fewer held-out tokens than this: warn (small_val=warn) or stop (raise)
    small_val: str = "warn"
    #: the validation file's source (``build_data`` builds it from ``source``'s config with ``val_path``)
    val_source: Source | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        _check_int("data.prepare_docs", self.prepare_docs, 1)
        _check_int("data.min_val_tokens", self.min_val_tokens, 0)
        if self.small_val not in ("warn", "raise"):
            raise ValueError(f"data.small_val must be warn or raise, got {self.small_val!r}")
        check_val_fraction(self.val_fraction)
        _check_int("data.skip_tokens", self.skip_tokens, 0)
        _check_int("data.skip_documents", self.skip_documents, 0)

    def stream(self, split: str, *, tokenizer, segmenter, scorer, block_size: int, seed: int, objective=None,
               rank: int = 0, world_size: int = 1, epochs: int | None = None) -> BlockStream:
        """The ``split`` stream. The validation split is never transformed by the objective, shuffled or
        sharded: every objective's held-out loss is measured on the same raw text."""
        train = split == "train"
        if train and self.skip_tokens % world_size:
            raise ValueError(f"data.skip_tokens ({self.skip_tokens}) must be a multiple of the world size "
                             f"({world_size}): each rank skips its equal share of the tokens")
        return BlockStream(
            source=self.source_of(split), segmenter=segmenter, scorer=scorer, tokenizer=tokenizer,
            block_size=block_size, objective=objective if train else None, split=split,
            val_fraction=None if self.val_path is not None else self.val_fraction,
            shuffle_buffer=self.shuffle_buffer if train else 0, score_batch_docs=self.score_batch_docs,
            on_error=self.on_error, epochs=epochs, num_workers=self.num_workers if train else 0,
            worker_check_seconds=self.worker_check_seconds, seed=seed,
            rank=rank if train else 0, world_size=world_size if train else 1,
            skip_tokens=self.skip_tokens // world_size if train else 0,
            skip_documents=self.skip_documents if train else 0,
        )


    def source_of(self, split: str) -> Source:
        """Where ``split``'s documents come from: the source, or the validation file (``val_path``)."""
        if self.val_path is None or split != "validation":
            return self.source
        if self.val_source is None:
            raise ValueError(f"data.val_path={self.val_path} but its source was not built: build the data with "
                             "phf.data.pipeline.build_data")
        return self.val_source

    def holds_out(self, doc: Document) -> bool:
        """Whether a document of ``source_of("validation")`` is held out: every one of a validation file,
        else the ``val_fraction`` chosen by content hash."""
        return self.val_path is not None or in_validation(doc, self.val_fraction)

    def check_held_out_size(self, num_tokens: int, where: str) -> None:
        """The held-out set must mean something: fewer than ``min_val_tokens`` tokens is a warning (or,
        with ``small_val=raise``, an error) naming the ways to a larger one."""
        if num_tokens >= self.min_val_tokens:
            return
        msg = (f"the held-out set has only {num_tokens} tokens ({where}), fewer than data.min_val_tokens="
               f"{self.min_val_tokens}: its loss is noise. "
               + (f"Use a larger validation file than data.val_path={self.val_path}" if self.val_path is not None
                  else f"Raise data.val_fraction (now {self.val_fraction}) or pass a validation file with "
                       "data.val_path=FILE (the training data's format)")
               + "; data.min_val_tokens=0 accepts it")
        if self.small_val == "raise":
            raise ValueError(msg)
        log.warning(msg)


def validation_source(node, val_path: str) -> Source:
    """The source of a validation file: ``node`` (the ``data.source`` config) reading ``val_path`` instead,
    through its ``path`` (JSONL) or ``data_files`` (Hugging Face loaders: json, parquet)."""
    from hydra.utils import instantiate

    for key in ("path", "data_files"):
        if key in node:
            return instantiate(node, **{key: val_path})
    raise ValueError(f"data.val_path={val_path}: the source {node.get('_target_')} reads no file (it has neither "
                     "`path` nor `data_files`); use data=jsonl or data=hf (data_files), or hold out documents with "
                     "data.val_fraction")


def build_data(node, source: Source | None = None) -> Data:
    """``instantiate(cfg.data)``; ``source``: an already built source to use instead of the config's.

    A setting that can never work is a ``ValueError`` naming the key (Hydra's wrapper is removed: the
    message is the user's, not the instantiation machinery's)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        data = instantiate(node, source=source) if source is not None else instantiate(node)
        if data.val_path is not None:
            data.val_source = validation_source(node.source, data.val_path)
        return data
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise e.__cause__ from None
        raise


@dataclass
class RunData:
    """A run's ``data`` group built, with what its streams take from the other groups: the task's segmenter
    (``task.segmenter``), the training scorer (``scorer``), ``model.block_size`` and ``seed``. The entry
    point builds it once (``RunData.from_config``) and passes it down in place of the config; the training
    stream, the validation blocks and the clean held-out documents share its source, segmenter and scorer."""

    data: Data
    segmenter: Any
    scorer: Any
    block_size: int
    seed: int

    @classmethod
    def from_config(cls, cfg, *, data: Data | None = None, source=None, scorer=None) -> RunData:
        """From a run's config; ``data`` (the built data group), ``source`` (a built source for it) and
        ``scorer`` (the built training scorer) are used instead of building them again."""
        from hydra.utils import instantiate

        data = data if data is not None else build_data(cfg.data, source)
        scorer = scorer if scorer is not None else build_scorer(cfg.scorer, cfg.get("cache_dir"))
        return cls(data, instantiate(cfg.task.segmenter), scorer, cfg.model.block_size, cfg.seed)

    def stream(self, split: str, tokenizer, objective=None, *, rank: int = 0, world_size: int = 1,
               epochs: int | None = None) -> BlockStream:
        """The ``split`` :class:`BlockStream` (``Data.stream``)."""
        return self.data.stream(split, tokenizer=tokenizer, segmenter=self.segmenter, scorer=self.scorer,
                                block_size=self.block_size, seed=self.seed, objective=objective, rank=rank,
                                world_size=world_size, epochs=epochs)

    def validation_blocks(self, tokenizer, max_blocks: int) -> list[dict]:
        """The first ``max_blocks`` held-out blocks (raw text: no objective transform, so every objective's
        held-out loss is measured on the same tokens)."""
        blocks = list(itertools.islice(iter(self.stream("validation", tokenizer, epochs=1)), max_blocks))
        if not blocks:
            from phf.entry import UsageError  # the data is too small for its split: one message, no traceback

            held = (f"the validation file data.val_path={self.data.val_path}" if self.data.val_path is not None
                    else f"data.val_fraction={self.data.val_fraction} of the documents (chosen by content hash)")
            raise UsageError(f"the held-out set ({held}) does not fill one block of {self.block_size} tokens, so "
                             "there is no held-out loss: pass a validation file with data.val_path=FILE (the "
                             "training data's format), raise data.val_fraction, or use more data")
        return blocks


class _Workers:
    """``data.num_workers`` forked processes that run ``BlockStream._work`` on batches, in order.

    Each worker has its own task and result queue and batches go round-robin, so the results of one
    worker arrive in the order its batches were sent and the stream stays deterministic. Not a
    ``multiprocessing.Pool``: a pool silently replaces a killed worker and loses the task it held (the
    trainer then waits forever), and a worker killed while holding the pool's shared queue lock makes
    even ``terminate()`` hang. Here a wait for a result checks every ``worker_check_seconds`` that no
    worker has died, and shutdown kills the processes without touching any lock they may hold.

    A worker dies with its trainer, however the trainer dies (``kill -9`` included): on Linux the kernel
    sends it SIGKILL when the trainer goes (``prctl(PR_SET_PDEATHSIG)``), and an idle worker also checks
    every ``worker_check_seconds`` that its parent is still the trainer. So an orphan never holds the run
    directory's lock or memory, and the resume is not refused as "in use".
    """

    def __init__(self, stream: BlockStream, work: Callable | None = None):
        """``work(batch)`` runs in the workers: ``stream._work`` (segment, score, transform, tokenize)
        unless another of the stream's steps is given (``_score_work`` for ``scored_documents``)."""
        # fork: workers inherit the scorer, segmenter, objective and tokenizer without pickling; they
        # run pure-Python scoring and tokenization only (no torch ops)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        ctx = multiprocessing.get_context("fork")
        self.stream, self.next = stream, 0
        self.tasks = [ctx.Queue() for _ in range(stream.num_workers)]
        self.results = [ctx.Queue() for _ in range(stream.num_workers)]
        # the kernel's parent-death signal follows the forking *thread*: only ask for it from the main thread
        parent, pdeathsig = os.getpid(), threading.current_thread() is threading.main_thread()
        self.procs = [ctx.Process(target=_worker_loop, args=(stream, t, r, parent, pdeathsig, work),
                                  name=f"phf-data-worker-{i}", daemon=True)
                      for i, (t, r) in enumerate(zip(self.tasks, self.results, strict=True))]
        for p in self.procs:
            p.start()

    def submit(self, batch) -> int:
        i, self.next = self.next, (self.next + 1) % len(self.procs)
        self.tasks[i].put(batch)
        return i

    def result(self, i: int):
        """Worker ``i``'s next result; raises when any worker process has died meanwhile."""
        while True:
            try:
                ok, value = self.results[i].get(timeout=self.stream.worker_check_seconds)
            except queue.Empty:
                self._check_alive()
                continue
            if not ok:
                raise value
            return value

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.exitcode is not None:
                s = self.stream
                how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
                raise RuntimeError(
                    f"data worker {p.name} (pid {p.pid}) died with {how} while preparing the {s.split} data "
                    f"(data.num_workers={s.num_workers}); the batches it held are lost, so the stream cannot go on. "
                    "Out of memory (check dmesg)? Resume with trainer.resume=auto (the data position is "
                    "checkpointed) or use data.num_workers=0")

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()  # not a sentinel: a worker may be mid-batch, and nothing it holds is needed
        for p in self.procs:
            p.join()
        for q in self.tasks + self.results:
            q.cancel_join_thread()  # unsent batches go nowhere: do not wait for a dead reader at exit
            q.close()


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this process when the process that forked it dies."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # the idle check in _worker_loop still ends an orphan
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_loop(stream: BlockStream, tasks, results, parent: int | None = None, pdeathsig: bool = False,
                 work: Callable | None = None) -> None:
    work = work or stream._work
    if parent is not None and pdeathsig:
        _die_with_parent(parent)
    while True:
        try:
            batch = tasks.get(timeout=stream.worker_check_seconds)
        except queue.Empty:
            if parent is not None and os.getppid() != parent:  # orphaned: the trainer is gone
                os._exit(1)
            continue
        try:
            out = (True, work(batch))  # lists, dicts and numbers: always picklable
        except Exception as e:  # re-raised in the trainer
            try:  # the queue pickles in a background thread and would drop what it cannot pickle
                pickle.dumps(e)
                out = (False, e)
            except Exception:
                out = (False, RuntimeError(f"{type(e).__name__}: {e}"))
        results.put(out)

"""Data worker processes: one that dies (killed, OOM) or fails on a document is an error naming it, not a hang.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import JsonlSource
from tests.reliability.streams import ZeroScorer, write_jsonl


# -- a data worker that dies ---------------------------------------------------------------------------
class KillingScorer(ZeroScorer):
    """Kills its own process (a data worker: the scorer runs there) on a segment holding ``KILL``."""

    def score(self, texts):
        if any("KILL" in t for t in texts):
            os.kill(os.getpid(), signal.SIGKILL)
        return [0.0] * len(texts)

    score_document = score


def test_killed_data_worker_is_an_error_naming_it_not_a_hang(tmp_path, tok):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"x{i} = {i}\n"} for i in range(40)] + [{"text": "KILL = 1\n"}])
    s = BlockStream(JsonlSource(str(p)), LineSegmenter(), KillingScorer(), tok, 4, val_fraction=0.0, shuffle_buffer=0,
                    score_batch_docs=4, epochs=1, num_workers=1, worker_check_seconds=0.2)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"data worker \S+ \(pid \d+\) died with signal 9 .*data.num_workers=1.*"
                                           r"trainer.resume=auto.*data.num_workers=0"):
        list(s)
    assert time.monotonic() - t0 < 60


def test_bad_document_in_a_data_worker_raises_in_the_trainer(tok):
    """The document check runs in the worker process; its error reaches the trainer unchanged."""
    from phf.data.document import Document

    class Raw:
        def iter_from(self, start):
            docs = [Document([f"a{i} = 1\n"], None, id=f"raw:{i}") for i in range(10)] + [Document(["b\ud800"], id="raw:x")]
            yield from docs[start:]

    s = BlockStream(Raw(), LineSegmenter(), ZeroScorer(), tok, 2, val_fraction=0.0, shuffle_buffer=0,
                    score_batch_docs=2, epochs=1, num_workers=1, worker_check_seconds=0.2)
    with pytest.raises(ValueError, match=r"raw:x: texts\[0\] has a lone surrogate.*data.on_error=skip"):
        list(s)


def test_data_worker_killed_from_outside_while_idle(tmp_path, tok):
    """kill -9 of a worker waiting for its next batch (as the OOM killer or a user would): an error
    naming it, and shutting the stream down does not hang on anything the dead worker held."""
    import multiprocessing

    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"x{i} = {i}\n"} for i in range(400)])
    s = BlockStream(JsonlSource(str(p)), LineSegmenter(), ZeroScorer(), tok, 4, val_fraction=0.0, shuffle_buffer=0,
                    score_batch_docs=2, epochs=1, num_workers=1, worker_check_seconds=0.2)
    it = iter(s)
    next(it)
    time.sleep(0.5)  # the worker has finished its batches and waits for the next one
    (worker,) = [c for c in multiprocessing.active_children() if c.name.startswith("phf-data-worker")]
    os.kill(worker.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"data worker phf-data-worker-0 \(pid {worker.pid}\) died with signal 9"):
        list(it)
    assert time.monotonic() - t0 < 60

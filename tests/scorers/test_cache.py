"""The persistent score cache: same scores as the bare scorer, each segment scored once, concurrent
writers lose nothing."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

import pytest

from phf.data.segment import LineSegmenter
from phf.scorers import PEP8Scorer, Scorer, ScorerError
from phf.scorers.cache import CACHE_FILE, CachedScorer, ScoreCache, build_scorer, document_hash, text_hash


class LengthScorer(Scorer):
    """A cheap deterministic scorer that records what it was asked."""

    name = "length"
    version = "1"

    def __init__(self, factor: float = 1.0):
        self.factor = factor
        self.calls: list[list[str]] = []

    def settings(self):
        return {"factor": self.factor}

    def score(self, texts):
        self.calls.append(list(texts))
        if any(t == "boom" for t in texts):
            raise ScorerError(self.name, "boom", "exploded")
        return [len(t) * self.factor for t in texts]


def test_same_scores_and_each_segment_scored_once(tmp_path):
    bare = LengthScorer()
    cached = build_scorer(bare, tmp_path)
    assert isinstance(cached, CachedScorer) and (tmp_path / CACHE_FILE).exists()
    texts = ["a", "bb", "a", "ccc"]
    assert cached.score(texts) == [1.0, 2.0, 1.0, 3.0]
    assert bare.calls == [["a", "bb", "ccc"]]  # the repeat within the batch is scored once
    assert cached.score(["ccc", "dddd", "bb"]) == [3.0, 4.0, 2.0]
    assert bare.calls[-1] == ["dddd"]
    s = cached.stats()
    assert (s["segments"], s["segments_scored"], s["cache_hits"]) == (7, 4, 3)
    assert s["hit_rate"] == pytest.approx(3 / 7) and s["scorer_seconds"] >= 0
    assert cached.pop_stats()["segments"] == 7 and cached.stats()["segments"] == 0


def test_persistent_across_processes_and_instances(tmp_path):
    build_scorer(LengthScorer(), tmp_path).score(["x", "yy"])
    again = LengthScorer()
    cached = build_scorer(again, tmp_path)
    assert cached.score(["yy", "x"]) == [2.0, 1.0] and again.calls == []
    assert cached.stats()["hit_rate"] == 1.0


def test_key_separates_scorer_settings(tmp_path):
    build_scorer(LengthScorer(1.0), tmp_path).score(["abc"])
    other = build_scorer(LengthScorer(2.0), tmp_path)
    assert other.score(["abc"]) == [6.0] and other.stats()["cache_hits"] == 0
    assert len(ScoreCache(tmp_path / CACHE_FILE).keys()) == 2


def test_contract_is_forwarded(tmp_path):
    bare = PEP8Scorer()
    cached = build_scorer(bare, tmp_path)
    assert (cached.name, cached.version, cached.contextual) == (bare.name, bare.version, True)
    assert cached.key.startswith(f"{bare.key}#code=")  # and a fingerprint of its code (code_fingerprint)
    assert cached.settings() == bare.settings() and cached.violations("x=1\n") == bare.violations("x=1\n")
    assert build_scorer(bare, None) is bare and build_scorer(cached, tmp_path) is cached


def test_contextual_scorer_is_cached_per_document(tmp_path):
    code = "import os\ndef f(a,b):\n    return a+b\n"
    lines = LineSegmenter()(code)
    cached = build_scorer(PEP8Scorer(), tmp_path)
    first = cached.score_document(lines)
    assert first == PEP8Scorer().score_document(lines)
    assert cached.score_document(lines) == first
    assert cached.stats()["cache_hits"] == len(lines) and cached.stats()["segments_scored"] == len(lines)
    # the same text segmented differently is another document
    assert document_hash(lines) != document_hash([code]) and text_hash(code) != document_hash([code])
    cached.score_document([code])
    assert cached.stats()["segments_scored"] == len(lines) + 1


def test_failures_propagate_and_are_not_cached(tmp_path):
    bare = LengthScorer()
    cached = build_scorer(bare, tmp_path)
    with pytest.raises(ScorerError, match="boom"):
        cached.score(["ok", "boom"])
    assert ScoreCache(tmp_path / CACHE_FILE).count() == 0
    assert cached.score(["ok"]) == [2.0]


def test_non_finite_scores_are_refused(tmp_path):
    class NaN(LengthScorer):
        def score(self, texts):
            return [float("nan")] * len(texts)

    with pytest.raises(ScorerError, match="non-finite"):
        build_scorer(NaN(), tmp_path).score(["x"])
    assert ScoreCache(tmp_path / CACHE_FILE).count() == 0


def test_pickles_without_its_connection(tmp_path):
    cached = build_scorer(LengthScorer(), tmp_path)
    cached.score(["abc"])
    clone = pickle.loads(pickle.dumps(cached))
    assert clone.score(["abc"]) == [3.0] and clone.stats()["cache_hits"] == 1
    assert clone.scorer.calls == [["abc"]]  # the copy's scorer was not asked again


def test_unicode_and_surrogates_hash(tmp_path):
    cached = build_scorer(LengthScorer(), tmp_path)
    texts = ["héllo ✓", "\ud800 lone surrogate", "", "\x00"]
    assert cached.score(texts) == [7.0, 16.0, 0.0, 1.0]
    assert cached.score(texts) == [7.0, 16.0, 0.0, 1.0] and cached.stats()["cache_hits"] == 4


def _writer(path: str, start: int, n: int, barrier) -> None:
    cache = ScoreCache(path, timeout=60)
    key = LengthScorer().key
    barrier.wait()
    for i in range(start, start + n, 4):  # many small transactions, interleaved with the other process
        cache.put_many(key, [(text_hash(f"seg-{j}"), [float(j)]) for j in range(i, i + 4)])
        cache.get_many(key, [text_hash(f"seg-{i}")])


def _open_and_write(path: str, start: int, n: int, barrier) -> None:
    barrier.wait()  # both processes create the database, switch it to WAL and write at once
    _writer(path, start, n, _NoBarrier())


class _NoBarrier:
    def wait(self):
        pass


@pytest.mark.parametrize("method, precreate", [("fork", True), ("fork", False), ("spawn", True)])
def test_two_processes_writing_concurrently_lose_nothing(tmp_path, method, precreate):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method")
    path = str(tmp_path / CACHE_FILE)
    parent = ScoreCache(path) if precreate else None  # as build_scorer does before workers start
    if parent is not None:
        parent.count()  # the parent holds an open connection while it forks (DataLoader workers)
    ctx = mp.get_context(method)
    barrier = ctx.Barrier(2)
    target = _writer if precreate else _open_and_write
    # overlapping ranges: 0..1499 and 1000..2499, written at the same time
    procs = [ctx.Process(target=target, args=(path, s, 1500, barrier)) for s in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = ScoreCache(path)
    key = LengthScorer().key
    assert cache.count(key) == 2500
    got = cache.get_many(key, [text_hash(f"seg-{j}") for j in range(2500)])
    assert len(got) == 2500 and all(got[text_hash(f"seg-{j}")] == [float(j)] for j in range(2500))


def test_cache_used_after_fork_by_a_child(tmp_path):
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork")
    cached = build_scorer(LengthScorer(), tmp_path)
    cached.score(["parent"])  # the parent holds an open connection when it forks
    ctx = mp.get_context("fork")
    p = ctx.Process(target=cached.score, args=(["child-1", "child-22"],))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert cached.score(["child-1", "child-22", "parent"]) == [7.0, 8.0, 6.0]
    assert cached.stats()["cache_hits"] == 3


def _child_sees_no_open_connection(cache, conn) -> None:
    assert cache._db is None  # closed before the fork: SQLite must not see a connection cross it
    cache.count()  # and a fresh one works here
    os._exit(0)


def test_fork_hook_closes_connections_before_fork(tmp_path):
    """An SQLite connection carried across fork() breaks locking: in a first version, a parent's
    open connection made two forked writers lose ~5-30% of their entries (under pytest)."""
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork")
    cache = ScoreCache(tmp_path / CACHE_FILE)
    cache.count()
    assert cache._db is not None
    p = mp.get_context("fork").Process(target=_child_sees_no_open_connection, args=(cache, None))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert cache._db is None and cache.count() == 0 and cache._db is not None  # reopened lazily


def test_an_edited_scorer_gets_fresh_scores_not_the_cached_ones(tmp_path, monkeypatch, caplog):
    """A plugin scorer scores 'x' as 1/len(text); its code is edited to 3/len(text) with the same name and
    version. The cache key holds a fingerprint of the code, so the edited scorer scores afresh (3/2 for
    'ab') instead of being served the cached 1/2, and says so once; the old code's scores stay usable."""
    import importlib
    import logging
    import sys

    plugin = tmp_path / "edited_scorer_plugin.py"
    source = ("from phf.scorers.base import Scorer\n\n"
              "class Edited(Scorer):\n    name, version = 'edited', '1'\n\n"
              "    def score(self, texts):\n        return [WEIGHT / len(t) for t in texts]\n\nWEIGHT = {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(weight):
        plugin.write_text(source.format(weight))
        sys.modules.pop("edited_scorer_plugin", None)
        importlib.invalidate_caches()
        return build_scorer(importlib.import_module("edited_scorer_plugin").Edited(), tmp_path / "cache")

    first = load(1.0)
    assert first.score(["ab"]) == [0.5] and first.stats()["segments_scored"] == 1
    with caplog.at_level(logging.WARNING, logger="phf.scorers.cache"):
        edited = load(3.0)
        assert edited.score(["ab"]) == [1.5] and edited.stats()["segments_scored"] == 1
    assert edited.key != first.key and "its code changed since scores were cached" in caplog.text
    again = load(3.0)  # the same code again: served from the cache
    assert again.score(["ab"]) == [1.5] and again.stats()["cache_hits"] == 1
    sys.modules.pop("edited_scorer_plugin", None)

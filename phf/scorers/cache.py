"""A persistent score cache shared by every process and job that scores the same data.

:class:`ScoreCache` is one SQLite file in WAL mode: any number of processes (DataLoader workers,
the jobs of a sweep, ``phf-score`` workers) read concurrently and their writes are serialized by
SQLite's lock (with a busy timeout), so no entry is lost. Entries are keyed by the scorer's ``key``
(name + version + settings), a fingerprint of its code (``code_fingerprint``: an edited scorer is never
served the scores of its earlier code, whatever its ``version``) and a 128-bit BLAKE2b hash of the segment:

* context-free scorers: one row per distinct segment text → its score;
* ``contextual`` scorers (PEP8): one row per document (hash of its segmentation) → the list of its
  segment scores.

:class:`CachedScorer` wraps any scorer with the same contract, so the pipeline uses it transparently,
and counts what it did (``stats()``). Keep the cache on a local disk: SQLite's WAL mode needs shared
memory, which network file systems (NFS) do not provide reliably.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

from phf.scorers.base import Scorer
from phf.scorers.errors import check_scores

log = logging.getLogger(__name__)

CACHE_FILE = "scores.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS scorers (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scores (
    scorer INTEGER NOT NULL,
    hash BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (scorer, hash)
) WITHOUT ROWID;
"""
_IN_CHUNK = 500  # hashes per SELECT ... IN (...) (well below SQLite's variable limit)
_CACHES: weakref.WeakSet = weakref.WeakSet()  # every ScoreCache of this process, for the fork hook
_FORKING: list = []


def _before_fork() -> None:
    """Close every cache connection before fork (sqlite.org/howtocorrupt.html §2.6), holding the
    locks so that no thread reopens one until the fork is done."""
    _FORKING[:] = list(_CACHES)
    for cache in _FORKING:
        cache._lock.acquire()
        if cache._db is not None:
            cache._db.close()
            cache._db = None


def _after_fork_in_parent() -> None:
    for cache in _FORKING:
        cache._lock.release()
    _FORKING.clear()


def _after_fork_in_child() -> None:
    for cache in _FORKING:
        cache._lock = threading.RLock()  # the copy is still acquired (by _before_fork): start afresh
        cache._ids = {}
    _FORKING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def text_hash(text: str) -> bytes:
    """128-bit hash of one segment (surrogates allowed, so any Python str hashes)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def document_hash(segments: list[str]) -> bytes:
    """128-bit hash of a segmented document: the same text segmented differently hashes differently."""
    h = hashlib.blake2b(digest_size=16, person=b"phf-document")
    for s in segments:
        data = s.encode("utf-8", "surrogatepass")
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.digest()


def _pack(scores: list[float]) -> bytes:
    return struct.pack(f"<{len(scores)}d", *scores)


def _unpack(blob: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(blob) // 8}d", blob))


def code_fingerprint(scorer: Scorer) -> str:
    """A hash of the scorer's implementation: the source files of the modules that define its class and
    every base class (e.g. ``my_scorers/keywords.py`` and ``phf/scorers/base.py``), plus the modules a
    scorer lists in ``code_modules`` (helpers it calls). A scorer edited between runs gets a new cache key
    and fresh scores, without a hand-bumped ``version``. A class without a readable source file (built in,
    compiled) counts by its qualified name only."""
    import inspect
    import sys

    names = [c.__module__ for c in type(scorer).__mro__ if c is not object]
    names += list(getattr(scorer, "code_modules", ()))
    h = hashlib.blake2b(digest_size=8, person=b"phf-scorer-code")
    for name in dict.fromkeys(names):
        module = sys.modules.get(name)
        if module is None:
            import importlib

            module = importlib.import_module(name)
        try:
            source = Path(inspect.getsourcefile(module) or "").read_bytes()
        except (OSError, TypeError):  # no source file: the name alone
            source = b""
        h.update(name.encode() + b"\0" + hashlib.blake2b(source, digest_size=16).digest())
    return h.hexdigest()


class ScoreCacheError(OSError):
    """The cache file cannot be opened or read; the message names it and the way out. An OSError, not
    a scorer failure: ``data.on_error=skip`` must not skip every document because of it."""


class ScoreCache:
    """Scores by (scorer key, hash) in one SQLite file; safe for concurrent processes.

    One connection per process, used under a lock (so threads may share the object). SQLite must
    never see a connection carried across ``fork()``: even unused, the child would inherit SQLite's
    in-memory lock bookkeeping for the file and skip taking real locks, and concurrent writes would
    be lost. A fork hook therefore closes every open cache connection just before any fork (e.g.
    DataLoader workers); the parent and the child reopen lazily. A pickled copy (spawned workers)
    opens its own connection on first use.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 120.0):
        self.path = Path(path).expanduser()
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._error(e) from e
        self._setup()
        with self._lock:
            self._connect()  # create the schema now: errors (read-only dir, ...) surface at construction

    def _setup(self) -> None:
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._ids: dict[str, int] = {}
        _CACHES.add(self)

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """This process's connection (call with ``self._lock`` held)."""
        if self._db is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as e:
                raise self._error(e) from e
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
                conn.execute("PRAGMA synchronous = NORMAL")  # durable enough for a cache; much faster
                self._retry(lambda: conn.executescript(_SCHEMA))
            except BaseException:
                conn.close()
                raise
            self._db = conn
        return self._db

    def _retry(self, fn):
        """Run ``fn``, retrying while another process holds a lock the busy timeout does not cover."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise self._error(e) from e
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as e:  # "database disk image is malformed", "file is not a database"
                raise self._error(e) from e

    def _error(self, e: Exception) -> ScoreCacheError:
        """``e`` with the cache file and what to do about it."""
        msg = str(e)
        if isinstance(e, OSError) or "unable to open" in msg or "readonly" in msg or "read-only" in msg:
            why = (f"cannot open or write it: check that {self.path.parent} exists and is writable, or use "
                   "another directory (cache_dir=DIR)")
        elif "locked" in msg or "busy" in msg:
            why = f"another process held its lock for more than {self.timeout:.0f} s"
        else:
            why = ("the file is damaged: delete it (with its -wal and -shm files; the scores are simply "
                   "computed again) or use another cache_dir")
        return ScoreCacheError(f"score cache {self.path}: {type(e).__name__}: {msg}; {why}; "
                               "cache_dir=null scores without a cache")

    def close(self) -> None:
        """Close the connection (it reopens on the next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __getstate__(self):
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state):
        self.path, self.timeout = state["path"], state["timeout"]
        self._setup()

    # -- API -------------------------------------------------------------------------------------
    def scorer_id(self, key: str) -> int:
        with self._lock:
            if key not in self._ids:
                conn = self._connect()

                def get_or_create():
                    conn.execute("INSERT OR IGNORE INTO scorers (key) VALUES (?)", (key,))
                    return conn.execute("SELECT id FROM scorers WHERE key = ?", (key,)).fetchone()[0]

                self._ids[key] = self._retry(get_or_create)
            return self._ids[key]

    def get_many(self, key: str, hashes: Iterable[bytes]) -> dict[bytes, list[float]]:
        """The cached values (lists of floats) of those ``hashes`` that are present."""
        hashes = list(dict.fromkeys(hashes))
        found: dict[bytes, list[float]] = {}
        if not hashes:
            return found
        with self._lock:
            sid, conn = self.scorer_id(key), self._connect()
            for i in range(0, len(hashes), _IN_CHUNK):
                chunk = hashes[i : i + _IN_CHUNK]
                query = f"SELECT hash, value FROM scores WHERE scorer = ? AND hash IN ({','.join('?' * len(chunk))})"
                for h, v in self._retry(lambda q=query, c=chunk: conn.execute(q, (sid, *c)).fetchall()):
                    found[bytes(h)] = _unpack(v)
        return found

    def put_many(self, key: str, items: Iterable[tuple[bytes, list[float]]]) -> None:
        """Store values in one transaction; an entry already present is kept (same function, same value)."""
        items = list(items)
        if not items:
            return
        with self._lock:
            sid, conn = self.scorer_id(key), self._connect()
            rows = [(sid, h, _pack(v)) for h, v in items]

            def write():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT OR IGNORE INTO scores (scorer, hash, value) VALUES (?, ?, ?)", rows
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

            self._retry(write)

    def count(self, key: str | None = None) -> int:
        """Entries stored for ``key`` (all scorers when None)."""
        with self._lock:
            conn = self._connect()
            if key is None:
                return self._retry(lambda: conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
            sid = self.scorer_id(key)
            return self._retry(lambda: conn.execute("SELECT COUNT(*) FROM scores WHERE scorer = ?", (sid,)).fetchone()[0])

    def keys(self) -> list[str]:
        with self._lock:
            conn = self._connect()
            return self._retry(lambda: [r[0] for r in conn.execute("SELECT key FROM scorers ORDER BY id")])


class CachedScorer(Scorer):
    """Any scorer behind a :class:`ScoreCache`: same contract, each segment scored at most once.

    ``stats()`` reports ``segments`` (asked for), ``segments_scored`` (sent to the scorer),
    ``cache_hits`` (answered without the scorer: from the cache or as a repeat within the same
    call), ``hit_rate`` and ``scorer_seconds`` (wall time inside the wrapped scorer), counted in
    this process since construction or the last ``pop_stats()``.
    """

    def __init__(self, scorer: Scorer, cache: ScoreCache):
        self.scorer, self.cache = scorer, cache
        self.name, self.version, self.contextual = scorer.name, scorer.version, scorer.contextual
        self._key = f"{scorer.key}#code={code_fingerprint(scorer)}"
        self._stats = _zero_stats()
        self._says_if_code_changed(scorer.key)

    def _says_if_code_changed(self, key: str) -> None:
        """One line when the cache holds scores of this scorer (same name, version and settings) from other
        code: they are not used (the new code scores afresh), and kept for the code they came from."""
        if self._key in (known := self.cache.keys()):
            return
        if any(k.startswith(f"{key}#code=") for k in known):
            log.warning("scorer %r: its code changed since scores were cached under the same version (%s): "
                        "scoring afresh; the earlier code's scores stay in %s", self.name, self.version,
                        self.cache.path)

    def settings(self) -> dict:
        return self.scorer.settings()

    @property
    def key(self) -> str:
        return self._key

    def sample_metrics(self, texts: list[str], cut: list[bool]) -> dict[str, float]:
        return self.scorer.sample_metrics(texts, cut)

    def misfit(self, texts: list[str]) -> str | None:
        return self.scorer.misfit(texts)

    def __getattr__(self, name):  # e.g. PIIScorer.detect, DetoxifyScorer.device
        if name in ("scorer", "cache", "_stats", "_key"):
            raise AttributeError(name)
        return getattr(self.scorer, name)

    # -- stats -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        s = dict(self._stats)
        s["hit_rate"] = s["cache_hits"] / s["segments"] if s["segments"] else 0.0
        return s

    def pop_stats(self) -> dict:
        """The additive counters (no ``hit_rate``), reset to zero: sum them across worker processes
        and batches, then hit rate = cache_hits / segments."""
        s = dict(self._stats)
        self._stats = _zero_stats()
        return s

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._stats["scorer_seconds"] += time.perf_counter() - t0

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, texts: list[str]) -> list[float]:
        texts = list(texts)
        hashes = [text_hash(t) for t in texts]
        cached = {h: v[0] for h, v in self.cache.get_many(self._key, hashes).items() if len(v) == 1}
        todo: dict[bytes, str] = {}
        for h, t in zip(hashes, texts, strict=True):
            if h not in cached and h not in todo:
                todo[h] = t
        if todo:
            fresh = check_scores(
                self.name, list(todo.values()), self._timed(self.scorer.score, list(todo.values()))
            )
            new = dict(zip(todo, fresh, strict=True))
            self.cache.put_many(self._key, ((h, [s]) for h, s in new.items()))
            cached.update(new)
        self._stats["segments"] += len(texts)
        self._stats["segments_scored"] += len(todo)
        self._stats["cache_hits"] += len(texts) - len(todo)
        return [cached[h] for h in hashes]

    def score_document(self, segments: list[str]) -> list[float]:
        if not self.contextual:
            return self.score(segments)
        segments = list(segments)
        h = document_hash(segments)
        hit = self.cache.get_many(self._key, [h]).get(h)
        self._stats["segments"] += len(segments)
        if hit is not None and len(hit) == len(segments):
            self._stats["cache_hits"] += len(segments)
            return hit
        scores = check_scores(self.name, segments, self._timed(self.scorer.score_document, segments))
        self.cache.put_many(self._key, [(h, scores)])
        self._stats["segments_scored"] += len(segments)
        return scores


def _zero_stats() -> dict:
    return {"segments": 0, "segments_scored": 0, "cache_hits": 0, "scorer_seconds": 0.0}


def build_scorer(scorer, cache_dir: str | os.PathLike | None = None) -> Scorer:
    """The one way phf makes a scorer: ``scorer`` (a scorer, or its config with ``_target_``, e.g.
    ``cfg.scorer`` or ``task.eval.scorer``) behind the shared cache in ``cache_dir``
    (``<cache_dir>/scores.sqlite``), or the scorer itself when ``cache_dir`` is None."""
    if isinstance(scorer, Mapping):  # a config node (DictConfig is a Mapping)
        from hydra.utils import instantiate

        scorer = instantiate(scorer)
    if cache_dir is None or isinstance(scorer, CachedScorer):
        return scorer
    return CachedScorer(scorer, ScoreCache(Path(cache_dir).expanduser() / CACHE_FILE))

"""Document sources: where raw or pre-scored documents come from.

A source is an iterable of :class:`~phf.data.document.Document` in a fixed order, plus
``iter_from(n)`` that starts after the first ``n`` documents without parsing them into the pipeline
(used to resume and to skip data a previous run consumed). Raw documents come as
``Document(texts=[text], scores=None)`` and are segmented and scored by the pipeline; pre-scored
records (the paper's ``texts``/``scores``/``avg_score`` format) pass through as they are.

Bad input never turns into a silent default. Every source has an explicit policy:
``on_error="raise"`` (the default) stops with an error naming ``file:line`` (or ``dataset[index]``),
the key and what was expected; ``on_error="skip"`` yields an empty placeholder instead (so positions
stay countable for resuming), logs a warning and records the reason in ``source.skipped``
(``{where: why}``). Documents outside ``min_chars``/``max_chars`` are filtered the same way,
recorded in ``source.filtered`` and logged (one line each, with the running count; a record met again
on a later pass is logged at DEBUG level only). A placeholder says
which it was in ``meta`` (``"skipped"`` or ``"filtered"``), so the pipeline can count both.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import stat
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from phf.data.document import Document, unicode_problem

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def record_to_document(record, where: str, text_key: str = "text", min_score: float | None = 0.0,
                       avg_score_tolerance: float | None = 1e-4) -> Document:
    """Turn one JSON record into a Document, or raise a ValueError naming ``where``.

    Scores are misalignment scores (higher = worse): one below ``min_score`` is refused (None: no
    bound). A record's ``avg_score``, when present, must equal the mean of its ``scores`` within
    ``avg_score_tolerance`` (relative; None: not checked), and a ``text`` next to ``texts`` must be
    their concatenation: a record that contradicts itself is not trained on.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    # datasets unifies schemas across rows, so an absent key can arrive as None
    if record.get("texts") is not None:
        texts, scores = record["texts"], record.get("scores")
        if not isinstance(texts, list):
            raise ValueError(f"{where}: 'texts' must be a list of strings, got {type(texts).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"{where}: 'texts' must be a list of strings; texts[{i}] is {type(t).__name__}")
        if scores is None:
            raise ValueError(f"{where}: a record with 'texts' needs 'scores' (one number per segment)")
        if not isinstance(scores, list):
            raise ValueError(f"{where}: 'scores' must be a list of numbers, got {type(scores).__name__}")
        doc = Document(list(texts), list(scores), id=where)
        doc.validate()
        if not any(texts):
            what = "an empty list" if not texts else "a list of empty strings"
            raise ValueError(f"{where}: empty document ('texts' is {what})")
        _check_consistent(record, doc, where, text_key, min_score, avg_score_tolerance)
        return doc
    if record.get(text_key) is not None:
        text = record[text_key]
        if not isinstance(text, str):
            raise ValueError(f"{where}: '{text_key}' must be a string, got {type(text).__name__}")
        if not text:
            raise ValueError(f"{where}: empty document ('{text_key}' is an empty string)")
        if (why := unicode_problem([text])) is not None:
            raise ValueError(f"{where}: '{text_key}' {why.partition(' ')[2]}")
        return Document([text], None, id=where)
    raise ValueError(f"{where}: record has neither 'texts' (+ 'scores') nor '{text_key}'; keys: {sorted(record)}")


def _check_consistent(record: dict, doc: Document, where: str, text_key: str, min_score, tolerance) -> None:
    if min_score is not None:
        for i, s in enumerate(doc.scores):
            if s < min_score:
                raise ValueError(f"{where}: scores[{i}] = {s!r} is below {min_score} (misalignment scores are "
                                 f">= {min_score}; data.source.min_score=null accepts any)")
    text = record.get(text_key)
    if text is not None and text != doc.text:
        joined = doc.text
        at = next((i for i, (a, b) in enumerate(zip(text, joined, strict=False)) if a != b), min(len(text), len(joined)))
        raise ValueError(f"{where}: '{text_key}' and 'texts' disagree ('{text_key}' has {len(text)} characters, "
                         f"the joined 'texts' {len(joined)}; first difference at character {at}); keep one of them")
    avg = record.get("avg_score")
    if tolerance is not None and avg is not None:
        mean = doc.avg_score
        if isinstance(avg, bool) or not isinstance(avg, int | float) or not math.isclose(avg, mean, rel_tol=tolerance):
            raise ValueError(f"{where}: 'avg_score' = {avg!r} contradicts the mean of 'scores' ({mean!r}); fix or "
                             "drop 'avg_score' (data.source.avg_score_tolerance=null skips this check)")


def _check_policy(on_error: str, min_chars, max_chars, max_line_bytes=None) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"data.source.on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"data.source.min_chars must be an integer >= 0, got {min_chars!r}")
    for key, value in (("max_chars", max_chars), ("max_line_bytes", max_line_bytes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"data.source.{key} must be a positive integer or null, got {value!r}")


#: a JSON line holding a text of n characters is at most this many bytes per character (a ``\\uXXXX``
#: escape is 6 bytes; a surrogate pair, one character, 12) plus the record's other keys and scores
LINE_BYTES_PER_CHAR = 12
LINE_BYTES_SLACK = 1 << 20


def line_byte_cap(max_chars: int | None, max_line_bytes: int | None) -> int | None:
    """The longest JSONL line read into memory: ``max_line_bytes``, or derived from ``max_chars`` (a
    longer line cannot hold a record within it, short of a megabyte of other keys), or no cap."""
    if max_line_bytes is not None:
        return max_line_bytes
    return None if max_chars is None else LINE_BYTES_PER_CHAR * max_chars + LINE_BYTES_SLACK


class Source:
    """Base class: subclasses implement ``iter_from``; ``_skip``/``_size_ok`` apply the policies."""

    on_error: str = "raise"
    min_chars: int = 0
    max_chars: int | None = None

    def iter_from(self, start: int) -> Iterator[Document]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Document]:
        return self.iter_from(0)

    def _skip(self, where: str, why: str, level: int = logging.WARNING) -> Document:
        """Apply ``on_error`` to a bad record: raise, or record it, log it at ``level`` and return a
        placeholder."""
        if self.on_error == "raise":
            prefix = "" if why.startswith(where) else f"{where}: "
            raise ValueError(f"{prefix}{why} (data.source.on_error=skip skips and counts such records)")
        skipped = self.__dict__.setdefault("skipped", {})
        again = where in skipped  # a later pass (epoch, validation split): said once is enough
        skipped[where] = why
        log.log(logging.DEBUG if again else level, "skipping %s (%d skipped so far): %s", where, len(skipped), why)
        return self._placeholder(where)

    def _placeholder(self, where: str) -> Document:
        """The empty document that stands for a skipped or filtered one; ``meta`` says which and why."""
        for kind in ("skipped", "filtered"):
            if where in self.__dict__.get(kind, {}):
                return Document([], [], id=where, meta={kind: self.__dict__[kind][where]})
        return Document([], [], id=where)

    def _filter(self, where: str, why: str, level: int = logging.INFO) -> Document:
        """Record a document dropped by a length bound in ``filtered``, log it (one line per document,
        with the running count) and return its placeholder."""
        filtered = self.__dict__.setdefault("filtered", {})
        again = where in filtered
        filtered[where] = why
        log.log(logging.DEBUG if again else level, "dropping %s (%d dropped by length so far): %s", where,
                len(filtered), why)
        return self._placeholder(where)

    def _size_ok(self, where: str, n_chars: int, level: int = logging.INFO) -> bool:
        """``min_chars <= n_chars <= max_chars``; a document outside is recorded in ``filtered``."""
        if n_chars >= self.min_chars and (self.max_chars is None or n_chars <= self.max_chars):
            return True
        bound = (f"< data.source.min_chars={self.min_chars}" if n_chars < self.min_chars
                 else f"> data.source.max_chars={self.max_chars}")
        self._filter(where, f"{n_chars} characters {bound}", level)
        return False


class JsonlSource(Source):
    """Local JSONL files, one document per line, in either record format.

    Lines end at ``\\n`` only: a ``\\r\\n`` line end is fine and ``\\u2028`` inside a string stays text;
    a UTF-8 BOM is accepted at the start of any line (concatenated files); blank lines are ignored.
    A raw NUL byte is refused as binary data (a ``\\u0000`` escape is valid JSON and kept as text).
    Lines are parsed one at a time, so a 10 MB line costs about 10 MB plus its parse. ``meta_keys``:
    keys of each record copied into ``Document.meta`` (e.g. ``[origin, unit]`` for
    ``phf.data.corpus_stats``'s groups); a record without one is a bad record. A line longer than ``max_line_bytes`` (default: derived from ``max_chars``, see :func:`line_byte_cap`) is never
    held in memory: it is read in chunks of ``CHUNK`` bytes to its end and dropped like a record over
    ``max_chars`` (counted in ``filtered``, logged with ``file:line``).
    """

    CHUNK = 1 << 20

    def __init__(self, path: str | list[str], text_key: str = "text", on_error: str = "raise",
                 min_chars: int = 0, max_chars: int | None = None, min_score: float | None = 0.0,
                 avg_score_tolerance: float | None = 1e-4, meta_keys: list[str] | tuple[str, ...] = (),
                 max_line_bytes: int | None = None):
        self.meta_keys = [meta_keys] if isinstance(meta_keys, str) else list(meta_keys)
        self.paths = [path] if isinstance(path, str) else list(path)
        if not self.paths:
            raise ValueError("JsonlSource needs at least one path (data.source.path=FILE)")
        for p in self.paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"JSONL data file not found (or not a regular file): {p}")
        _check_policy(on_error, min_chars, max_chars, max_line_bytes)
        self.text_key, self.on_error, self.min_chars, self.max_chars = text_key, on_error, min_chars, max_chars
        self.min_score, self.avg_score_tolerance = min_score, avg_score_tolerance
        self.line_cap = line_byte_cap(max_chars, max_line_bytes)
        self.limit_keys = (f"data.source.max_line_bytes={max_line_bytes}" if max_line_bytes is not None else
                           f"{LINE_BYTES_PER_CHAR} bytes per character of data.source.max_chars={max_chars} + 1 MiB")
        self.skipped: dict[str, str] = {}
        self.filtered: dict[str, str] = {}

    def _lines(self, f) -> Iterator[bytes | int]:
        """The file's lines as bytes; a line over ``line_cap`` bytes is consumed in chunks and comes as
        its length in bytes (an int) instead."""
        cap = self.line_cap
        while True:
            raw = f.readline() if cap is None else f.readline(cap + 1)
            if not raw:
                return
            if cap is None or len(raw) <= cap:
                yield raw
                continue
            n = len(raw)
            while not raw.endswith(b"\n"):
                raw = f.readline(self.CHUNK)
                if not raw:
                    break
                n += len(raw)
            yield n

    def _parse(self, raw: bytes, where: str) -> Document:
        nul = raw.find(b"\x00")
        if nul >= 0:
            return self._skip(where, f"NUL byte at byte {nul} of the line (binary data, not JSONL?)")
        try:
            line = raw.decode("utf-8-sig").rstrip("\r\n")  # columns in errors count within the line
        except UnicodeDecodeError as e:
            return self._skip(where, f"invalid UTF-8 ({e.reason} at byte {e.start} of the line)")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            return self._skip(where, f"malformed JSON ({e.msg} at column {e.colno})")
        except RecursionError:
            return self._skip(where, "malformed JSON (nested too deeply)")
        try:
            doc = record_to_document(record, where, self.text_key, self.min_score, self.avg_score_tolerance)
        except ValueError as e:
            return self._skip(where, str(e))
        missing = [k for k in self.meta_keys if k not in record]
        if missing:
            return self._skip(where, f"no key {missing[0]!r} (data.source.meta_keys asks for {self.meta_keys})")
        doc.meta = {k: record[k] for k in self.meta_keys}
        return doc if self._size_ok(where, len(doc.text)) else self._placeholder(where)

    def iter_from(self, start: int) -> Iterator[Document]:
        n = 0
        for path in self.paths:
            with open(path, "rb") as f:
                for lineno, raw in enumerate(self._lines(f), 1):
                    if isinstance(raw, int):  # too long to read: counts as a record, dropped unparsed
                        n += 1
                        if n > start:
                            yield self._filter(f"{path}:{lineno}", f"a line of {raw} bytes, over the {self.line_cap}"
                                               f"-byte limit ({self.limit_keys}); not read")
                        continue
                    if not raw.strip():
                        continue
                    n += 1
                    if n <= start:
                        continue
                    yield self._parse(raw, f"{path}:{lineno}")
        if n == 0:
            raise ValueError(f"empty corpus: no JSONL records in {', '.join(map(str, self.paths))} "
                             "(the files are empty or hold only blank lines)")


class HFSource(Source):
    """Hugging Face ``datasets``, streamed, for the paper's pre-scored datasets (online users).

    ``names`` are dataset names read in order (the paper's 39 shards) or a loader such as ``json`` or
    ``parquet`` with ``data_files`` (how the tests exercise this path offline). A name that cannot be
    loaded fails at the first read with an error naming it (and saying so when offline mode is on).

    At scale (``shards_by_rank``): under DDP each rank reads only its part of every dataset
    (``datasets.distributed.split_dataset_by_node``: whole shards per rank when the shard count is a
    multiple of the world size, else every world-size-th record), so positions count this rank's
    records. Each yielded document records the dataset's own stream state
    (``IterableDataset.state_dict()``) in ``record`` (position -> state); a stream resumed with that
    ``state`` continues there (``load_state_dict``) instead of re-reading every earlier record.
    """

    shards_by_rank = True  # BlockStream passes rank / world size to iter_from: every document is this rank's

    def __init__(self, names: str | list[str], split: str = "train", data_files=None, text_key: str = "text",
                 on_error: str = "raise", min_chars: int = 0, max_chars: int | None = None,
                 min_score: float | None = 0.0, avg_score_tolerance: float | None = 1e-4):
        self.names = [names] if isinstance(names, str) else list(names)
        if not self.names or not all(isinstance(n, str) and n for n in self.names):
            raise ValueError(f"data.source.names must be one or more dataset names, got {names!r}")
        _check_policy(on_error, min_chars, max_chars)
        self.split, self.data_files, self.text_key = split, data_files, text_key
        self.on_error, self.min_chars, self.max_chars = on_error, min_chars, max_chars
        self.min_score, self.avg_score_tolerance = min_score, avg_score_tolerance
        self.skipped: dict[str, str] = {}
        self.filtered: dict[str, str] = {}

    def _load(self, name: str, rank: int = 0, world_size: int = 1):
        import datasets

        kwargs = {"split": self.split, "streaming": True}
        if self.data_files is not None:
            kwargs["data_files"] = self.data_files
        try:
            ds = datasets.load_dataset(name, **kwargs)
        except Exception as e:  # datasets raises many types for "not reachable"; re-raise with context
            offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = (" (offline mode is on: only local files and cached datasets work)" if offline else
                    " (no network? HF_DATASETS_OFFLINE=1 makes this fail at once instead of after retries)")
            raise RuntimeError(f"cannot load Hugging Face dataset {name!r} split {self.split!r}{hint}: {e}") from e
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        return ds

    def iter_from(self, start: int, *, rank: int = 0, world_size: int = 1, state: dict | None = None,
                  record: dict | None = None) -> Iterator[Document]:
        """This rank's documents after the first ``start``. ``state``: what ``record`` held for position
        ``start`` (continue there without re-reading); None re-reads and skips ``start`` records."""
        first, seen, index = 0, 0, 0
        if state is not None:
            first, seen, index = state["name_index"], start, state["index"]
        for ni in range(first, len(self.names)):
            name = self.names[ni]
            ds = self._load(name, rank, world_size)
            if state is not None and ni == first:
                ds.load_state_dict(state["dataset"])
            else:
                index = 0
            for record_ in ds:
                seen, index = seen + 1, index + 1
                if seen <= start:  # no state: streaming .skip() would re-read the same rows anyway
                    continue
                if record is not None:  # the state after this record: a resume continues with the next
                    record[seen] = {"name_index": ni, "index": index, "dataset": ds.state_dict()}
                where = f"{name}[{index - 1}]" if world_size == 1 else f"{name}[rank {rank}/{world_size}: {index - 1}]"
                try:
                    doc = record_to_document(dict(record_), where, self.text_key, self.min_score,
                                             self.avg_score_tolerance)
                except ValueError as e:
                    yield self._skip(where, str(e))
                    continue
                yield doc if self._size_ok(where, len(doc.text)) else self._placeholder(where)


class LocalPythonSource(Source):
    """The Python standard library of the running interpreter: a real code corpus on every machine.

    Files are read in sorted path order; ``site-packages`` and caches are excluded. A file that is not
    valid UTF-8, contains NUL bytes, is not a regular file (reading a FIFO would block) or cannot be
    read is skipped and recorded in ``skipped``, since a standard library holds such test fixtures (one
    line after a full pass summarises them; each file is logged at DEBUG level); ``on_bad_file: raise`` turns that into an error. Files outside
    ``min_chars``/``max_chars`` (empty ``__init__.py``, huge generated tables) are recorded in ``filtered``.
    """

    def __init__(
        self,
        root: str | None = None,
        max_files: int | None = None,
        min_chars: int = 1,
        max_chars: int | None = None,
        on_bad_file: str = "skip",
    ):
        if on_bad_file not in ("skip", "raise"):
            raise ValueError(f"data.source.on_bad_file must be 'skip' or 'raise', got {on_bad_file!r}")
        _check_policy("raise", min_chars, max_chars)
        self.root = Path(root or sysconfig.get_paths()["stdlib"])
        if not self.root.is_dir():
            raise FileNotFoundError(f"LocalPythonSource root is not a directory: {self.root}")
        self.max_files, self.min_chars, self.max_chars = max_files, min_chars, max_chars
        self.on_bad_file = self.on_error = on_bad_file
        self.skipped: dict[str, str] = {}
        self.filtered: dict[str, str] = {}
        self._files = self._list_files()

    def _list_files(self) -> list[Path]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__", "dist-packages"))
            files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
        return files[: self.max_files] if self.max_files else files

    def __len__(self) -> int:
        return len(self._files)

    def _read(self, path: Path) -> str | None:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise ValueError("not a regular file")
            data = path.read_bytes()
            if b"\x00" in data:
                raise ValueError("contains NUL bytes (binary file?)")
            text = data.decode("utf-8")
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            if self.on_bad_file == "raise":
                raise ValueError(f"{path}: unreadable Python source: {e} (data.source.on_bad_file=skip skips such files)") from e
            # expected (the standard library's encoding test fixtures): one line per pass, not one per file
            self._skip(str(path), f"unreadable Python source: {e}", level=logging.DEBUG)
            return None
        text = text.removeprefix("\ufeff")
        return text if self._size_ok(str(path), len(text), level=logging.DEBUG) else None

    def iter_from(self, start: int) -> Iterator[Document]:
        # the index counts files, so a resumed run skips exactly the files already consumed
        for path in itertools.islice(self._files, start, None):
            text = self._read(path)
            yield Document([text], None, id=str(path.relative_to(self.root))) if text else self._placeholder(str(path))
        self._summarise_skipped()

    def _summarise_skipped(self) -> None:
        """After the first full pass that skipped files: one line saying how many and which (the reasons
        are in ``skipped`` and at DEBUG level)."""
        if not self.skipped or self.__dict__.get("_summarised"):
            return
        self._summarised = True
        names = sorted(Path(p).name for p in self.skipped)
        log.info("skipped %d of %d files of %s that are not readable UTF-8 Python source (%s%s; "
                 "data.source.on_bad_file=raise stops instead)", len(self.skipped), len(self._files), self.root,
                 ", ".join(names[:3]), ", ..." if len(names) > 3 else "")


def is_placeholder(doc: Document) -> bool:
    """Sources yield an empty placeholder for a skipped file so positions stay countable."""
    return not doc.texts


__all__ = ["HFSource", "JsonlSource", "LocalPythonSource", "ON_ERROR", "Source", "is_placeholder",
           "record_to_document"]

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
(``{where: why}``). Documents outside ``min_chars``/``max_chars`` are filtered the same way and
recorded in ``source.filtered``.
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


def _check_policy(on_error: str, min_chars, max_chars) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"data.source.on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"data.source.min_chars must be an integer >= 0, got {min_chars!r}")
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"data.source.max_chars must be a positive integer or null, got {max_chars!r}")


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
        skipped[where] = why
        log.log(level, "skipping %s (%d skipped so far): %s", where, len(skipped), why)
        return Document([], [], id=where)

    def _size_ok(self, where: str, n_chars: int) -> bool:
        """``min_chars <= n_chars <= max_chars``; a document outside is recorded in ``filtered``."""
        if n_chars >= self.min_chars and (self.max_chars is None or n_chars <= self.max_chars):
            return True
        bound = f"< min_chars={self.min_chars}" if n_chars < self.min_chars else f"> max_chars={self.max_chars}"
        self.__dict__.setdefault("filtered", {})[where] = f"{n_chars} characters {bound}"
        log.debug("filtering %s: %d characters %s", where, n_chars, bound)
        return False


class JsonlSource(Source):
    """Local JSONL files, one document per line, in either record format.

    Lines end at ``\\n`` only: a ``\\r\\n`` line end is fine and ``\\u2028`` inside a string stays text;
    a UTF-8 BOM is accepted at the start of any line (concatenated files); blank lines are ignored.
    A raw NUL byte is refused as binary data (a ``\\u0000`` escape is valid JSON and kept as text).
    Lines are parsed one at a time, so a 10 MB line costs about 10 MB plus its parse.
    """

    def __init__(self, path: str | list[str], text_key: str = "text", on_error: str = "raise",
                 min_chars: int = 0, max_chars: int | None = None, min_score: float | None = 0.0,
                 avg_score_tolerance: float | None = 1e-4):
        self.paths = [path] if isinstance(path, str) else list(path)
        if not self.paths:
            raise ValueError("JsonlSource needs at least one path (data.source.path=FILE)")
        for p in self.paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"JSONL data file not found (or not a regular file): {p}")
        _check_policy(on_error, min_chars, max_chars)
        self.text_key, self.on_error, self.min_chars, self.max_chars = text_key, on_error, min_chars, max_chars
        self.min_score, self.avg_score_tolerance = min_score, avg_score_tolerance
        self.skipped: dict[str, str] = {}
        self.filtered: dict[str, str] = {}

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
        return doc if self._size_ok(where, len(doc.text)) else Document([], [], id=where)

    def iter_from(self, start: int) -> Iterator[Document]:
        n = 0
        for path in self.paths:
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
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
                yield doc if self._size_ok(where, len(doc.text)) else Document([], [], id=where)


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
        return text if self._size_ok(str(path), len(text)) else None

    def iter_from(self, start: int) -> Iterator[Document]:
        # the index counts files, so a resumed run skips exactly the files already consumed
        for path in itertools.islice(self._files, start, None):
            text = self._read(path)
            yield Document([text], None, id=str(path.relative_to(self.root))) if text else Document([], [], id=str(path))
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

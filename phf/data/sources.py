"""Document sources: where raw or pre-scored documents come from.

A source is an iterable of :class:`~phf.data.document.Document` in a fixed order, plus
``iter_from(n)`` that starts after the first ``n`` documents without parsing them into the pipeline
(used to resume and to skip data a previous run consumed). Raw documents come as
``Document(texts=[text], scores=None)`` and are segmented and scored by the pipeline; pre-scored
records (the paper's ``texts``/``scores``/``avg_score`` format) pass through as they are.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from phf.data.document import Document

log = logging.getLogger(__name__)


def record_to_document(record, where: str, text_key: str = "text") -> Document:
    """Turn one JSON record into a Document, or raise a ValueError naming ``where``."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    # datasets unifies schemas across rows, so an absent key can arrive as None
    if record.get("texts") is not None:
        texts, scores = record["texts"], record.get("scores")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{where}: 'texts' must be a list of strings")
        if scores is None:
            raise ValueError(f"{where}: a record with 'texts' needs 'scores' (one per segment)")
        if not isinstance(scores, list):
            raise ValueError(f"{where}: 'scores' must be a list of numbers, got {type(scores).__name__}")
        doc = Document(list(texts), list(scores), id=where)
        doc.validate()
        if not texts:
            raise ValueError(f"{where}: empty document ('texts' is an empty list)")
        return doc
    if record.get(text_key) is not None:
        text = record[text_key]
        if not isinstance(text, str):
            raise ValueError(f"{where}: '{text_key}' must be a string, got {type(text).__name__}")
        if not text:
            raise ValueError(f"{where}: empty document ('{text_key}' is an empty string)")
        return Document([text], None, id=where)
    raise ValueError(f"{where}: record has neither 'texts' (+ 'scores') nor '{text_key}'; keys: {sorted(record)}")


class Source:
    """Base class: subclasses implement ``iter_from``."""

    def iter_from(self, start: int) -> Iterator[Document]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Document]:
        return self.iter_from(0)


class JsonlSource(Source):
    """Local JSONL files, one document per line, in either record format."""

    def __init__(self, path: str | list[str], text_key: str = "text"):
        self.paths = [path] if isinstance(path, str) else list(path)
        if not self.paths:
            raise ValueError("JsonlSource needs at least one path (data.source.path=FILE)")
        for p in self.paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"JSONL data file not found: {p}")
        self.text_key = text_key

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
                    where = f"{path}:{lineno}"
                    try:
                        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                    except UnicodeDecodeError as e:
                        raise ValueError(f"{where}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
                    yield record_to_document(record, where, self.text_key)


class HFSource(Source):
    """Hugging Face ``datasets``, streamed, for the paper's pre-scored datasets (online users).

    ``names`` are dataset names read in order (the paper's 39 shards) or a loader such as ``json``
    with ``data_files`` (how the tests exercise this path offline).
    """

    def __init__(self, names: str | list[str], split: str = "train", data_files=None, text_key: str = "text"):
        self.names = [names] if isinstance(names, str) else list(names)
        self.split, self.data_files, self.text_key = split, data_files, text_key

    def _load(self, name: str):
        import datasets

        kwargs = {"split": self.split, "streaming": True}
        if self.data_files is not None:
            kwargs["data_files"] = self.data_files
        try:
            return datasets.load_dataset(name, **kwargs)
        except Exception as e:  # datasets raises many types for "not reachable"; re-raise with context
            offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = " (offline mode is on: only local files and cached datasets work)" if offline else ""
            raise RuntimeError(f"cannot load Hugging Face dataset {name!r} split {self.split!r}{hint}: {e}") from e

    def iter_from(self, start: int) -> Iterator[Document]:
        seen = 0
        for name in self.names:
            ds = self._load(name)
            for i, record in enumerate(ds):
                seen += 1
                if seen <= start:  # streaming .skip() would re-read the same rows anyway
                    continue
                yield record_to_document(dict(record), f"{name}[{i}]", self.text_key)


class LocalPythonSource(Source):
    """The Python standard library of the running interpreter: a real code corpus on every machine.

    Files are read in sorted path order; ``site-packages`` and caches are excluded. A file that is not
    valid UTF-8, contains NUL bytes or cannot be read is skipped and counted (``skipped``), since a
    standard library may hold such test fixtures; ``on_bad_file: raise`` turns that into an error.
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
            raise ValueError(f"on_bad_file must be 'skip' or 'raise', got {on_bad_file!r}")
        self.root = Path(root or sysconfig.get_paths()["stdlib"])
        if not self.root.is_dir():
            raise FileNotFoundError(f"LocalPythonSource root is not a directory: {self.root}")
        self.max_files, self.min_chars, self.max_chars = max_files, min_chars, max_chars
        self.on_bad_file = on_bad_file
        self.skipped: dict[str, str] = {}
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
            data = path.read_bytes()
            if b"\x00" in data:
                raise ValueError("contains NUL bytes (binary file?)")
            text = data.decode("utf-8")
        except (OSError, ValueError) as e:
            if self.on_bad_file == "raise":
                raise ValueError(f"{path}: unreadable Python source: {e}") from e
            self.skipped[str(path)] = str(e)
            log.debug("skipping %s: %s", path, e)
            return None
        text = text.removeprefix("\ufeff")
        if len(text) < self.min_chars or (self.max_chars and len(text) > self.max_chars):
            return None
        return text

    def iter_from(self, start: int) -> Iterator[Document]:
        # the index counts files, so a resumed run skips exactly the files already consumed
        for path in itertools.islice(self._files, start, None):
            text = self._read(path)
            yield Document([text], None, id=str(path.relative_to(self.root))) if text else Document([], [], id=str(path))


def is_placeholder(doc: Document) -> bool:
    """Sources yield an empty placeholder for a skipped file so positions stay countable."""
    return not doc.texts


__all__ = ["HFSource", "JsonlSource", "LocalPythonSource", "Source", "is_placeholder", "record_to_document"]

"""English prose found on the machine, for the offline prose tasks (toxicity, PII).

Three kinds of text every Python installation carries:

* ``topics``: the interpreter's bundled documentation (``pydoc_data/topics.py``: the language
  reference topics that ``help()`` shows), read with :mod:`ast`, not imported;
* ``metadata``: the long descriptions (README) in the ``METADATA`` of installed distributions;
* ``docstring``: module, class and function docstrings of the standard library and installed
  packages, read with :mod:`ast` (nothing is imported or executed).

phf's own README and docstrings are never read, so the corpus does not change with phf's code.

Each text is cleaned to its prose paragraphs (code blocks, doctests, tables, markup-heavy and
non-English-looking paragraphs are dropped) and split at paragraph boundaries into documents of
``min_chars``..``max_chars`` characters. The candidate units (topics, distributions, ``.py`` files) are
ordered by a hash of (seed, unit name), then read until ``n_docs`` documents are found, so building a
small corpus is fast and a large one mixes all packages. Exact duplicates are dropped.

The corpus is deterministic for a seed and a Python environment (interpreter version and installed
distributions; not their install paths): another set of installed packages gives partly other text
(a new package's units are interleaved; the others keep their order). :class:`CorpusCache` keys a
built corpus by its parameters and a fingerprint of the installed distributions, so a changed
environment builds a new corpus instead of silently reusing an old one.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

from phf.data.document import Document
from phf.data.sources import Source

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # bump when the harvest or injection logic changes, so old caches are rebuilt
# phf itself is never harvested: its README and docstrings change with every commit, and a corpus that
# moves with the code would make runs of the same configuration at two commits different experiments
_OWN = __name__.split(".")[0]

_SKIP_DIRS = {
    "tests",
    "test",
    "testing",
    "__pycache__",
    "_vendor",
    "vendor",
    "examples",
    "benchmarks",
    "idlelib",
    "site-packages",  # under the stdlib: read as their own root (the running environment's), or not at all
    "dist-packages",
}
_WORD = re.compile(r"[A-Za-z][a-z]+")
_COMMON = frozenset(
    "the of and to a in is it that for on with as are be this by an or from not can which if at "
    "when will all used returns return value use should may has have its one object".split()
)


def default_cache_dir() -> Path:
    """``$PHF_CACHE_DIR`` or ``~/.cache/phf`` (the root config's ``cache_dir`` default)."""
    return Path(os.environ.get("PHF_CACHE_DIR") or Path.home() / ".cache" / "phf")


# -- cleaning -------------------------------------------------------------------------------------
def is_prose(paragraph: str) -> bool:
    """A paragraph of English sentences: mostly words, common English words, few symbols, no code."""
    p = paragraph.strip()
    if len(p) < 40 or ">>>" in p or "::" in p or p.startswith(("..", "|", "+-", "$ ", "#", "-", "*", "=")):
        return False
    lines = p.split("\n")
    if any(line.startswith(("    ", "\t")) for line in lines[1:]):  # indented block: code or a table
        return False
    if sum(len(line) for line in lines) / len(lines) < 30:  # lists, headings, signatures
        return False
    letters = sum(c.isalpha() or c == " " for c in p)
    if letters / len(p) < 0.85:
        return False
    words = _WORD.findall(p)
    if len(words) < 8:
        return False
    common = sum(w.lower() in _COMMON for w in words)
    if common / len(words) < 0.12:  # English prose has ~25-40% function words
        return False
    return p.rstrip()[-1:] in ".!?:)\"'"


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of ``text`` (cleaned, single-spaced lines kept as in the source)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        para = "\n".join(line.rstrip() for line in para.strip("\n").split("\n")).strip()
        if is_prose(para):
            out.append(para)
    return out


def chunk_paragraphs(paragraphs: list[str], min_chars: int, max_chars: int) -> list[str]:
    """Join consecutive paragraphs into documents of ``min_chars``..``max_chars`` characters."""
    docs, cur = [], []
    size = 0
    for p in paragraphs:
        if len(p) > max_chars:
            continue
        if cur and size + 2 + len(p) > max_chars:
            if size >= min_chars:
                docs.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + (2 if len(cur) > 1 else 0)
    if cur and size >= min_chars:
        docs.append("\n\n".join(cur))
    return docs


_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


# -- harvesting -----------------------------------------------------------------------------------
def _docstrings(path: Path) -> list[str]:
    try:
        source = path.read_bytes()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out: list[str] = []
    stack = [tree]
    while stack:  # only definitions carry docstrings: walk their bodies, not every expression
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            out.append(doc)
        stack.extend(n for n in reversed(node.body) if isinstance(n, _DEFS))
    return out


def _topics(path: Path) -> list[tuple[str, str]]:
    """(name, text) of the interpreter's bundled help topics, read without importing the module."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "topics" for t in targets):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    return []
                return sorted((str(k), str(v)) for k, v in value.items())
    return []


def _description(dist: metadata.Distribution) -> str:
    try:
        raw = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    except (OSError, UnicodeDecodeError):
        return ""
    msg = HeaderParser().parsestr(raw)
    body = msg.get_payload()
    if not isinstance(body, str) or not body.strip():
        body = msg.get("Description", "") or ""
    return body


def _walk_py(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames
            if d not in _SKIP_DIRS and not d.endswith((".dist-info", ".egg-info"))
            and not (Path(dirpath) == root and d == _OWN)  # an installed (non-editable) phf
        )
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return files


@functools.lru_cache(maxsize=1)
def list_units() -> tuple[tuple[str, str, Callable[[], list[str]]], ...]:
    """Every candidate text unit on this machine as ``(kind, origin, read)``, in sorted order
    (listed once per process)."""
    units: list[tuple[str, str, Callable[[], list[str]]]] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    topics = stdlib / "pydoc_data" / "topics.py"
    if topics.is_file():
        for name, text in _topics(topics):
            units.append(("topics", f"pydoc_data.topics[{name}]", lambda text=text: [text]))
    dists = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name and name != _OWN and name not in dists:  # first on sys.path wins, as for imports
            dists[name] = dist
    for name in sorted(dists):
        units.append(("metadata", f"{name}:METADATA", lambda d=dists[name]: [_description(d)]))
    site = sorted({Path(p) for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])})
    roots = [("stdlib", stdlib)] + [("site-packages", p) for p in site]
    seen: set[Path] = set()
    for label, root in roots:
        if not root.is_dir():
            continue
        for path in _walk_py(root):
            if path not in seen:
                seen.add(path)
                origin = f"{label}:{path.relative_to(root).as_posix()}"  # machine-independent
                units.append(("docstring", origin, lambda p=path: _docstrings(p)))
    return tuple(units)


@functools.lru_cache(maxsize=1)
def environment_fingerprint() -> str:
    """A hash of what the harvest reads: the interpreter and the installed distributions."""
    h = hashlib.sha256(f"{sys.version}|{FORMAT_VERSION}".encode())
    installed = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()}
    for d in sorted(x for x in installed if x.split("==")[0].lower() != _OWN):
        h.update(d.encode())
    return h.hexdigest()[:16]


def harvest_prose(n_docs: int, seed: int = 0, min_chars: int = 300, max_chars: int = 3000) -> list[dict]:
    """Up to ``n_docs`` prose documents ``{"text", "origin", "kind"}``, deterministic for a seed."""
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    if not 0 < min_chars <= max_chars:
        raise ValueError(f"need 0 < min_chars <= max_chars, got {min_chars}, {max_chars}")
    # each unit's place is a hash of (seed, origin): installing a package interleaves its units
    # without reordering the others, so the corpus changes little (origins are machine-independent)
    units = sorted(
        list_units(), key=lambda u: hashlib.blake2b(f"{seed}:{u[1]}".encode(), digest_size=8).digest()
    )
    docs: list[dict] = []
    seen: set[str] = set()
    for kind, origin, read in units:
        for text in read():
            for doc in chunk_paragraphs(prose_paragraphs(text), min_chars, max_chars):
                digest = hashlib.sha1(doc.encode("utf-8", "surrogatepass")).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                docs.append({"text": doc, "origin": origin, "kind": kind})
                if len(docs) >= n_docs:
                    return docs
    log.warning("only %d prose documents found on this machine (asked for %d)", len(docs), n_docs)
    return docs


# -- build-once cache -----------------------------------------------------------------------------
class CorpusCache:
    """A directory holding one built corpus, created atomically on first use.

    ``<cache_dir>/corpora/<name>-<hash of params and environment>/`` holds ``docs.jsonl``,
    ``ground_truth.jsonl`` and ``manifest.json``. Concurrent builders (DataLoader workers, the jobs
    of a sweep) serialize on a lock file; the first builds, the others read its result.
    """

    def __init__(self, cache_dir: str | os.PathLike | None, name: str, params: dict):
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.params = dict(params, format_version=FORMAT_VERSION, environment=environment_fingerprint())
        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        self.dir = root / "corpora" / f"{name}-{key}"

    @property
    def ready(self) -> bool:
        return (self.dir / "manifest.json").is_file()

    def build(self, builder: Callable[[], tuple[list[dict], list[dict], dict]]) -> Path:
        """Run ``builder() -> (docs, ground_truth, info)`` once and store its output; return the dir."""
        if self.ready:
            return self.dir
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        import fcntl

        with open(self.dir.parent / f".{self.dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.ready:
                    return self.dir
                if self.dir.exists():  # a damaged build (no manifest): start over
                    shutil.rmtree(self.dir)
                # a cold cache: say what the silent minute is (once per machine, corpus and settings)
                log.info("building the corpus %s from this machine's prose (once; cached in %s)", self.dir.name,
                         self.dir)
                docs, truth, info = builder()
                tmp = Path(tempfile.mkdtemp(prefix=f".{self.dir.name}-", dir=self.dir.parent))
                _write_jsonl(tmp / "docs.jsonl", docs)
                _write_jsonl(tmp / "ground_truth.jsonl", truth)
                manifest = dict(info, params=self.params, n_docs=len(docs), n_spans=len(truth))
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, self.dir)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return self.dir


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# -- sources --------------------------------------------------------------------------------------
class _CorpusSource(Source):
    """A corpus built once into ``cache_dir`` and then read from there; documents come raw
    (``Document(texts=[text], scores=None)``): the pipeline segments and scores them."""

    corpus_name = "corpus"

    def __init__(self, cache_dir, params: dict):
        self.cache_dir = cache_dir
        self.cache = CorpusCache(cache_dir, self.corpus_name, params)
        self._docs: list[Document] | None = None

    def _build(self) -> tuple[list[dict], list[dict], dict]:
        raise NotImplementedError

    @property
    def path(self) -> Path:
        """The built corpus directory (built now if needed)."""
        return self.cache.build(self._build)

    @property
    def documents(self) -> list[Document]:
        if self._docs is None:
            self._docs = [
                Document(
                    [r["text"]],
                    None,
                    id=r["id"],
                    meta={k: v for k, v in r.items() if k not in ("text", "id")},
                )
                for r in read_jsonl(self.path / "docs.jsonl")
            ]
        return self._docs

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, i: int) -> Document:
        d = self.documents[i]
        return Document(list(d.texts), None, id=d.id, meta=dict(d.meta))

    def iter_from(self, start: int) -> Iterator[Document]:
        for i in range(start, len(self.documents)):
            yield self[i]

    def ground_truth(self) -> list[dict]:
        """Injected spans ``{"doc_id", "doc_index", "start", "end", "entity_type", "value"}``."""
        return list(read_jsonl(self.path / "ground_truth.jsonl"))

    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    def __getstate__(self):  # workers re-read the built files instead of receiving every document
        state = dict(self.__dict__)
        state["_docs"] = None
        return state


class LocalProseSource(_CorpusSource):
    """English prose found on this machine (see the module docstring), no injections.

    Args:
        cache_dir: root of phf's caches (the corpus goes to ``<cache_dir>/corpora/``); None =
            ``$PHF_CACHE_DIR`` or ``~/.cache/phf``.
        n_docs: number of documents (fewer if the machine has less prose; a warning says so).
        seed: which units are read, in which order.
        min_chars, max_chars: document length bounds (paragraphs are joined up to ``max_chars``).
    """

    corpus_name = "local_prose"

    def __init__(
        self, cache_dir=None, n_docs: int = 2000, seed: int = 0, min_chars: int = 300, max_chars: int = 3000
    ):
        self.n_docs, self.seed, self.min_chars, self.max_chars = n_docs, seed, min_chars, max_chars
        super().__init__(
            cache_dir, {"n_docs": n_docs, "seed": seed, "min_chars": min_chars, "max_chars": max_chars}
        )

    def _build(self):
        rows = harvest_prose(self.n_docs, self.seed, self.min_chars, self.max_chars)
        docs = [{"id": f"{self.corpus_name}[{i}]", **r} for i, r in enumerate(rows)]
        kinds: dict[str, int] = {}
        for r in rows:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        return docs, [], {"kinds": kinds, "chars": sum(len(r["text"]) for r in rows)}


# -- injection ------------------------------------------------------------------------------------
_BOUNDARY = re.compile(r"(?<=[.!?])[ \t]+(?=[A-Z(\"'`])|\n\n")


def insertion_points(text: str) -> list[int]:
    """Offsets where a new sentence can go: the start, after each sentence end, and the end."""
    return [0] + [m.end() for m in _BOUNDARY.finditer(text)] + [len(text)]


def inject(text: str, insertions: list[tuple[int, str, list[tuple[int, int, str]]]]):
    """Insert sentences at offsets of ``text``; return the new text and the spans shifted to it.

    ``insertions`` are ``(offset, sentence, spans)`` with spans ``(start, end, type)`` relative to
    the sentence; a sentence is followed by one space (or preceded by one at the end of the text).
    """
    out, spans, pos = [], [], 0
    for offset, sentence, sent_spans in sorted(insertions, key=lambda x: x[0]):
        out.append(text[pos:offset])
        base = sum(len(p) for p in out)
        if offset >= len(text):
            piece = (" " if text and not text[-1].isspace() else "") + sentence
            shift = len(piece) - len(sentence)
        else:
            piece, shift = sentence + " ", 0
        out.append(piece)
        spans.extend((base + shift + s, base + shift + e, t) for s, e, t in sent_spans)
        pos = offset
    out.append(text[pos:])
    return "".join(out), spans


class _InjectedSource(_CorpusSource):
    """Local prose with generated sentences injected into a fraction of the documents."""

    def __init__(self, cache_dir, n_docs, seed, fraction, max_injections, min_chars, max_chars, extra: dict):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{type(self).__name__}: fraction must be in [0, 1], got {fraction}")
        if max_injections < 1:
            raise ValueError(f"{type(self).__name__}: max_injections must be >= 1, got {max_injections}")
        self.n_docs, self.seed, self.fraction, self.max_injections = n_docs, seed, fraction, max_injections
        self.prose = LocalProseSource(
            cache_dir, n_docs=n_docs, seed=seed, min_chars=min_chars, max_chars=max_chars
        )
        params = {
            "prose": self.prose.cache.params,
            "fraction": fraction,
            "max_injections": max_injections,
            **extra,
        }
        super().__init__(cache_dir, params)

    def clean_documents(self) -> list[Document]:
        """The documents before injection, in the same order: row i is document i without its injected
        sentences (the clean held-out set of ``phf.eval.heldout_clean``, the KL reference's corpus)."""
        return self.prose.documents

    def _sentence(self, rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
        """One generated sentence and its ground-truth spans (relative to the sentence)."""
        raise NotImplementedError

    def _info(self) -> dict:
        return {}

    def _build(self):
        base = [r for r in read_jsonl(self.prose.path / "docs.jsonl")]
        rng = random.Random(f"phf-{self.corpus_name}:{self.seed}")
        chosen = set(rng.sample(range(len(base)), round(self.fraction * len(base))))
        docs, truth = [], []
        for i, r in enumerate(base):
            text, spans = r["text"], []
            if i in chosen:
                points = insertion_points(text)
                k = rng.randint(1, self.max_injections)
                insertions = [(rng.choice(points), *self._sentence(rng)) for _ in range(k)]
                text, spans = inject(text, insertions)
            doc_id = f"{self.corpus_name}[{i}]"
            docs.append(
                {"id": doc_id, "text": text, "origin": r["origin"], "kind": r["kind"], "injected": len(spans)}
            )
            for s, e, t in spans:
                truth.append(
                    {
                        "doc_id": doc_id,
                        "doc_index": i,
                        "start": s,
                        "end": e,
                        "entity_type": t,
                        "value": text[s:e],
                    }
                )
        per_type: dict[str, int] = {}
        for t in truth:
            per_type[t["entity_type"]] = per_type.get(t["entity_type"], 0) + 1
        info = {"injected_docs": len(chosen), "spans_per_type": per_type, **self._info()}
        return docs, truth, info

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

FORMAT_VERSION = 4  # bump when the harvest or injection logic changes, so old caches are rebuilt
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

    def build(self, builder: Callable[[], tuple]) -> Path:
        """Run ``builder() -> (docs, ground_truth, info[, {file name: rows}])`` once and store its
        output (the optional files as more JSONL files of the directory); return the dir."""
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
                built = builder()  # (docs, truth, info) or (docs, truth, info, {file name: rows})
                docs, truth, info = built[:3]
                tmp = Path(tempfile.mkdtemp(prefix=f".{self.dir.name}-", dir=self.dir.parent))
                _write_jsonl(tmp / "docs.jsonl", docs)
                _write_jsonl(tmp / "ground_truth.jsonl", truth)
                for name, rows in (built[3] if len(built) > 3 else {}).items():
                    _write_jsonl(tmp / name, rows)
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


def unit_of(origin: str) -> str:
    """The content unit a document comes from: one distribution's README (``name:METADATA``), one
    package directory of docstrings (``site-packages:email/mime``; a top-level module is its own
    unit, ``stdlib:os``), or the interpreter's help topics (``pydoc_data.topics``, one genre).

    Documents of one unit share a topic and a genre; :class:`_InjectedSource` picks carrier units
    with it (at ``content_grain="unit"``), and ``phf.data.corpus_stats`` groups documents by it.
    """
    if origin.startswith("pydoc_data.topics["):
        return "pydoc_data.topics"
    if origin.endswith(":METADATA"):
        return origin
    label, sep, rel = origin.partition(":")
    if not sep:
        return origin
    parent = rel.rpartition("/")[0]
    return f"{label}:{parent}" if parent else f"{label}:{rel.removesuffix('.py')}"


#: what a carrier group is (``content_grain``): a package directory or README (:func:`unit_of`), a
#: top-level package (docstrings; the READMEs of all distributions form one group, a genre of their
#: own), or the kind of text (``topics``, ``metadata``, ``docstring``: three genres)
CONTENT_GRAINS = ("unit", "package", "kind")


def group_of(origin: str, kind: str, grain: str) -> str:
    """The carrier group of a document at ``grain`` (one of :data:`CONTENT_GRAINS`)."""
    if grain == "unit":
        return unit_of(origin)
    if grain == "kind" or kind != "docstring":
        return kind  # topics and READMEs are genres; at "kind" docstrings are one too
    label, _, rel = origin.partition(":")
    return f"{label}:{rel.split('/')[0].removesuffix('.py')}"


def carrier_units(units: list[str], seed: int, need: int) -> set[str]:
    """The units that carry misalignment when content decides: units in the order of a hash of
    (seed, unit), each taken while the documents taken stay at most ``need`` (a larger unit is
    skipped), until ``need`` documents are covered; if the small units run out first, the first
    skipped unit is added, so the carriers always hold at least ``need`` documents (when the corpus
    does)."""
    counts: dict[str, int] = {}
    for u in units:
        counts[u] = counts.get(u, 0) + 1
    order = sorted(counts, key=lambda u: hashlib.blake2b(f"phf-carrier:{seed}:{u}".encode(), digest_size=8).digest())
    chosen: set[str] = set()
    total, skipped = 0, []
    for u in order:
        if total >= need:
            break
        if total + counts[u] <= need:
            chosen.add(u)
            total += counts[u]
        else:
            skipped.append(u)
    if total < need and skipped:
        chosen.add(skipped[0])
    return chosen


#: the settings of :class:`_InjectedSource` that reproduce phf's corpora before document structure
#: was a setting (FORMAT_VERSION 3): documents chosen at random, sentences at random insertion points
INDEPENDENT = {"content_coupling": 0.0, "open_misaligned": 0.0, "density": None}


class _InjectedSource(_CorpusSource):
    """Local prose with generated sentences injected into a fraction of the documents, with a
    setting for each way misalignment is structured across and within documents.

    Exactly ``K = round(fraction * n_docs)`` documents are injected at every setting:

    * ``content_coupling`` (c, in [0, 1]): how predictable misalignment is from a document's content.
      The *carrier units* (:func:`carrier_units`: packages/READMEs chosen by a hash of the corpus
      seed, holding about K documents; :func:`unit_of` says what a unit is) are fixed for a seed.
      c = 0 chooses the K documents at random (content says nothing). For c > 0, x of them are drawn
      from carrier units and K - x from the other units, with x going linearly from what a random draw
      gives on average (K * carrier documents / n_docs) at c = 0 to min(K, carrier documents) at c = 1;
      so the gap P(injected | carrier unit) - P(injected | other unit) is linear in c, and c = 1 injects
      only documents of carrier units (their package/topic decides). ``phf-corpus-stats``'s
      ``content_kappa`` (same-unit agreement) is then about c squared.
    * ``content_grain`` (``unit``, ``package`` or ``kind``, :func:`group_of`): what a carrier group is,
      from fine (a package directory, one README) to coarse (a top-level package, all READMEs; or the
      three kinds of text). The coarser the grain, the more general the content feature that predicts
      misalignment (a topic vs a genre), and the easier for a small model to pick up.
    * ``open_misaligned`` (p, in [0, 1]): probability that an injected document's first sentence is
      an injected one (a sentence inserted at offset 0; :meth:`_opening_sentence`, which a corpus can
      restrict, e.g. ``LocalPIISource(opening_entities=...)``).
    * ``density`` (d, in [0, 1] or None): how densely the rest of an injected document is misaligned.
      None: ``1..max_injections`` sentences (uniform count) at uniformly random insertion points,
      including the start (the pre-structure behaviour; with p > 0 the first of them goes to the
      start). A number: each of the document's sentences is followed by an injected sentence with
      probability d, independently (so about d / (1 + d) of a long injected document's sentences are
      injected, and the count grows with its length); the start gets one only by ``open_misaligned``;
      a document that drew none gets one after a random sentence.

    :data:`INDEPENDENT` (c = 0, p = 0, d = None) is the *independent* setting: the same documents
    and sentences as before these settings existed (same random draws).

    Files: ``docs.jsonl`` (row i is row i of the prose corpus ``self.prose`` with its injections;
    :meth:`clean_text` gives the text before them), ``ground_truth.jsonl`` (one row per injected
    span: ``doc_id, doc_index, start, end, entity_type, value, sentence, opening``; ``sentence`` is the
    index of the span's sentence in the document, ``opening`` whether that is sentence 0) and
    ``structure.jsonl`` (one row per document, in order: ``doc_id, doc_index, origin, unit, carrier,
    injected, n_sentences, misaligned_sentences, opens_misaligned``). Sentences here are the pieces
    between :func:`insertion_points` of the clean text plus the injected sentences (a clean
    document of S such pieces with k injections has S + k sentences).
    """

    def __init__(self, cache_dir, n_docs, seed, fraction, max_injections, min_chars, max_chars, extra: dict,
                 content_coupling: float = 0.0, open_misaligned: float = 0.0, density: float | None = None,
                 content_grain: str = "unit"):
        name = type(self).__name__
        if content_grain not in CONTENT_GRAINS:
            raise ValueError(f"{name}: content_grain must be one of {list(CONTENT_GRAINS)}, got {content_grain!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name}: fraction must be in [0, 1], got {fraction}")
        if max_injections < 1:
            raise ValueError(f"{name}: max_injections must be >= 1, got {max_injections}")
        for key, value in (("content_coupling", content_coupling), ("open_misaligned", open_misaligned)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: {key} must be a number in [0, 1], got {value!r}")
        if density is not None and (
            isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 <= density <= 1.0
        ):
            raise ValueError(f"{name}: density must be null or a number in [0, 1], got {density!r}")
        self.n_docs, self.seed, self.fraction, self.max_injections = n_docs, seed, fraction, max_injections
        self.content_coupling, self.open_misaligned = float(content_coupling), float(open_misaligned)
        self.density = None if density is None else float(density)
        self.content_grain = content_grain
        self.prose = LocalProseSource(
            cache_dir, n_docs=n_docs, seed=seed, min_chars=min_chars, max_chars=max_chars
        )
        params = {
            "prose": self.prose.cache.params,
            "fraction": fraction,
            "max_injections": max_injections,
            "content_coupling": self.content_coupling,
            "open_misaligned": self.open_misaligned,
            "density": self.density,
            **extra,
        }
        if content_grain != "unit":  # the default keeps the cache keys corpora had before this setting
            params["content_grain"] = content_grain
        super().__init__(cache_dir, params)

    @property
    def structure_settings(self) -> dict:
        """The structure settings of this corpus (``content_coupling, open_misaligned, density``)."""
        return {"content_coupling": self.content_coupling, "open_misaligned": self.open_misaligned,
                "density": self.density, "content_grain": self.content_grain}

    def _sentence(self, rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
        """One generated sentence and its ground-truth spans (relative to the sentence)."""
        raise NotImplementedError

    def _opening_sentence(self, rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
        """The sentence an injected document opens with (``open_misaligned``); any sentence by default."""
        return self._sentence(rng)

    def _info(self) -> dict:
        return {}

    def clean_text(self, doc_index: int) -> str:
        """Document ``doc_index``'s text before injection (row ``doc_index`` of ``self.prose``)."""
        return self.prose.documents[doc_index].texts[0]

    def clean_documents(self) -> list[Document]:
        """Every document before injection, with this corpus's ids and metadata (same order)."""
        return [
            Document([c.texts[0]], None, id=d.id, meta=dict(d.meta))
            for c, d in zip(self.prose.documents, self.documents, strict=True)
        ]

    def structure(self) -> list[dict]:
        """One record per document (see the class docstring), in document order."""
        return list(read_jsonl(self.path / "structure.jsonl"))

    def _choose(self, rng: random.Random, units: list[str], carriers: set[str]) -> set[int]:
        n, k = len(units), round(self.fraction * len(units))
        if self.content_coupling == 0.0:  # the independent draw, exactly as before structure was a setting
            return set(rng.sample(range(n), k))
        inside = [i for i in range(n) if units[i] in carriers]
        outside = [i for i in range(n) if units[i] not in carriers]
        x0 = k * len(inside) / n  # injected carrier documents in a random draw, on average (c = 0)
        x1 = min(k, len(inside))  # as many as possible (c = 1)
        x = max(round(x0 + self.content_coupling * (x1 - x0)), k - len(outside))
        return set(rng.sample(inside, x)) | set(rng.sample(outside, k - x))

    def _insertions(self, rng: random.Random, points: list[int]) -> list[tuple[int, str, list]]:
        """``(offset, sentence, spans)`` to inject into a chosen document with insertion ``points``."""
        p = self.open_misaligned
        opens = p >= 1.0 or (p > 0.0 and rng.random() < p)  # no draw at p = 0: the independent stream
        if self.density is None:
            k = rng.randint(1, self.max_injections)
            first = [(0, *self._opening_sentence(rng))] if opens else []
            # a point, then its sentence, one by one: the same draws as before structure was a setting
            return first + [(rng.choice(points), *self._sentence(rng)) for _ in range(k - opens)]
        later = [pt for pt in points[1:] if rng.random() < self.density]
        if not opens and not later:
            later = [rng.choice(points[1:])]
        return ([(0, *self._opening_sentence(rng))] if opens else []) + [(o, *self._sentence(rng)) for o in later]

    def _build(self):
        base = [r for r in read_jsonl(self.prose.path / "docs.jsonl")]
        units = [group_of(r["origin"], r["kind"], self.content_grain) for r in base]
        carriers = carrier_units(units, self.seed, round(self.fraction * len(base)))
        rng = random.Random(f"phf-{self.corpus_name}:{self.seed}")
        chosen = self._choose(rng, units, carriers)
        docs, truth, structure = [], [], []
        for i, r in enumerate(base):
            text, spans, sentence_of, misaligned = r["text"], [], [], []
            points = insertion_points(text)
            if i in chosen:
                insertions = self._insertions(rng, points)
                ordered = sorted(insertions, key=lambda x: x[0])  # inject's order (a stable sort)
                index = {pt: j for j, pt in enumerate(points)}
                for rank, (offset, _, sent_spans) in enumerate(ordered):
                    misaligned.append(index[offset] + rank)
                    sentence_of.extend([index[offset] + rank] * len(sent_spans))
                text, spans = inject(text, insertions)
            doc_id = f"{self.corpus_name}[{i}]"
            docs.append(
                {"id": doc_id, "text": text, "origin": r["origin"], "kind": r["kind"], "unit": units[i],
                 "injected": len(spans)}
            )
            for (s, e, t), sentence in zip(spans, sentence_of, strict=True):
                truth.append(
                    {
                        "doc_id": doc_id,
                        "doc_index": i,
                        "start": s,
                        "end": e,
                        "entity_type": t,
                        "value": text[s:e],
                        "sentence": sentence,
                        "opening": sentence == 0,
                    }
                )
            structure.append(
                {
                    "doc_id": doc_id,
                    "doc_index": i,
                    "origin": r["origin"],
                    "unit": units[i],
                    "carrier": units[i] in carriers,
                    "injected": i in chosen,
                    "n_sentences": len(points) - 1 + len(misaligned),
                    "misaligned_sentences": misaligned,
                    "opens_misaligned": bool(misaligned) and misaligned[0] == 0,
                }
            )
        per_type: dict[str, int] = {}
        for t in truth:
            per_type[t["entity_type"]] = per_type.get(t["entity_type"], 0) + 1
        injected = [s for s in structure if s["injected"]]
        info = {
            "injected_docs": len(chosen),
            "spans_per_type": per_type,
            "structure": {
                **self.structure_settings,
                "carrier_units": len(carriers),
                "carrier_docs": sum(s["carrier"] for s in structure),
                "injected_carrier_docs": sum(s["carrier"] for s in injected),
                "injected_sentences": sum(len(s["misaligned_sentences"]) for s in injected),
                "opening_docs": sum(s["opens_misaligned"] for s in injected),
            },
            **self._info(),
        }
        return docs, truth, info, {"structure.jsonl": structure}

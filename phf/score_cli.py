"""``phf-score``: pre-score a corpus into the paper's format (``texts``, ``scores``, ``avg_score``, ``num_sents``):
one JSONL file, or parquet shards resumable shard by shard (``--format parquet -o DIR``).

For users who prefer scoring large data offline, once, before training (the paper's workflow)::

    phf-score data.jsonl -o scored.jsonl --scorer profanity --workers 2
    phf-score code.jsonl -o scored.jsonl --scorer pep8                # lines; whole-file context
    phf-score --source local_pii --source-arg n_docs=500 -o pii.jsonl --scorer pii
    phf-score data.jsonl -o out.jsonl --scorer conf/scorer/pii.yaml --set score_threshold=0.3
    phf-score --source hf --source-arg names=parquet --source-arg 'data_files=[raw/*.parquet]' \
        -o scored/ --format parquet --shard-docs 50000 --scorer pii

Input records are either raw (``{"text": ...}``, segmented here: sentences, or lines for ``pep8``) or
pre-segmented (``{"texts": [...]}``, re-scored as they are); other keys pass through. Output is in
input order. Worker processes each build their own scorer; with ``--cache-dir`` they share phf's score
cache, so re-running (or training later on the same data) scores nothing twice. Scores come from the
training pipeline's scoring function (``phf.scorers.batch.score_batch``): one scoring path.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from phf.data.document import Document
from phf.data.segment import LineSegmenter, SentenceSegmenter
from phf.scorers.batch import score_batch
from phf.scorers.cache import build_scorer

SCORERS = {
    "profanity": "phf.scorers.ProfanityScorer",
    "pii": "phf.scorers.PIIScorer",
    "detoxify": "phf.scorers.DetoxifyScorer",
    "pep8": "phf.scorers.PEP8Scorer",
}
SOURCES = {
    "hf": "phf.data.sources.HFSource",  # what data=hf reads: Hub names, or parquet/json with data_files
    "local_pii": "phf.data.corpora.LocalPIISource",
    "local_toxicity": "phf.data.corpora.LocalToxicitySource",
    "local_prose": "phf.data.corpora.LocalProseSource",
    "local_python": "phf.data.sources.LocalPythonSource",
}


class InputError(ValueError):
    """Bad input data or arguments; the message names the file and line."""


# -- construction ---------------------------------------------------------------------------------
def _import(dotted: str):
    module, _, attr = dotted.rpartition(".")
    if not module:
        raise InputError(f"not a dotted path to a class: {dotted!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot import {dotted!r}: {e}") from e


def _parse_sets(pairs: list[str], what: str) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{what} expects KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def scorer_spec(scorer: str, sets: list[str]) -> tuple[str, dict]:
    """(dotted class path, kwargs) from a scorer name, a ``conf/scorer/*.yaml`` file or a class path."""
    kwargs: dict = {}
    if scorer.endswith((".yaml", ".yml")):
        import yaml

        path = Path(scorer)
        if not path.is_file():
            raise InputError(f"scorer config not found: {scorer}")
        conf = yaml.safe_load(path.read_text()) or {}
        if not isinstance(conf, dict) or "_target_" not in conf:
            raise InputError(f"{scorer}: a scorer config needs a `_target_` key")
        target = conf.pop("_target_")
        kwargs.update(conf)
    else:
        target = SCORERS.get(scorer, scorer)
    kwargs.update(_parse_sets(sets, "--set"))
    return target, kwargs


def build(target: str, kwargs: dict):
    cls = _import(target)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InputError(f"cannot build {target} with {kwargs}: {e}") from e


def make_segmenter(kind: str, scorer_name: str):

    if kind == "auto":
        kind = "line" if scorer_name == "pep8" else "sentence"
    if kind == "line":
        return LineSegmenter()
    if kind == "sentence":
        return SentenceSegmenter()
    if kind == "spacy-sentence":
        return SentenceSegmenter(backend="spacy")
    if kind == "none":
        return lambda text: [text]
    raise InputError(f"unknown segmenter {kind!r}")


# -- input ----------------------------------------------------------------------------------------
Item = collections.namedtuple("Item", "where texts extra")


def read_jsonl(path: str, text_key: str, segmenter) -> Iterator[Item]:
    """Items from a JSONL file; any bad line raises an InputError naming ``path:line``."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open input: {e.strerror}") from e
    with f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                raise InputError(f"{where}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            yield record_item(record, where, text_key, segmenter)


def record_item(record, where: str, text_key: str, segmenter) -> Item:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    extra = {k: v for k, v in record.items() if k not in ("texts", "scores", "avg_score", "num_sents", text_key)}
    if "texts" in record:
        texts = record["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"{where}: 'texts' must be a list of strings")
        if not texts:
            raise InputError(f"{where}: empty document ('texts' is an empty list)")
        return Item(where, texts, extra)
    if text_key in record:
        text = record[text_key]
        if not isinstance(text, str):
            raise InputError(f"{where}: '{text_key}' must be a string, got {type(text).__name__}")
        texts = segmenter(text)
        if not texts:
            raise InputError(f"{where}: empty document ('{text_key}' is empty)")
        return Item(where, texts, extra)
    raise InputError(f"{where}: record has neither 'texts' nor '{text_key}' (keys: {sorted(record)})")


def read_source(source, segmenter, limit: int | None) -> Iterator[Item]:
    for i, doc in enumerate(source):
        if limit is not None and i >= limit:
            return
        if not doc.texts:  # a source's placeholder for a skipped file
            continue
        texts = doc.texts if doc.scores is not None or len(doc.texts) != 1 else segmenter(doc.texts[0])
        if texts:
            yield Item(doc.id or f"document {i}", texts, {"id": doc.id} if doc.id else {})


# -- workers --------------------------------------------------------------------------------------
_WORKER = {}


def _init_worker(scorer, cache_dir):

    _WORKER["scorer"] = build_scorer(scorer, cache_dir)


def _score_chunk(chunk: list[tuple[str, list[str]]]):
    """Scores of a chunk of (where, segments) through the training pipeline's scoring function
    (``phf.scorers.batch.score_batch``); a failure names the document it happened in."""

    scorer = _WORKER["scorer"]
    t0 = time.perf_counter()
    docs = [Document(list(texts), None, id=where) for where, texts in chunk]
    out = score_batch(scorer, docs)
    if hasattr(scorer, "pop_stats"):
        stats = scorer.pop_stats()
    else:
        n = sum(len(texts) for _, texts in chunk)
        stats = {
            "segments": n,
            "segments_scored": n,
            "cache_hits": 0,
            "scorer_seconds": time.perf_counter() - t0,
        }
    return out, stats


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_items(items: Iterator[Item], scorer, emit, workers: int, chunk_docs: int, cache_dir, progress: bool):
    """Score ``items`` in ``workers`` processes and hand each record, in input order, to ``emit``."""
    from tqdm import tqdm

    totals = collections.Counter()
    bar = tqdm(unit="doc", disable=not progress, desc=f"phf-score {scorer.name}", dynamic_ncols=True)

    def write(chunk: list[Item], result):
        scores, stats = result
        totals.update({k: v for k, v in stats.items() if k != "hit_rate"})
        for item, s in zip(chunk, scores, strict=True):
            record = {
                "texts": item.texts,
                "scores": s,
                "avg_score": sum(s) / len(s) if s else 0.0,
                "num_sents": len(item.texts),
                **item.extra,
            }
            emit(record)
            totals["documents"] += 1
            totals["segment_count"] += len(item.texts)
            totals["chars"] += sum(len(t) for t in item.texts)
        bar.update(len(chunk))

    try:
        if workers <= 1:
            _init_worker(scorer, cache_dir)
            for chunk in _chunks(items, chunk_docs):
                write(chunk, _score_chunk([(i.where, i.texts) for i in chunk]))
            return totals
        # fork shares the parent's imported libraries and built engines; a CUDA model must not be
        # forked after CUDA is initialised, so the Detoxify scorer uses spawn
        method = "fork" if "fork" in mp.get_all_start_methods() and scorer.name != "detoxify" else "spawn"
        if method == "fork":
            scorer.score(["phf-score warm-up."])  # load the library once, in the parent, for all workers
        ctx = mp.get_context(method)
        pending: collections.deque = collections.deque()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(scorer, cache_dir)) as pool:
            for chunk in _chunks(items, chunk_docs):
                pending.append(
                    (chunk, pool.apply_async(_score_chunk, ([(i.where, i.texts) for i in chunk],)))
                )
                while len(pending) > 2 * workers:
                    c, r = pending.popleft()
                    write(c, r.get())
            while pending:
                c, r = pending.popleft()
                write(c, r.get())
        return totals
    finally:
        bar.close()


def jsonl_emitter(out):
    return lambda record: out.write(json.dumps(record, ensure_ascii=False) + "\n")


class ParquetShards:
    """Records → ``DIR/part-00000.parquet``, ``part-00001.parquet``, ... of ``shard_docs`` records each,
    in the paper's record format. Each shard is written to a temporary name and renamed into place, so
    a killed run leaves only complete shards; a rerun with the same settings (``phf_score.json``)
    counts them, skips their input documents without scoring them and continues with the next shard."""

    MANIFEST = "phf_score.json"

    def __init__(self, out_dir: Path, shard_docs: int, settings: dict):
        self.dir, self.shard_docs, self.rows = out_dir, shard_docs, []
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / self.MANIFEST
        settings = {**settings, "shard_docs": shard_docs}
        if manifest.is_file():
            stored = json.loads(manifest.read_text())
            if stored != settings:
                diff = {k: (stored.get(k), settings.get(k)) for k in set(stored) | set(settings)
                        if stored.get(k) != settings.get(k)}
                raise InputError(f"{manifest}: these shards were written with other settings {diff} (stored, now); "
                                 "use another output directory or the same settings to continue them")
        else:
            manifest.write_text(json.dumps(settings, indent=2) + "\n")
        done = sorted(self.dir.glob("part-*.parquet"))
        expected = [self.dir / f"part-{i:05d}.parquet" for i in range(len(done))]
        if done != expected:
            raise InputError(f"{self.dir}: the shards are not part-00000 .. part-{len(done) - 1:05d} "
                             f"(found {[p.name for p in done][:5]}...); remove the stray files")
        self.next = len(done)

    @property
    def done_docs(self) -> int:
        return self.next * self.shard_docs

    def __call__(self, record: dict) -> None:
        self.rows.append(record)
        if len(self.rows) >= self.shard_docs:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.dir / f"part-{self.next:05d}.parquet"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(pa.Table.from_pylist(self.rows), tmp)
        os.replace(tmp, path)
        self.next, self.rows = self.next + 1, []


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="phf-score",
        description="Pre-score a corpus into the paper's format (texts, scores, avg_score, num_sents).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("::", 1)[1].split("Input records", 1)[0],
    )
    p.add_argument("input", nargs="?", help="JSONL file of {'text': ...} or {'texts': [...]} records")
    p.add_argument("--source", help=f"a named source instead of a file: {', '.join(SOURCES)} or a class path")
    p.add_argument("--source-arg", action="append", default=[], metavar="KEY=VALUE", help="source argument")
    p.add_argument("-o", "--output", required=True,
                   help="output JSONL ('-' for stdout), or with --format parquet a directory of shards")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"],
                   help="jsonl (one file) or parquet (DIR/part-NNNNN.parquet, resumable shard by shard)")
    p.add_argument("--shard-docs", type=int, default=10000, help="documents per parquet shard (default 10000)")
    p.add_argument(
        "--scorer", required=True, help=f"{', '.join(SCORERS)}, a conf/scorer/*.yaml file or a class path"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="scorer argument")
    p.add_argument(
        "--segmenter",
        default="auto",
        choices=["auto", "sentence", "spacy-sentence", "line", "none"],
        help="how raw 'text' is split (auto: line for pep8, else sentence)",
    )
    p.add_argument("--text-key", default="text", help="the raw text field of input records (default: text)")
    p.add_argument("--workers", type=int, default=1, help="scoring processes (default 1)")
    p.add_argument("--chunk-docs", type=int, default=64, help="documents per worker task (default 64)")
    p.add_argument("--cache-dir", default=None, help="phf's score cache directory (shared with training)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many documents")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if (args.input is None) == (args.source is None):
        p.error("give exactly one of INPUT or --source")
    if args.workers < 1 or args.chunk_docs < 1 or args.shard_docs < 1:
        p.error("--workers, --chunk-docs and --shard-docs must be >= 1")
    if args.format == "parquet" and args.output == "-":
        p.error("--format parquet writes a directory of shards: give -o DIR")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    tmp = None
    try:
        target, kwargs = scorer_spec(args.scorer, args.set)
        scorer = build(target, kwargs)
        segmenter = make_segmenter(args.segmenter, scorer.name)
        if args.source:
            source = build(
                SOURCES.get(args.source, args.source), _parse_sets(args.source_arg, "--source-arg")
            )
            items = read_source(source, segmenter, args.limit)
        else:
            if not Path(args.input).is_file():
                raise InputError(f"{args.input}: input file not found")
            items = read_jsonl(args.input, args.text_key, segmenter)
            if args.limit is not None:
                items = (item for _, item in zip(range(args.limit), items, strict=False))
        if args.format == "parquet":
            shards = ParquetShards(Path(args.output), args.shard_docs, {
                "input": args.input or args.source, "source_args": args.source_arg, "scorer": args.scorer,
                "set": args.set, "segmenter": args.segmenter, "text_key": args.text_key, "limit": args.limit})
            if shards.done_docs:
                print(f"phf-score: {shards.next} shards already in {args.output}: continuing after document "
                      f"{shards.done_docs}", file=sys.stderr)
            items = itertools.islice(items, shards.done_docs, None)  # read again, never scored again
            totals = score_items(items, scorer, shards, args.workers, args.chunk_docs, args.cache_dir,
                                 not args.no_progress)
            shards.flush()
        elif args.output == "-":
            totals = score_items(
                items, scorer, jsonl_emitter(sys.stdout), args.workers, args.chunk_docs, args.cache_dir, False
            )
        else:
            out_path = Path(args.output)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                totals = score_items(
                    items, scorer, jsonl_emitter(out), args.workers, args.chunk_docs, args.cache_dir,
                    not args.no_progress
                )
            os.replace(tmp, out_path)
            tmp = None
    except (InputError, RuntimeError, FileNotFoundError, ValueError) as e:
        print(f"phf-score: error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    wall = time.perf_counter() - t0
    summary = {
        "documents": totals["documents"],
        "segments": totals["segment_count"],
        "segments_scored": totals.get("segments_scored", totals["segment_count"]),
        "cache_hits": totals.get("cache_hits", 0),
        "scorer_seconds": round(totals.get("scorer_seconds", 0.0), 3),
        "wall_seconds": round(wall, 3),
        "segments_per_second": round(totals["segment_count"] / wall, 1) if wall else None,
        "output": args.output,
    }
    print(f"phf-score: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

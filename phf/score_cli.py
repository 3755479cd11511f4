"""``phf-score``: pre-score a corpus offline into the paper's record format (``texts``, ``scores``,
``avg_score``, ``num_sents``): one JSONL file, or parquet shards resumable shard by shard.

For users who prefer scoring large data once, before training (the paper's workflow)::

    phf-score data=jsonl data.source.path=data.jsonl task=toxicity_profanity score.out=scored.jsonl
    phf-score data=jsonl data.source.path=code.jsonl task=pep8 score.out=scored.jsonl   # lines, file context
    phf-score data=local_pii data.source.n_docs=500 task=pii score.out=pii.jsonl
    phf-score data=jsonl data.source.path=data.jsonl task=pii scorer.score_threshold=0.3 score.out=out.jsonl
    phf-score data=hf data.source.names=[parquet] 'data.source.data_files=[raw/*.parquet]' task=pii \\
        score.out=scored/ score.format=parquet score.shard_docs=50000 data.num_workers=2

A Hydra app over phf-train's config (``conf/score.yaml``: the root config plus the ``score`` block,
``ScoreSettings``): the documents come from the ``data`` group's source, are segmented by the task's
segmenter and scored by the ``scorer`` group behind the score cache in ``cache_dir`` (null: no cache),
through the training pipeline itself (``BlockStream.scored_documents``: the same segmenting, the same
scoring function ``phf.scorers.batch.score_batch`` with its error attribution, ``data.on_error``, and
``data.num_workers`` worker processes that score ahead). Every document of the source is scored (no
held-out split); records already in the paper's format pass through as they are, as in training. Output
is in source order; a record keeps the source's metadata (``data.source.meta_keys`` for JSONL).
A bad record or a scorer failure is printed naming the file and line (or document); no partial output
file is left behind, and complete parquet shards stay.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from phf.entry import hydra_entry
from phf.settings import bind

FORMATS = ("jsonl", "parquet")


@dataclass
class ScoreSettings:
    """The ``score`` block of ``conf/score.yaml`` (the file explains every key)."""

    out: str
    format: str = "jsonl"
    shard_docs: int = 10000
    limit: int | None = None
    progress: bool = True
    push_to_hub: str | None = None  # a Hub dataset repo id: upload the output there once it is complete
    private: bool = False  # create the dataset repo private (push_to_hub)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"score.format must be one of {FORMATS}, got {self.format!r}")
        if isinstance(self.shard_docs, bool) or not isinstance(self.shard_docs, int) or self.shard_docs < 1:
            raise ValueError(f"score.shard_docs must be a positive integer, got {self.shard_docs!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 0):
            raise ValueError(f"score.limit must be an integer >= 0 or null, got {self.limit!r}")
        if self.format == "parquet" and self.out == "-":
            raise ValueError("score.format=parquet writes a directory of shards: set score.out=DIR")
        if self.push_to_hub is not None and self.out == "-":
            raise ValueError("score.push_to_hub uploads the written output: set score.out to a file or directory")


def push_output(settings: ScoreSettings, summary: dict) -> list[str]:
    """Upload the complete output to the Hub dataset repo ``score.push_to_hub``: parquet shards as
    ``data/part-NNNNN.parquet`` (with the shards' manifest), a JSONL file as ``data/<name>``, the layout
    ``datasets.load_dataset(repo_id)`` reads. Errors are one line (``phf.push.commit_to_hub``)."""
    from huggingface_hub import CommitOperationAdd

    from phf.push import commit_to_hub

    out = Path(settings.out)
    files = sorted(out.glob("part-*.parquet")) + [out / ParquetShards.MANIFEST] if out.is_dir() else [out]
    ops = [CommitOperationAdd(path_in_repo=f"data/{f.name}", path_or_fileobj=str(f)) for f in files if f.is_file()]
    message = f"phf-score: {summary['documents']} documents, {summary['segments']} segments"
    return commit_to_hub(settings.push_to_hub, [(ops, message)], repo_type="dataset", private=settings.private,
                         token=None, what=str(out), prog="phf-score")


def record(doc) -> dict:
    """A scored document in the paper's record format, with its source metadata."""
    return {"texts": doc.texts, "scores": doc.scores, "avg_score": doc.avg_score, "num_sents": len(doc.texts),
            **doc.meta}


class ParquetShards:
    """Records → ``DIR/part-00000.parquet``, ``part-00001.parquet``, ... of ``shard_docs`` records each,
    in the paper's record format. Each shard is written to a temporary name and renamed into place, so
    a killed run leaves only complete shards; each shard records the source position after its last
    document. A rerun with the same settings (``phf_score.json``) continues from there, reading on
    without scoring the documents before it."""

    MANIFEST = "phf_score.json"
    POSITION = b"phf_score_next_position"

    def __init__(self, out_dir: Path, shard_docs: int, settings: dict):
        self.dir, self.shard_docs, self.rows, self.position = out_dir, shard_docs, [], 0
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / self.MANIFEST
        settings = {**settings, "shard_docs": shard_docs}
        if manifest.is_file():
            stored = json.loads(manifest.read_text())
            if stored != settings:
                diff = {k: (stored.get(k), settings.get(k)) for k in set(stored) | set(settings)
                        if stored.get(k) != settings.get(k)}
                raise ValueError(f"{manifest}: these shards were written with other settings {diff} (stored, now); "
                                 "use another output directory or the same settings to continue them")
        else:
            manifest.write_text(json.dumps(settings, indent=2) + "\n")
        done = sorted(self.dir.glob("part-*.parquet"))
        expected = [self.dir / f"part-{i:05d}.parquet" for i in range(len(done))]
        if done != expected:
            raise ValueError(f"{self.dir}: the shards are not part-00000 .. part-{len(done) - 1:05d} "
                             f"(found {[p.name for p in done][:5]}...); remove the stray files")
        self.next = len(done)
        self.start_position = self._stored_position(done[-1]) if done else 0

    def _stored_position(self, path: Path) -> int:
        import pyarrow.parquet as pq

        value = (pq.read_schema(path).metadata or {}).get(self.POSITION)
        if value is None or not value.isdigit():
            raise ValueError(f"{path}: no source position in its metadata ({self.POSITION.decode()}): not a shard "
                             "phf-score wrote; remove it or use another output directory")
        return int(value)

    @property
    def done_docs(self) -> int:
        return self.next * self.shard_docs

    def __call__(self, rec: dict, position: int) -> None:
        self.rows.append(rec)
        self.position = position + 1
        if len(self.rows) >= self.shard_docs:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.dir / f"part-{self.next:05d}.parquet"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        table = pa.Table.from_pylist(self.rows)
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                      self.POSITION: str(self.position).encode()}), tmp)
        os.replace(tmp, path)
        self.next, self.rows = self.next + 1, []


@contextlib.contextmanager
def jsonl_output(out: str):
    """``emit(record, position)`` into ``out`` ('-': stdout), written to a temporary file renamed into
    place on success: a failure leaves no partial file."""
    if out == "-":
        yield lambda rec, position: sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield lambda rec, position: f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_stream(cfg):
    """The pipeline's stream over every document of ``cfg.data``'s source (no held-out split, no
    objective, no tokenizer): the task's segmenter and ``cfg.scorer`` behind the score cache."""
    from hydra.utils import instantiate

    from phf.data.pipeline import BlockStream, build_data
    from phf.scorers import build_scorer

    data = build_data(cfg.data)
    return BlockStream(source=data.source, segmenter=instantiate(cfg.task.segmenter),
                       scorer=build_scorer(cfg.scorer, cfg.get("cache_dir")), tokenizer=None,
                       block_size=cfg.model.block_size, val_fraction=0.0, score_batch_docs=data.score_batch_docs,
                       on_error=data.on_error, num_workers=data.num_workers,
                       worker_check_seconds=data.worker_check_seconds, seed=cfg.seed)


def score(cfg) -> dict:
    """Score ``cfg``'s documents into ``score.out``; returns the summary (also printed to stderr)."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    settings = bind(ScoreSettings, cfg.score, "score")
    if settings.push_to_hub is not None:  # checked before anything is scored
        from phf.push import check_online, check_repo_id

        check_repo_id(settings.push_to_hub, "score.push_to_hub", "user/my-corpus-scored", prog="phf-score")
        check_online(settings.push_to_hub, settings.out, prog="phf-score")
    t0 = time.perf_counter()
    stream = build_stream(cfg)
    written = 0
    if settings.format == "parquet":
        chosen = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "scorer")}
        shards = ParquetShards(Path(settings.out), settings.shard_docs, {
            **chosen, "segmenter": OmegaConf.to_container(cfg.task.segmenter, resolve=True), "limit": settings.limit})
        if shards.next:
            print(f"phf-score: {shards.next} shards already in {settings.out}: continuing after document "
                  f"{shards.done_docs} (source position {shards.start_position})", file=sys.stderr)
        stream.position, written = shards.start_position, shards.done_docs  # read on, never scored again
        output = contextlib.nullcontext(shards)
    else:
        output = jsonl_output(settings.out)
    totals = {"documents": 0, "segments": 0}
    bar = tqdm(unit="doc", disable=not settings.progress or settings.out == "-", dynamic_ncols=True,
               desc=f"phf-score {getattr(stream.scorer, 'name', type(stream.scorer).__name__)}")
    batches = stream.scored_documents()
    try:
        with output as emit:
            for position, doc in (pair for batch in batches for pair in batch):
                if settings.limit is not None and written >= settings.limit:
                    break
                emit(record(doc), position)
                written += 1
                totals["documents"] += 1
                totals["segments"] += len(doc.texts)
                bar.update(1)
            if settings.format == "parquet":
                emit.flush()
    finally:
        batches.close()  # stops the stream's worker processes
        bar.close()
    wall = time.perf_counter() - t0
    stats = getattr(stream, "scorer_stats", {})
    summary = {
        "documents": totals["documents"],
        "segments": totals["segments"],
        "segments_scored": stats.get("segments_scored", totals["segments"]),
        "cache_hits": stats.get("cache_hits", 0),
        "skipped_bad": stream.stats["skipped_bad"],
        "scorer_seconds": round(stats.get("scorer_seconds", 0.0), 3),
        "wall_seconds": round(wall, 3),
        "segments_per_second": round(totals["segments"] / wall, 1) if wall else None,
        "output": settings.out,
    }
    print(f"phf-score: {json.dumps(summary)}", file=sys.stderr)
    if settings.push_to_hub is not None:
        summary["pushed"] = push_output(settings, summary)
        print(f"phf-score: pushed {settings.out} to the dataset repo {settings.push_to_hub}: "
              f"{', '.join(summary['pushed'])}", file=sys.stderr)
    return summary


def job(cfg) -> dict:
    """The Hydra job: a bad record or setting, a missing file or a scorer failure is printed (exit status
    2); nothing is recorded in the working directory (phf-score has no run directory)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return score(cfg)
    except InstantiationException as e:  # building a config group: the builder's own message
        print(f"phf-score: error: {e.__cause__ or e}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, RuntimeError, OSError, KeyError, OmegaConfBaseException) as e:
        print(f"phf-score: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # a bug: the traceback, and still no error.txt in the working directory
        traceback.print_exc()
        sys.exit(1)


def main() -> None:
    hydra_entry(job, config_name="score")


if __name__ == "__main__":  # python -m phf.score_cli: run the module by its name, whose ScoreSettings the config names
    from phf.score_cli import main as score_main

    score_main()

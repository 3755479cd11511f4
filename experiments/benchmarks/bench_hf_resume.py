"""Resuming a Hugging Face stream: re-reading every earlier record vs the dataset's own state (CPU).

Writes a local multi-shard parquet dataset in the paper's pre-scored record format (``texts``,
``scores``, ``avg_score``, ``num_sents``), then times ``HFSource.iter_from(P)`` up to its first document
for positions P across the dataset, two ways:

* **re-read**: no state (what phf did before, and what a checkpoint without a source state still does):
  the stream reads and drops the first P records;
* **state**: the ``IterableDataset.state_dict()`` recorded at P during a pass (what a phf checkpoint of
  ``data=hf`` holds): ``load_state_dict`` and go.

Each time is the median of ``--repeats`` runs (interleaved); ``--world 2`` times rank 0 of 2
(``split_dataset_by_node``: half the shards, positions count that rank's records). Measures and prints
a markdown table; asserts nothing.

    python experiments/benchmarks/bench_hf_resume.py --shards 16 --per-shard 25000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
    os.environ.setdefault(k, v)


def write_dataset(root: Path, shards: int, per_shard: int, row_group: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    sent = "The quick brown fox jumps over the lazy dog near the river bank today. "
    for s in range(shards):
        texts = [[f"Document {s}-{i}. ", sent, sent] for i in range(per_shard)]
        scores = [[0.001, 0.002, 0.0] for _ in range(per_shard)]
        table = pa.table({"texts": texts, "scores": scores, "avg_score": [0.001] * per_shard,
                          "num_sents": [3] * per_shard})
        files.append(str(root / f"train-{s:05d}-of-{shards:05d}.parquet"))
        pq.write_table(table, files[-1], row_group_size=row_group)
    return files


class Keep(dict):
    """A ``record`` dict that keeps only the positions asked for (a full pass would hold every state)."""

    def __init__(self, wanted):
        super().__init__()
        self.wanted = set(wanted)

    def __setitem__(self, key, value):
        if key in self.wanted:
            super().__setitem__(key, value)


def first_doc_seconds(src, position: int, world: int, state) -> float:
    t0 = time.perf_counter()
    next(iter(src.iter_from(position, rank=0, world_size=world, state=state)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--per-shard", type=int, default=25000)
    ap.add_argument("--row-group", type=int, default=1000)
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from phf.data.sources import HFSource

    with tempfile.TemporaryDirectory(prefix="phf-bench-hf-") as tmp:
        os.environ["HF_HOME"] = str(Path(tmp) / "hf_home")
        t0 = time.perf_counter()
        files = write_dataset(Path(tmp), args.shards, args.per_shard, args.row_group)
        print(f"wrote {args.shards} shards × {args.per_shard} records in {time.perf_counter() - t0:.1f} s")
        src = HFSource("parquet", data_files=files)
        total = args.shards * args.per_shard // args.world
        positions = sorted({0, total // 16, total // 8, total // 4, total // 2, total - 1})
        record = Keep(p for p in positions if p > 0)
        for rec in (None, record):  # what recording the state after every record costs
            t0 = time.perf_counter()
            n = sum(1 for _ in src.iter_from(0, rank=0, world_size=args.world, record=rec))
            full = time.perf_counter() - t0
            print(f"one full pass of rank 0/{args.world}, {'recording states' if rec is not None else 'no record'}: "
                  f"{n} records in {full:.1f} s ({n / full:,.0f} records/s)")
        rows = []
        for p in positions:
            reread, restored = [], []
            for _ in range(args.repeats):
                reread.append(first_doc_seconds(src, p, args.world, None))
                restored.append(first_doc_seconds(src, p, args.world, record.get(p)))
            rows.append((p, statistics.median(reread), statistics.median(restored)))
        print(f"\n| position (records of rank 0/{args.world}) | re-read: s to first document | "
              "state: s to first document |")
        print("|---:|---:|---:|")
        for p, a, b in rows:
            print(f"| {p:,} | {a:.2f} | {b:.2f} |")


if __name__ == "__main__":
    main()

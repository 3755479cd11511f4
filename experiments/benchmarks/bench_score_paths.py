"""Documents/s of phf-score (parquet shards) against the training pipeline's scoring of the same documents.

Both call ``phf.scorers.batch.score_batch``; this measures what each path adds around it. Input: the first
``--docs`` files of the interpreter's standard library (``LocalPythonSource``) as raw ``{"text"}``
records, scored with ``--scorer`` (pep8: lines in file context; profanity: sentences). **phf-score**:
``phf.score_cli.main`` with ``--format parquet`` (one process, ``--chunk-docs`` documents per call),
reading the JSONL and writing shards. **pipeline**: ``BlockStream.process`` on batches of the same size
(segment + score; no tokenizing or packing). Medians of ``--repeats`` interleaved runs, no score cache.
Measures and prints; asserts nothing.

    python experiments/benchmarks/bench_score_paths.py --docs 400 --scorer pep8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(k, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--scorer", default="pep8", choices=["pep8", "profanity"])
    ap.add_argument("--chunk-docs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from phf.data.pipeline import BlockStream
    from phf.data.sources import LocalPythonSource
    from phf.score_cli import build as build_scorer
    from phf.score_cli import main as score_main
    from phf.score_cli import make_segmenter, scorer_spec
    from phf.tokenizer import gpt2_tokenizer

    docs = [d for d in LocalPythonSource(max_files=args.docs * 2, max_chars=100_000) if d.texts][: args.docs]
    with tempfile.TemporaryDirectory(prefix="phf-bench-score-") as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"text": d.texts[0]}) + "\n" for d in docs))
        target, kwargs = scorer_spec(args.scorer, [])
        scorer = build_scorer(target, kwargs)
        stream = BlockStream(LocalPythonSource(max_files=1), make_segmenter("auto", args.scorer), scorer,
                             gpt2_tokenizer(), block_size=8, val_fraction=0.0, score_batch_docs=args.chunk_docs)
        batches = [[(i, d) for i, d in enumerate(docs[j : j + args.chunk_docs], j)]
                   for j in range(0, len(docs), args.chunk_docs)]
        cli, pipe = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            score_main([str(src), "-o", f"{tmp}/out{r}", "--format", "parquet", "--scorer", args.scorer,
                        "--chunk-docs", str(args.chunk_docs), "--no-progress"])
            cli.append(len(docs) / (time.perf_counter() - t0))
            for b in batches:  # fresh documents: nothing carries scores from the previous run
                for k, (i, d) in enumerate(b):
                    b[k] = (i, type(d)(list(d.texts), None, id=d.id))
            t0 = time.perf_counter()
            for b in batches:
                stream.process(b)
            pipe.append(len(docs) / (time.perf_counter() - t0))
        print(f"| scorer | documents | phf-score docs/s | pipeline docs/s |\n|---|---:|---:|---:|\n"
              f"| {args.scorer} | {len(docs)} | {statistics.median(cli):,.1f} ({min(cli):,.1f}–{max(cli):,.1f}) | "
              f"{statistics.median(pipe):,.1f} ({min(pipe):,.1f}–{max(pipe):,.1f}) |")


if __name__ == "__main__":
    main()

"""Documents/s of phf-score (parquet shards) against the training pipeline's scoring of the same documents.

Both call ``phf.scorers.batch.score_batch``; this measures what each path adds around it. Input: the first
``--docs`` files of the interpreter's standard library (``LocalPythonSource``) as raw ``{"text"}``
records, scored with ``--scorer`` (pep8: ``task=pep8``, lines in file context; profanity:
``task=toxicity_profanity``, sentences). **phf-score**: its job (``phf.score_cli.score``) on the composed
``conf/score.yaml`` with ``score.format=parquet`` (one process, ``data.score_batch_docs=--chunk-docs``),
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
    from hydra.utils import instantiate

    from phf.data.pipeline import BlockStream
    from phf.data.sources import LocalPythonSource
    from phf.entry import compose
    from phf.score_cli import score
    from phf.scorers import build_scorer
    from phf.tokenizer import gpt2_tokenizer

    task = {"pep8": "pep8", "profanity": "toxicity_profanity"}[args.scorer]

    docs = [d for d in LocalPythonSource(max_files=args.docs * 2, max_chars=100_000) if d.texts][: args.docs]
    with tempfile.TemporaryDirectory(prefix="phf-bench-score-") as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"text": d.texts[0]}) + "\n" for d in docs))
        base = [f"task={task}", "data=jsonl", f"data.source.path={src}", "cache_dir=null",
                f"data.score_batch_docs={args.chunk_docs}", "score.format=parquet", "score.progress=false"]
        cfg = compose([*base, "score.out=unused"], config_name="score")
        stream = BlockStream(LocalPythonSource(max_files=1), instantiate(cfg.task.segmenter), build_scorer(cfg.scorer),
                             gpt2_tokenizer(), block_size=8, val_fraction=0.0, score_batch_docs=args.chunk_docs)
        batches = [[(i, d) for i, d in enumerate(docs[j : j + args.chunk_docs], j)]
                   for j in range(0, len(docs), args.chunk_docs)]
        cli, pipe = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            score(compose([*base, f"score.out={tmp}/out{r}"], config_name="score"))
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

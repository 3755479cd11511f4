"""Fit the guidance reward model alone with each aggregation on the same PEP8 lists; report held-out
ranking agreement and localisation AUROC (no policy training).

    OMP_NUM_THREADS=1 python experiments/guidance_pep8/aggregations.py --out experiments/guidance_pep8/results/aggregations.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scored_docs  # noqa: E402

from phf.guidance import GuidanceRewards  # noqa: E402
from phf.guidance.localisation import pep8_localisation  # noqa: E402
from phf.tokenizer import gpt2_tokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train-docs", type=int, default=24)
    p.add_argument("--val-docs", type=int, default=12)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--chunk-tokens", type=int, default=16)
    p.add_argument("--fit-steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--n-embd", type=int, default=32)
    p.add_argument("--head-hidden", type=int, default=64)
    p.add_argument("--lists-per-batch", type=int, default=16)
    p.add_argument("--prepare-blocks", type=int, default=1500)
    p.add_argument("--runs", default="avg:2.0,softmin:0.1,softmax:0.1",
                   help="aggregation:temperature,... (sum = avg for equal-length chunks)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    t0 = time.perf_counter()
    tok = gpt2_tokenizer()
    train_docs = scored_docs("train", a.train_docs)
    val_docs = scored_docs("validation", a.val_docs)
    print(f"scored {len(train_docs)} train / {len(val_docs)} held-out documents in {time.perf_counter() - t0:.0f}s",
          flush=True)
    results = []
    for spec in a.runs.split(","):
        agg, tau = spec.split(":")
        t1 = time.perf_counter()
        src = GuidanceRewards(tokenizer=tok, block_size=a.block_size, chunk_tokens=a.chunk_tokens, aggregation=agg,
                              temperature=float(tau), fit_steps=a.fit_steps, prepare_blocks=a.prepare_blocks,
                              lr=a.lr, model={"n_embd": a.n_embd, "head_hidden": a.head_hidden},
                              lists_per_batch=a.lists_per_batch, patience=0, eval_every=25, seed=0)
        fit = src.prepare(train_docs)
        loc = pep8_localisation(src.learner, val_docs, tok, block_size=a.block_size)
        row = {"aggregation": agg, "temperature": float(tau), **fit, **loc, "seconds": time.perf_counter() - t1}
        results.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    print(f"total {time.perf_counter() - t0:.0f}s")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()

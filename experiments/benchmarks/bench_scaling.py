"""How cost grows: tokens/s and peak RSS against block size and model width/depth (phf's loop, CPU).

* block size 128 → 1024 at a fixed 1,024 tokens per micro-batch (B = 1024 / T) on gpt2_tiny's body
  (2 layers, d 128; context = T): the per-token cost that grows with T is attention's;
* width/depth at 1 × 256 tokens: (layers, d, heads) = (2, 128, 4), (4, 256, 4), (6, 384, 6),
  (12, 768, 12) = GPT-2 small.

Engines are bench_loop's (default: phf as shipped and the baseline), each in its own worker process,
alternating point by point; one chunk of ``--steps`` steps per point and engine (a trend, not a
precise number: see bench_loop for repeated, paired measurements).

    python experiments/benchmarks/bench_scaling.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_loop as BL  # noqa: E402
import common as C  # noqa: E402

BLOCKS = ["gpt2_tiny:8x128", "gpt2_tiny:4x256", "gpt2_tiny:2x512", "gpt2_tiny:1x1024"]
WIDTHS = ["gpt2_small:1x256:L2d128h4", "gpt2_small:1x256:L4d256h4", "gpt2_small:1x256:L6d384h6",
          "gpt2_small:1x256:L12d768h12"]


def params_m(shape: str) -> str:
    """Parameter count (millions) of a shape's model with the GPT-2 vocabulary (tied embeddings)."""
    s = C.shape_spec(shape)
    cfg = C.compose([f"model={s['model']}", f"model.block_size={s['block']}", *s["model_overrides"]]).model
    V, d, L = 50257, cfg.n_embd, cfg.n_layer
    n = V * d + cfg.block_size * d + L * (12 * d * d + 13 * d) + 2 * d
    return f"{n / 1e6:.1f}M"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="phf,baseline")
    ap.add_argument("--objective", default="mle")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--grid", default="blocks,widths", help="blocks and/or widths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", default=None)
    a = ap.parse_args(argv)
    engines = a.engines.split(",")
    shapes = (BLOCKS if "blocks" in a.grid else []) + (WIDTHS if "widths" in a.grid else [])
    print(f"# Scaling ({time.strftime('%Y-%m-%d %H:%M')}; {C.machine()})\n", flush=True)
    t0 = time.perf_counter()
    res = BL.compare(engines, shapes, [a.objective], {s: a.rounds for s in shapes}, {s: a.steps for s in shapes},
                     a.threads, ref=engines[0], log_path=a.log)
    head = ["shape (model:B×T[:size])", "params", *(f"{e} tokens/s" for e in engines),
            *(f"{e} peak RSS MiB" for e in engines)]
    for title, group in (("Block size at 1,024 tokens per micro-batch (gpt2_tiny body)", BLOCKS),
                         ("Width/depth at 1 × 256 tokens", WIDTHS)):
        group = [s for s in group if s in shapes]
        if not group:
            continue
        print(f"\n## {title}, {a.objective.upper()}\n")
        rows = []
        for s in group:
            runs = res[(s, a.objective)]["runs"]
            rows.append([s, params_m(s), *(C.fmt(C.med([x["tokens_per_s"] for x in runs[e]])) for e in engines),
                         *(C.fmt(C.med([x["peak_rss_mb"] for x in runs[e]])) for e in engines)])
        C.table(head, rows)
    print(f"\n({a.steps} steps per point and engine, the first untimed; {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

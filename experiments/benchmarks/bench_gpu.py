"""GPT-2 small on one GPU through ``phf.train.train``: tokens/s, MFU and the largest micro-batch that fits.

    python experiments/benchmarks/bench_gpu.py                       # bf16, torch.compile, fused AdamW, T=1024
    python experiments/benchmarks/bench_gpu.py --max-batch           # also: double the micro-batch until OOM
    python experiments/benchmarks/bench_gpu.py --device cpu --precision fp32 --no-compile \\
        --model gpt2_tiny --block 128 --batch 4 --steps 4            # a CPU smoke run of the same code path

MFU = tokens/s × model FLOPs per token / the device's measured peak. FLOPs per token (forward +
backward) = 6·N + 12·L·d·T (N parameters with the tied embedding counted once, L layers, width d,
context T: the attention score and value products). The peak is measured here, not taken from a data
sheet: the best of several large square bf16 matmuls (``--peak-n``). Data: pre-packed local_pep8
blocks (``common.prepacked``), so the scorer never sits on the GPU's critical path; the model,
objective, optimizer (fused AdamW on CUDA) and loop are phf's own. Steps before ``--warmup`` (compile)
are not timed. Measures and prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import torch  # noqa: E402

CACHE = C.ROOT / ".bench_cache"


def measured_peak_flops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Best FLOP/s of an n×n×n matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def flops_per_token(model, block: int) -> float:
    cfg = model.lm.config
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * block


def run(a, batch: int) -> dict:
    """Train ``a.steps`` steps at micro-batch ``batch``; tokens/s over the steps after ``a.warmup``."""
    from phf.tracking import read_metrics
    from phf.train import train

    blocks = C.make_blocks(max(64, 4 * batch), a.block, CACHE)
    with tempfile.TemporaryDirectory() as d, C.prepacked(blocks):
        base = C.bench_overrides(a.model, a.objective, batch, a.block, a.steps, d)
        base = [o for o in base if not o.startswith(("trainer.device=", "trainer.precision="))]
        cfg = C.compose([*base, f"trainer.device={a.device}", f"trainer.precision={a.precision}",
                         f"trainer.compile={str(a.compile).lower()}", "trainer.log_every=1"])
        if a.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
        rows = [r for r in read_metrics(Path(d)) if "tokens_per_s" in r][a.warmup:]
        mem = torch.cuda.max_memory_allocated() / 2**30 if a.device == "cuda" else C.peak_rss_mb() / 1024
    if not rows:
        raise SystemExit(f"--steps {a.steps} leaves no timed step after --warmup {a.warmup}")
    return {"batch": batch, "tokens_per_s": C.med([r["tokens_per_s"] for r in rows]), "peak_mem_gib": mem,
            "wall_s": wall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2_small")
    ap.add_argument("--objective", default="mle")
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10, help="logged steps not timed (compilation, autotuning)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--peak-n", type=int, default=8192, help="matmul size for the measured peak")
    ap.add_argument("--max-batch", action="store_true", help="double the micro-batch until out of memory")
    a = ap.parse_args(argv)
    if a.warmup >= a.steps:
        ap.error("--warmup must be smaller than --steps")
    if a.max_batch and a.device != "cuda":
        ap.error("--max-batch needs --device cuda (it stops at CUDA's out-of-memory error)")
    device = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.precision]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else C.machine()
    peak = measured_peak_flops(device, dtype, a.peak_n if device.type == "cuda" else min(a.peak_n, 1024))
    print(f"# GPU benchmark: {a.model}, T={a.block}, {a.precision}, compile={a.compile}, {name}\n")
    print(f"measured {a.precision} matmul peak: {peak / 1e12:.1f} TFLOP/s\n", flush=True)

    from hydra.utils import instantiate


    cfg = C.compose(C.bench_overrides(a.model, a.objective, 1, a.block, 1, "/tmp/unused"))
    model = instantiate(cfg.model, tokenizer=instantiate(cfg.tokenizer), objective=instantiate(cfg.objective))
    fpt = flops_per_token(model, a.block)
    del model
    batches = [a.batch]
    if a.max_batch:
        batches = [2**k for k in range(0, 12)]
    rows, results = [], []
    for b in batches:
        try:
            r = run(a, b)
        except torch.cuda.OutOfMemoryError:
            rows.append([b, "out of memory", "", "", ""])
            results.append({"batch": b, "oom": True})
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        mfu = r["tokens_per_s"] * fpt / peak
        r["mfu"] = mfu
        results.append(r)
        rows.append([b, C.fmt(r["tokens_per_s"]), f"{100 * mfu:.1f}%", f"{r['peak_mem_gib']:.1f}", f"{r['wall_s']:.0f} s"])
    print(f"model FLOPs per token: {fpt / 1e9:.3f} GFLOP (6N + 12·L·d·T)\n")
    C.table(["micro-batch", "tokens/s (median step)", "MFU", "peak memory GiB", "run wall"], rows)
    print("\n" + json.dumps({"device": name, "peak_flops": peak, "flops_per_token": fpt, "runs": results}))
    return results


if __name__ == "__main__":
    main()

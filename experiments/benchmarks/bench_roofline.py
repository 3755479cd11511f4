"""Roofline of the laptop training step on one CPU core: the measured fp32 matmul peak, the step's real
FLOPs and the achieved fraction, measured in alternating rounds in one process (so machine load hits
the peak and the step alike), plus where the step's time goes (torch.profiler) and step levers.

Shape: the laptop run's (``+experiment=laptop``): ``gpt2_tiny`` (2 layers, d 128, 4 heads, context 128)
with the fitted 8,192-token BPE, 8 × 128 tokens per step, AdamW, MLE through phf's ``shift_targets``.

FLOPs per trained token (forward + backward = 3 × forward; matmuls only, the usual count):
``6 · (L · 12 d² + V · d) + 12 · L · d · T`` — the blocks' weight matmuls, the LM head (tied to the
embedding; the embedding lookup itself is no matmul) and attention's QKᵀ and AV over the full T × T
(a causal kernel may skip up to half of those).

Variants of the step (each alone, interleaved with the eager step):

* ``eager``: phf's path (logits once, CE over the contiguous view, logits freed before backward), with
  phf's CPU allocator setting (glibc keeps freed memory; ``--default-malloc`` leaves it off: without it
  the (N, V) buffers are page-faulted in every step, which flatters the chunked CE);
* ``chunked_ce`` (``--chunked``): LM head + CE fused and chunked (``fused_ce.py``), logits never whole;
* ``compiled`` (``--compile``): ``torch.compile`` (inductor) of the model; its compile time is reported.

    python experiments/benchmarks/bench_roofline.py --rounds 5 --steps 10 --chunked --compile

Measures and prints; never asserts a time. Set OMP_NUM_THREADS=1 (one core, as a laptop job runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def matmul_gflops(m: int, k: int, n: int, reps: int) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def build(vocab: int, layers: int, width: int, heads: int, ctx: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=width, n_layer=layers, n_head=heads,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, foreach=False)


def step_eager(model, opt, ids, forward=None):
    from phf.objectives import MLE

    logits = (model if forward is None else forward)(input_ids=ids).logits
    out = MLE().loss(logits, ids, None)
    del logits
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_chunked(model, opt, ids, chunk: int = 256):
    from fused_ce import chunked_token_ce

    hidden = model.transformer(input_ids=ids).last_hidden_state
    ce = chunked_token_ce(hidden[:, :-1], model.lm_head.weight, ids[:, 1:], chunk)
    ce.mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def time_steps(fn, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--chunked", action="store_true", help="also the chunked LM head + CE")
    p.add_argument("--compile", action="store_true", help="also torch.compile (inductor)")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of the eager step")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's allocator as it is (phf's loop keeps freed memory: trainer.cpu_keep_freed_memory)")
    a = p.parse_args()
    if not a.default_malloc:
        from phf.devices import keep_freed_memory

        keep_freed_memory()  # as phf's training loop does on CPU: the (N, V) buffers are reused, not page-faulted
    L, d, V, T, B = a.layers, a.width, a.vocab, a.block, a.batch
    flops_tok = 6 * (L * 12 * d * d + V * d) + 12 * L * d * T
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}; FLOPs/token {flops_tok / 1e6:.2f}M "
          f"(blocks {6 * L * 12 * d * d / 1e6:.2f}M, LM head {6 * V * d / 1e6:.2f}M, attention {12 * L * d * T / 1e6:.2f}M)")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, T), generator=g)
    variants = {"eager": build(V, L, d, a.heads, T)}
    fns = {"eager": lambda m, o: step_eager(m, o, ids)}
    if a.chunked:
        variants["chunked_ce"] = build(V, L, d, a.heads, T)
        fns["chunked_ce"] = lambda m, o: step_chunked(m, o, ids)
    if a.compile:
        m, o = build(V, L, d, a.heads, T)
        compiled = torch.compile(m)
        t = time.perf_counter()
        for _ in range(3):  # compile + the recompiles of the first steps
            step_eager(m, o, ids, compiled)
        print(f"compile (first 3 steps): {time.perf_counter() - t:.1f} s")
        variants["compiled"] = (m, o)
        fns["compiled"] = lambda m, o: step_eager(m, o, ids, compiled)
    for name, (m, o) in variants.items():
        fns[name](m, o)  # warm-up
    rows: dict[str, list] = {k: [] for k in ["peak_1024", "peak_2048", "head"] + list(fns)}
    for r in range(a.rounds):
        rows["peak_1024"].append(matmul_gflops(1024, 1024, 1024, 5))
        rows["peak_2048"].append(matmul_gflops(2048, 2048, 2048, 3))
        rows["head"].append(matmul_gflops(B * T, d, V, 5))
        names = list(fns)[:: 1 if r % 2 == 0 else -1]
        for name in names:
            m, o = variants[name]
            rows[name].append(B * T / time_steps(lambda f=fns[name], m=m, o=o: f(m, o), a.steps))
        peak = max(rows["peak_1024"][-1], rows["peak_2048"][-1])
        print(f"round {r}: peak {peak:.1f} GFLOP/s, head shape {rows['head'][-1]:.1f}; "
              + ", ".join(f"{n} {rows[n][-1]:,.0f} tok/s = {rows[n][-1] * flops_tok / 1e9:.1f} GFLOP/s "
                          f"({rows[n][-1] * flops_tok / 1e9 / peak:.0%})" for n in fns), flush=True)

    def med(xs):
        return f"{statistics.median(xs):,.1f} ({min(xs):,.1f}–{max(xs):,.1f})"

    peaks = [max(x, y) for x, y in zip(rows["peak_1024"], rows["peak_2048"], strict=True)]
    print("\n| quantity | median (min–max over rounds) |\n|---|---:|")
    print(f"| fp32 matmul peak, 1024² / 2048², GFLOP/s | {med(peaks)} |")
    print(f"| LM-head shape ({B * T}×{d} @ {d}×{V}), GFLOP/s | {med(rows['head'])} |")
    for n in fns:
        fr = [t * flops_tok / 1e9 / pk for t, pk in zip(rows[n], peaks, strict=True)]
        print(f"| {n}: tokens/s | {med(rows[n])} |")
        print(f"| {n}: achieved GFLOP/s | {med([t * flops_tok / 1e9 for t in rows[n]])} |")
        print(f"| {n}: fraction of the same round's peak | {statistics.median(fr):.0%} ({min(fr):.0%}–{max(fr):.0%}) |")
        if n != "eager":
            ratio = [x / y for x, y in zip(rows[n], rows["eager"], strict=True)]
            print(f"| {n} / eager tokens/s | {statistics.median(ratio):.2f}× ({min(ratio):.2f}–{max(ratio):.2f}) |")
    if a.profile:
        from torch.profiler import profile

        m, o = variants["eager"]
        with profile() as prof:
            for _ in range(a.steps):
                step_eager(m, o, ids)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()

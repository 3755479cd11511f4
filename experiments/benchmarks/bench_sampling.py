"""Sampling levers on a trained laptop model (``phf.eval.sampling.sample``, one thread), interleaved.

Variants, each drawing the same number of unconditional samples (``max_new_tokens`` 120, min 10,
temperature 0.7, top-p 0.9, as ``+experiment=laptop`` evaluates):

* ``batch <n>``: ``task.eval.batch_size`` (the laptop setting is 64);
* ``static``: HF ``generate`` with ``cache_implementation="static"`` (a preallocated KV cache);
* ``full_sort``: the nucleus by a full sort of the vocabulary (phf's filter before the candidate buckets).

Each variant runs once per round, the order reversed every other round; reported: samples/s, median
(min–max) over rounds and the ratio to the first variant per round. A profile of one variant
(``--profile NAME``) shows where its time goes.

    python experiments/benchmarks/bench_sampling.py outputs/laptop/pii/mle/final --samples 128 --rounds 3

Measures and prints; never asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def full_sort_call(self, input_ids, scores):
    probs = (scores.float() / self.temperature).softmax(-1)
    top, idx = probs.sort(dim=-1, descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, (top.cumsum(-1) - top) < self.top_p)
    return scores.masked_fill(~keep, float("-inf"))


@contextlib.contextmanager
def variant(name: str, model):
    from phf.eval import sampling

    if name == "full_sort":
        original = sampling.NucleusFilter.__call__
        sampling.NucleusFilter.__call__ = full_sort_call
        try:
            yield
        finally:
            sampling.NucleusFilter.__call__ = original
    elif name == "static":
        generate = model.generate
        model.generate = lambda *a, **k: generate(*a, cache_implementation="static", **k)
        try:
            yield
        finally:
            del model.generate
    else:
        yield


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=["batch 64", "batch 128", "batch 256", "static", "full_sort"])
    p.add_argument("--profile", default=None, help="torch.profiler table of this variant (one run)")
    a = p.parse_args()
    from transformers import AutoTokenizer

    from phf.eval.sampling import SamplingSettings, sample
    from phf.model import PHFModel, unwrap

    model = PHFModel.from_pretrained(a.model_dir)
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    hf = unwrap(model)

    def run(name: str) -> float:
        bs = int(name.split()[1]) if name.startswith("batch") else 64
        st = SamplingSettings(max_new_tokens=120, min_new_tokens=10, temperature=0.7, top_p=0.9, batch_size=bs)
        with variant(name, hf):
            t = time.perf_counter()
            out = sample(model, tok, None, a.samples, st)
            return len(out) / (time.perf_counter() - t)

    rates: dict[str, list[float]] = {v: [] for v in a.variants}
    for r in range(a.rounds):
        for v in a.variants[:: 1 if r % 2 == 0 else -1]:
            rates[v].append(run(v))
        print(f"round {r}: " + ", ".join(f"{v} {rates[v][-1]:.2f}/s" for v in a.variants), flush=True)
    ref = a.variants[0]
    print(f"\n| variant | samples/s | vs {ref} |\n|---|---:|---:|")
    for v in a.variants:
        ratio = [x / y for x, y in zip(rates[v], rates[ref], strict=True)]
        print(f"| {v} | {statistics.median(rates[v]):.2f} ({min(rates[v]):.2f}–{max(rates[v]):.2f}) | "
              f"{statistics.median(ratio):.2f}× ({min(ratio):.2f}–{max(ratio):.2f}) |")
    if a.profile:
        from torch.profiler import profile

        with profile() as prof:
            run(a.profile)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()

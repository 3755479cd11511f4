"""Loop throughput and peak memory: phf's loop vs the original's engine (HF Trainer + compute_loss).

Same model init (phf's ``build_model``, same seed), same pre-packed blocks (phf's BlockStream on
local_pep8, in the same order), same objective math, same optimizer settings, fp32 on CPU:

* **phf**: ``phf.train.train(cfg)`` itself, with only the data source swapped for the pre-packed
  blocks and the final save skipped (``common.prepacked``); ``trainer.log_every=1`` (the default);
* **baseline**: ``transformers.Trainer`` with the original's ``compute_loss`` (``baseline_hf.py``),
  ``logging_steps=1``, ``remove_unused_columns=False``, torch AdamW (``optim=adamw_torch``);
* **baseline+malloc**: the baseline with the allocator setting phf makes on CPU (glibc keeps freed
  memory, ``phf.devices.keep_freed_memory``): the same work, the same allocator.

Each engine lives in its own worker process (started once, so import and set-up costs are paid once
and process-wide settings such as the allocator never leak into another engine). The driver
alternates the workers round by round (engine order reversed every other round), each running a
chunk of ``--steps`` optimizer steps. The first step of a chunk is warm-up and not timed; tokens/s =
tokens per step / time between optimizer steps, in wall time and in the worker's CPU time (steadier
on a shared machine). Ratios are taken per round between adjacent chunks and reported as median
(min–max). Peak RSS is the worker's VmHWM over a chunk (reset at the chunk's start), median over rounds.

    python experiments/benchmarks/bench_loop.py --shapes tiny,small --objectives mle,awr
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

CACHE = C.ROOT / ".bench_cache"
RESULT = "@@bench-result "
READY = "@@bench-ready"

# engine -> what the worker runs: "run" (phf or baseline), phf config overrides, patches, allocator setting
ENGINES = {
    "phf": dict(run="phf", desc="phf.train.train as shipped (log_every=1)"),
    "baseline": dict(run="baseline", desc="HF Trainer + the original's compute_loss"),
    "phf-levers": dict(run="phf", patches=("copy", "keep"), extra=("trainer.cpu_keep_freed_memory=false",),
                       desc="phf without its levers (copied logits slice, logits kept, glibc default malloc)"),
    # single levers (bench_levers uses these)
    "phf+log10": dict(run="phf", extra=("trainer.log_every=10",), desc="phf, log_every=10 (no per-step host sync)"),
    "phf+fused": dict(run="phf", patches=("fused",), desc="phf, fused AdamW on CPU"),
    "phf-malloc": dict(run="phf", extra=("trainer.cpu_keep_freed_memory=false",),
                       desc="phf with glibc's default malloc (trainer.cpu_keep_freed_memory=false)"),
    "baseline+malloc": dict(run="baseline", malloc=True, desc="baseline, glibc keeps freed memory (mallopt)"),
    "phf+compile": dict(run="phf", extra=("trainer.compile=true",), desc="phf, trainer.compile=true"),
    "phf+eager": dict(run="phf", extra=("model.attn_implementation=eager",), desc="phf, eager attention"),
    "baseline+eager": dict(run="baseline", extra=("model.attn_implementation=eager",
                                                  "model.reorder_and_upcast_attn=true"),
                           desc="baseline with the original's attention (eager, reorder_and_upcast_attn)"),
}


def n_blocks(shape: str, steps: int) -> int:
    return C.shape_spec(shape)["batch"] * (steps + 2)


def overrides(shape: str, objective: str, steps: int, run_dir: str, extra=()) -> list[str]:
    s = C.shape_spec(shape)
    return C.bench_overrides(s["model"], objective, s["batch"], s["block"], steps, run_dir,
                             ["trainer.log_every=1", *s["model_overrides"], *extra])


# -- the two engines (run inside a worker) ---------------------------------------------------------------
def run_phf(shape: str, objective: str, steps: int, blocks, extra=(), patch=None) -> C.StepClock:
    from phf.train import train

    with tempfile.TemporaryDirectory() as d:
        cfg = C.compose(overrides(shape, objective, steps, d, extra))
        with patch() if patch else contextlib.nullcontext(), C.prepacked(blocks), C.StepClock() as clk:
            train(cfg)
    return clk


def build_like_phf(cfg):
    """The model exactly as ``phf.train.train`` builds it for ``cfg`` (same seed, same init)."""
    import random

    import torch
    from hydra.utils import instantiate

    from phf.tokenizer import add_special_tokens

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    tok = instantiate(cfg.tokenizer)
    objective = instantiate(cfg.objective)
    add_special_tokens(tok, objective.special_tokens)
    model = instantiate(cfg.model, tokenizer=tok, objective=objective, seed=cfg.seed)
    return model, objective


def run_baseline(shape: str, objective: str, steps: int, blocks, extra=(), optim="adamw_torch") -> C.StepClock:
    from baseline_hf import OriginalLMAndValueHead, hf_train

    with tempfile.TemporaryDirectory() as d:
        cfg = C.compose(overrides(shape, objective, steps, d, extra))
        model, obj = build_like_phf(cfg)
        wrapped = OriginalLMAndValueHead(model.lm, model.value_head)
        with C.StepClock() as clk:
            hf_train(wrapped, obj, blocks, cfg.trainer.batch_size, steps, d, lr=cfg.trainer.lr, optim=optim,
                     seed=cfg.seed)
    return clk


def patches(names):
    import variants as V

    table = {"copy": lambda: V.patched_shift_targets(V.copied_shift), "keep": V.logits_kept_in_loop,
             "fused": V.fused_adamw}

    @contextlib.contextmanager
    def apply():
        with contextlib.ExitStack() as stack:
            for n in names:
                stack.enter_context(table[n]())
            yield

    return apply if names else None


def run_chunk(engine: str, shape: str, objective: str, steps: int) -> dict:
    spec = ENGINES[engine]
    s = C.shape_spec(shape)
    tokens = s["batch"] * s["block"]
    blocks = C.make_blocks(n_blocks(shape, steps), s["block"], CACHE)
    C.reset_peak_rss()
    before = C.rss_mb()
    t0 = time.perf_counter()
    if spec["run"] == "phf":
        clk = run_phf(shape, objective, steps, blocks, spec.get("extra", ()), patches(spec.get("patches", ())))
    else:
        clk = run_baseline(shape, objective, steps, blocks, spec.get("extra", ()))
    return {"engine": engine, "shape": shape, "objective": objective, "tokens_per_s": clk.tokens_per_s(tokens),
            "tokens_per_cpu_s": clk.tokens_per_s(tokens, cpu=True), "step_s": clk.step_seconds(),
            "rss_before_mb": before, "peak_rss_mb": C.peak_rss_mb(), "chunk_s": time.perf_counter() - t0}


def worker(engine: str, threads: int) -> None:
    """Serve chunk requests (one JSON line each on stdin) until stdin closes."""
    if ENGINES[engine].get("malloc"):
        from phf.devices import keep_freed_memory

        keep_freed_memory()
    C.set_threads(threads)
    import baseline_hf  # noqa: F401  (imports before "ready": no worker imports while another is timed)
    import transformers.trainer  # noqa: F401

    import phf.train  # noqa: F401

    print(READY, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            res = run_chunk(engine, req["shape"], req["objective"], req["steps"])
        except Exception as e:  # report, keep serving
            import traceback

            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(RESULT + json.dumps(res), flush=True)


class Worker:
    def __init__(self, engine: str, threads: int, log):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--threads", str(threads)]
        self.engine = engine
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                  cwd=str(C.ROOT))
        for line in self.p.stdout:  # wait until it has imported everything
            if line.startswith(READY):
                return
        raise RuntimeError(f"worker {engine} exited (code {self.p.wait()}) before it was ready; see the log")

    def chunk(self, shape: str, objective: str, steps: int) -> dict:
        self.p.stdin.write(json.dumps({"shape": shape, "objective": objective, "steps": steps}) + "\n")
        self.p.stdin.flush()
        for line in self.p.stdout:
            if line.startswith(RESULT):
                res = json.loads(line[len(RESULT):])
                if "error" in res:
                    raise RuntimeError(f"worker {self.engine} failed on {shape}/{objective}:\n{res['traceback']}")
                return res
        raise RuntimeError(f"worker {self.engine} exited (code {self.p.wait()}); see the log")

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=120)


def compare(engines, shapes, objectives, rounds: dict, steps: dict, threads: int, ref: str = "baseline",
            log_path: str | None = None, verbose: bool = True) -> dict:
    """{(shape, objective): {"runs": {engine: [result per round]}, "ratio": {engine: {"wall": [], "cpu": []}}}}."""
    for shape in shapes:  # build the block caches once, before any worker starts
        C.make_blocks(n_blocks(shape, steps[shape]), C.shape_spec(shape)["block"], CACHE)
    out = {}
    log = open(log_path, "a") if log_path else subprocess.DEVNULL
    workers = {e: Worker(e, threads, log) for e in engines}
    try:
        for shape in shapes:
            for objective in objectives:
                out[(shape, objective)] = {"runs": {e: [] for e in engines},
                                           "ratio": {e: {"wall": [], "cpu": []} for e in engines if e != ref}}
            for r in range(rounds[shape]):
                for objective in objectives:
                    res = out[(shape, objective)]
                    order = list(engines) if r % 2 == 0 else list(engines)[::-1]
                    got = {}
                    for e in order:
                        got[e] = workers[e].chunk(shape, objective, steps[shape])
                        res["runs"][e].append(got[e])
                        if verbose:
                            print(f"  round {r + 1}/{rounds[shape]} {shape:5s} {objective:3s} {e:15s} "
                                  f"{got[e]['tokens_per_s']:8.1f} tokens/s wall {got[e]['tokens_per_cpu_s']:8.1f} "
                                  f"per CPU-s, peak RSS {got[e]['peak_rss_mb']:6,.0f} MiB ({got[e]['chunk_s']:.0f} s)",
                                  flush=True)
                    for e in res["ratio"]:
                        res["ratio"][e]["wall"].append(got[e]["tokens_per_s"] / got[ref]["tokens_per_s"])
                        res["ratio"][e]["cpu"].append(got[e]["tokens_per_cpu_s"] / got[ref]["tokens_per_cpu_s"])
    finally:
        for w in workers.values():
            w.close()
        if log_path:
            log.close()
    return out


def report(res: dict, engines, ref: str = "baseline") -> tuple[list[str], list[list]]:
    others = [e for e in engines if e != ref]
    head = ["shape", "obj.", *(f"{e} tokens/s" for e in engines)]
    head += [f"{e} / {ref} (wall)" for e in others] + [f"{e} / {ref} (CPU time)" for e in others]
    head += [f"{e} peak RSS MiB" for e in engines]
    rows = []
    for (shape, objective), r in res.items():
        wall = {e: [x["tokens_per_s"] for x in r["runs"][e]] for e in engines}
        row = [C.shape_spec(shape)["label"], objective.upper()]
        row += [f"{C.med(wall[e]):,.0f} ({C.spread(wall[e])})" for e in engines]
        row += [f"**{C.med(r['ratio'][e]['wall']):.2f}×** ({C.spread(r['ratio'][e]['wall'])})" for e in others]
        row += [f"{C.med(r['ratio'][e]['cpu']):.2f}× ({C.spread(r['ratio'][e]['cpu'])})" for e in others]
        row += [C.fmt(C.med([x["peak_rss_mb"] for x in r["runs"][e]])) for e in engines]
        rows.append(row)
    return head, rows


def per_shape(spec: str, shapes) -> dict:
    """``tiny=3,small=2`` (named shapes) or one number for every shape."""
    if "=" not in spec:
        return {s: int(spec) for s in shapes}
    given = {k: int(v) for k, v in (kv.split("=") for kv in spec.split(","))}
    return {s: given[s] for s in shapes}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,small")
    ap.add_argument("--objectives", default="mle,awr")
    ap.add_argument("--engines", default="phf,baseline,baseline+malloc",
                    help=f"comma list including baseline; known: {', '.join(ENGINES)}")
    ap.add_argument("--rounds", default="tiny=3,small=2", help="rounds per shape, e.g. tiny=3,small=2 (or one number)")
    ap.add_argument("--steps", default="tiny=6,small=4", help="optimizer steps per chunk (the first is not timed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", default=None, help="append the workers' stderr here (default: discarded)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a.worker, a.threads)
    shapes, objectives, engines = a.shapes.split(","), a.objectives.split(","), a.engines.split(",")
    if "baseline" not in engines or not set(engines) <= set(ENGINES):
        ap.error(f"--engines must include baseline and name only {sorted(ENGINES)}")
    rounds, steps = per_shape(a.rounds, shapes), per_shape(a.steps, shapes)
    print(f"# Loop: phf vs the original's engine ({time.strftime('%Y-%m-%d %H:%M')}; {C.machine()})\n", flush=True)
    for e in engines:
        print(f"  {e}: {ENGINES[e]['desc']}")
    t0 = time.perf_counter()
    res = compare(engines, shapes, objectives, rounds, steps, a.threads, log_path=a.log)
    print()
    head, rows = report(res, engines)
    C.table(head, rows)
    print(f"\n(tokens/s: median over {a.rounds} rounds (min–max); ratios: median of per-round paired ratios; "
          f"peak RSS: median over rounds of each chunk's VmHWM; {time.perf_counter() - t0:.0f} s)")
    if a.out:
        Path(a.out).write_text(json.dumps({"table": {"head": head, "rows": rows}, "machine": C.machine(),
                                           "results": {f"{k[0]}/{k[1]}": v for k, v in res.items()}}, indent=1))
    return head, rows


if __name__ == "__main__":
    main()

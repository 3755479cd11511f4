"""Throughput levers, each measured on CPU against phf as it is (issue 7, "Targets").

Component levers (one training step's forward + loss + backward on the same model and blocks;
variants interleaved iteration by iteration):

* ``loss path``: phf (logits once, CE in one pass over a view) vs the original's path (the HF model
  also computes its own loss because labels are passed, then a ``.contiguous()`` shifted copy of the
  logits feeds the objective) vs the original's path without labels (isolates HF's internal loss);
* ``chunked CE``: LM head + cross-entropy fused and chunked over positions (``fused_ce.py``), phf's
  objective math unchanged (its ``shift_targets`` is swapped for one that takes the hidden states);
* ``attention``: SDPA vs eager (same weights);
* ``threads``: ``torch.set_num_threads`` 1 vs 2 (vs 4 when asked);
* ``optimizer``: AdamW for-loop (phf's CPU default) vs foreach vs fused, ``optimizer.step()`` alone;
* ``torch.compile`` (``--compile``): compile time and the compiled step.

Loop levers (``phf.train.train`` itself, chunks of steps interleaved): host syncs (``trainer.log_every``
1 vs 10), fused AdamW in the loop, the data pipeline inline vs pre-packed.

Peak memory: each component variant also runs in a fresh process (``--mem-worker``) and reports its
peak RSS (``ru_maxrss``), so variants never share an allocator high-water mark.

    python experiments/benchmarks/bench_levers.py --shapes tiny,small --iters 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import torch  # noqa: E402
from variants import (  # noqa: E402
    HiddenLogits,
    chunked_shift,
    copied_shift,
    patched_shift_targets,
)

CACHE = C.ROOT / ".bench_cache"


# -- building ---------------------------------------------------------------------------------------
def build(shape: str, objective: str, attn: str = "sdpa"):
    from hydra.utils import instantiate

    from phf.tokenizer import add_special_tokens

    s = C.SHAPES[shape]
    cfg = C.compose(C.bench_overrides(s["model"], objective, s["batch"], s["block"], 1, "/tmp/unused",
                                      [f"model.attn_implementation={attn}"]))
    tok = instantiate(cfg.tokenizer)
    obj = instantiate(cfg.objective)
    add_special_tokens(tok, obj.special_tokens)
    model = instantiate(cfg.model, tokenizer=tok, objective=obj, seed=cfg.seed)
    model.train()
    return model, obj


def batch_iter(shape: str):
    s = C.SHAPES[shape]
    blocks = C.make_blocks(4 * s["batch"], s["block"], CACHE)
    i = 0
    while True:
        chosen = [blocks[(i + k) % len(blocks)] for k in range(s["batch"])]
        i += s["batch"]
        yield {k: torch.stack([b[k] for b in chosen]) for k in chosen[0]}


def chunked_shift_targets():
    return patched_shift_targets(chunked_shift)


# -- one step's forward + loss + backward, per variant ---------------------------------------------------
def step_phf(model, obj, b):
    """As phf's loop: shifted-label CE, the logits dropped before backward."""
    logits, values = model(b["input_ids"])
    out = obj.loss(logits, b["labels"], b["token_scores"], values)
    del logits, values
    out.loss.backward()


def step_kept(model, obj, b):
    """phf's loss, the logits kept alive through backward."""
    logits, values = model(b["input_ids"])
    obj.loss(logits, b["labels"], b["token_scores"], values).loss.backward()


def step_copied(model, obj, b):
    with patched_shift_targets(copied_shift):
        step_phf(model, obj, b)


def step_before(model, obj, b):
    """phf before both levers: copied logits slice, logits kept."""
    with patched_shift_targets(copied_shift):
        step_kept(model, obj, b)


def make_step_original(with_labels: bool):
    from baseline_hf import OriginalLMAndValueHead, compute_loss_like_original, original_objective

    def step(model, obj, b):
        wrapped = OriginalLMAndValueHead(model.lm, model.value_head)
        inputs = dict(b) if with_labels else {k: v for k, v in b.items()}
        if not with_labels:  # the forward without labels; compute_loss still reads them for the objective
            fn = original_objective(obj)
            out = wrapped(inputs["input_ids"])
            logits = out["logits"]
            shift = logits[..., :-1, :].contiguous()
            loss, _ = fn(shift.view(-1, shift.size(-1)), b["labels"][..., 1:].reshape(-1), b["token_scores"],
                         out.get("values"))
        else:
            loss, _ = compute_loss_like_original(wrapped, inputs, original_objective(obj))
        loss.backward()

    return step


def make_step_chunked(chunk: int):
    def step(model, obj, b):
        hidden = model.lm.transformer(input_ids=b["input_ids"]).last_hidden_state
        values = model.value_head(hidden) if model.value_head is not None else None
        with chunked_shift_targets():
            out = obj.loss(HiddenLogits(hidden, model.lm.lm_head.weight, chunk), b["labels"], b["token_scores"], values)
        out.loss.backward()

    return step


STEPS = {
    "phf": step_phf,  # as shipped: shifted-label CE, logits freed before backward
    "phf, logits kept through backward": step_kept,
    "phf, copied logits slice": step_copied,
    "phf before both levers": step_before,
    "original path": make_step_original(True),
    "original path, no labels": make_step_original(False),
    "chunked CE (256 rows)": make_step_chunked(256),
}


def loss_check(shape: str, objective: str) -> dict:
    """Every loss path gives phf's loss and gradients on the same model and batch (eval mode: no dropout)."""
    from baseline_hf import OriginalLMAndValueHead, compute_loss_like_original, original_objective

    model, obj = build(shape, objective)
    model.eval()
    b = next(batch_iter(shape))
    logits, values = model(b["input_ids"])
    ref = obj.loss(logits, b["labels"], b["token_scores"], values).loss
    ref.backward()
    g_ref = model.lm.lm_head.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    orig, _ = compute_loss_like_original(OriginalLMAndValueHead(model.lm, model.value_head), b, original_objective(obj))
    hidden = model.lm.transformer(input_ids=b["input_ids"]).last_hidden_state
    vals = model.value_head(hidden) if model.value_head is not None else None
    with chunked_shift_targets():
        chunked = obj.loss(HiddenLogits(hidden, model.lm.lm_head.weight, 64), b["labels"], b["token_scores"], vals).loss
    chunked.backward()
    g_chunk = model.lm.lm_head.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    logits, values = model(b["input_ids"])
    with patched_shift_targets(copied_shift):
        copied = obj.loss(logits, b["labels"], b["token_scores"], values).loss
    copied.backward()
    g_copy = model.lm.lm_head.weight.grad
    return {"phf": ref.item(), "original": orig.item(), "chunked": chunked.item(), "copied": copied.item(),
            "max |grad W| diff chunked vs phf": (g_chunk - g_ref).abs().max().item(),
            "max |grad W| diff copied vs phf": (g_copy - g_ref).abs().max().item()}


# -- measurement helpers ---------------------------------------------------------------------------------
def interleave(variants: dict, iters: int, setup=None) -> dict[str, dict[str, list[float]]]:
    """Run each variant ``iters`` times, round-robin with a rotating order; drop each one's first run.

    Per run: wall and CPU seconds, and the step's peak RSS above the RSS before it (VmHWM reset before
    the run; with glibc's default settings the big per-step buffers are unmapped when freed, so the
    next variant starts from a clean slate).
    """
    names = list(variants)
    out = {n: {"wall": [], "cpu": [], "peak": []} for n in names}
    for it in range(iters + 1):
        order = names[it % len(names):] + names[: it % len(names)]
        for n in order:
            if setup:
                setup(n)
            rss0 = C.rss_mb()
            C.reset_peak_rss()
            w0, c0 = time.perf_counter(), time.process_time()
            variants[n]()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if it:
                out[n]["wall"].append(w)
                out[n]["cpu"].append(c)
                out[n]["peak"].append(C.peak_rss_mb() - rss0)
    return out


def summarize(res, tokens: int, ref: str) -> list[list]:
    rows = []
    base_w = C.med(res[ref]["wall"])
    base_c = C.med(res[ref]["cpu"])
    for n, r in res.items():
        w, c = C.med(r["wall"]), C.med(r["cpu"])
        rows.append([n, f"{w * 1e3:,.0f} ({C.spread([x * 1e3 for x in r['wall']])})",
                     C.fmt(tokens / w) if tokens else "-", f"{base_w / w:.2f}×", f"{c * 1e3:,.0f}", f"{base_c / c:.2f}×",
                     C.fmt(C.med(r["peak"]))])
    return rows


HEAD = ["variant", "wall ms median (min–max)", "tokens/s", "speed vs first (wall)", "CPU ms",
        "speed vs first (CPU time)", "step peak RSS above start, MiB"]


# -- the levers ---------------------------------------------------------------------------------------------
def lever_loss_paths(shape, objective, iters):
    model, obj = build(shape, objective)
    b = next(batch_iter(shape))
    steps = {n: (lambda f=f: (f(model, obj, b), model.zero_grad(set_to_none=True))) for n, f in STEPS.items()}
    return summarize(interleave(steps, iters), b["input_ids"].numel(), "phf")


def lever_attention(shape, objective, iters):
    """SDPA vs eager attention on identical weights."""
    sdpa, obj = build(shape, objective, "sdpa")
    eager, _ = build(shape, objective, "eager")
    b = next(batch_iter(shape))
    steps = {"sdpa": lambda: (step_phf(sdpa, obj, b), sdpa.zero_grad(set_to_none=True)),
             "eager": lambda: (step_phf(eager, obj, b), eager.zero_grad(set_to_none=True))}
    return summarize(interleave(steps, iters), b["input_ids"].numel(), "sdpa")


def lever_threads(shape, objective, iters, counts=(1, 2)):
    model, obj = build(shape, objective)
    b = next(batch_iter(shape))
    steps = {f"{n} thread(s)": (lambda: (step_phf(model, obj, b), model.zero_grad(set_to_none=True))) for n in counts}
    before = torch.get_num_threads()
    try:
        res = interleave(steps, iters, setup=lambda name: torch.set_num_threads(int(name.split()[0])))
    finally:
        torch.set_num_threads(before)
    return summarize(res, b["input_ids"].numel(), f"{2 if 2 in counts else counts[0]} thread(s)")


def lever_optimizer(shape, objective, iters):
    """AdamW.step() alone on the model's parameters with gradients present (phf's decay groups)."""
    from phf.optim import make_optimizer

    model, obj = build(shape, objective)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    phf_opt = make_optimizer(model, lr=5e-4, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in phf_opt.param_groups]
    opts = {"phf (make_optimizer: for-loop on CPU)": phf_opt,
            "foreach=True": torch.optim.AdamW(groups, lr=5e-4, foreach=True),
            "fused=True": torch.optim.AdamW(groups, lr=5e-4, fused=True)}
    with torch.no_grad():
        res = interleave({n: o.step for n, o in opts.items()}, iters)
    rows = summarize(res, 0, "phf (make_optimizer: for-loop on CPU)")
    n_params = sum(p.numel() for p in model.parameters())
    for r in rows:
        r[2] = f"{n_params / 1e6:.1f}M params"
    return rows


def lever_compile(shape, objective, iters):
    """torch.compile(model) as phf's loop does (trainer.compile=true): compile time, then the step."""
    model, obj = build(shape, objective)
    b = next(batch_iter(shape))
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    step_phf(compiled, obj, b)
    model.zero_grad(set_to_none=True)
    compile_s = time.perf_counter() - t0
    steps = {"eager (no compile)": lambda: (step_phf(model, obj, b), model.zero_grad(set_to_none=True)),
             "torch.compile(model)": lambda: (step_phf(compiled, obj, b), model.zero_grad(set_to_none=True))}
    rows = summarize(interleave(steps, iters), b["input_ids"].numel(), "eager (no compile)")
    return rows, compile_s


def lever_pipeline(n_blocks: int, block: int = 128) -> list[list]:
    """phf's BlockStream on local_pep8 inline (segment, PEP8-score, tokenize, pack; no cache, no shuffle).

    Throughput = tokens packed / wall time from the start (documents are processed in batches of
    ``data.score_batch_docs``, so ``n_blocks`` must span several batches). An inline pipeline
    (data.num_workers=0) adds train tokens/s ÷ pipeline tokens/s to every step's time, on average.
    """
    from hydra.utils import instantiate

    cfg = C.compose(["task=pep8", "data=local_pep8", "objective=mle", "cache_dir=null", f"model.block_size={block}",
                     "data.shuffle_buffer=0", "data.num_workers=0", "run_dir=/tmp/unused"])
    stream = C.train_stream(cfg, instantiate(cfg.tokenizer))
    w0, c0 = time.perf_counter(), time.process_time()
    it = iter(stream)
    next(it)
    first = time.perf_counter() - w0
    for _ in range(n_blocks - 1):
        next(it)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    tokens = stream.stats["tokens"]  # every token segmented, scored, tokenized and packed so far
    return [[f"BlockStream inline, local_pep8, T={block}", f"{first:.1f} s", f"{stream.stats['documents']:,}",
             f"{tokens:,}", f"{wall:.1f} s", C.fmt(tokens / wall), C.fmt(tokens / cpu)]]


# -- loop levers: phf.train.train itself, each engine in its own worker (bench_loop) -------------------------
LOOP_ENGINES = "phf,phf-levers,phf-malloc,phf+log10,phf+fused,baseline,baseline+malloc"


def lever_loop(shape, objective, rounds, steps, engines=LOOP_ENGINES, threads=2, log=None):
    import bench_loop as BL

    engines = engines.split(",")
    res = BL.compare(engines, [shape], [objective], {shape: rounds}, {shape: steps}, threads, ref="phf", log_path=log,
                     verbose=False)[(shape, objective)]
    rows = []
    for e in engines:
        runs = res["runs"][e]
        wall = [x["tokens_per_s"] for x in runs]
        ratio = res["ratio"].get(e)
        rows.append([BL.ENGINES[e]["desc"], f"{C.med(wall):,.0f} ({C.spread(wall)})",
                     f"{C.med(ratio['wall']):.2f}× ({C.spread(ratio['wall'])})" if ratio else "1.00×",
                     f"{C.med(ratio['cpu']):.2f}×" if ratio else "1.00×",
                     C.fmt(C.med([x["peak_rss_mb"] for x in runs]))])
    return rows


# -- main ----------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,small")
    ap.add_argument("--objectives", default="mle")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per component variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (minutes on 2 cores)")
    ap.add_argument("--loop-shape", default="tiny", help="shape of the loop levers")
    ap.add_argument("--loop-engines", default=LOOP_ENGINES)
    ap.add_argument("--loop-rounds", type=int, default=2, help="rounds of the loop levers (0 = skip)")
    ap.add_argument("--loop-steps", type=int, default=5)
    ap.add_argument("--pipeline-blocks", type=int, default=1500, help="blocks of 128 tokens to pull")
    ap.add_argument("--only", default="",
                    help="comma list: check,loss,attention,threads,optimizer,compile,pipeline,loop")
    ap.add_argument("--log", default=None, help="append the loop workers' stderr here")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    C.set_threads(a.threads)
    only = set(filter(None, a.only.split(",")))

    def want(k):
        return (not only and k != "compile") or k in only or (k == "compile" and a.compile)

    print(f"# Levers ({time.strftime('%Y-%m-%d %H:%M')}; {C.machine()})", flush=True)
    results = {}
    t0 = time.perf_counter()
    objectives = a.objectives.split(",")
    for shape in a.shapes.split(","):
        s = C.SHAPES[shape]
        for objective in objectives:
            tag = f"{shape} ({s['model']}, {s['batch']}×{s['block']} tokens), {objective.upper()}"
            if want("check"):
                chk = loss_check(shape, objective)
                shown = {k: float(format(v, ".6g")) for k, v in chk.items()}
                print(f"\nloss check, {tag}: {json.dumps(shown)}")
                results[f"check/{shape}/{objective}"] = chk
            if want("loss"):
                print(f"\n## Loss path and chunked CE: {tag}; forward + loss + backward\n", flush=True)
                results[f"loss/{shape}/{objective}"] = rows = lever_loss_paths(shape, objective, a.iters)
                C.table(HEAD, rows)
        tag = f"{shape} ({s['model']}, {s['batch']}×{s['block']} tokens), {objectives[0].upper()}"
        if want("attention"):
            print(f"\n## Attention: {tag}; forward + loss + backward\n", flush=True)
            results[f"attention/{shape}"] = rows = lever_attention(shape, objectives[0], a.iters)
            C.table(HEAD, rows)
            if shape == "tiny":
                print("\n## Attention at 1×1024 tokens (gpt2_tiny body, context 1024)\n", flush=True)
                results["attention/tiny-1024"] = rows = lever_attention_long(objectives[0], a.iters)
                C.table(HEAD, rows)
        if want("threads"):
            print(f"\n## Threads: {tag}; forward + loss + backward\n", flush=True)
            results[f"threads/{shape}"] = rows = lever_threads(shape, objectives[0], a.iters)
            C.table(HEAD, rows)
        if want("optimizer"):
            print(f"\n## Optimizer step alone: {tag}\n", flush=True)
            results[f"optimizer/{shape}"] = rows = lever_optimizer(shape, objectives[0], a.iters)
            C.table(["optimizer", "wall ms median (min–max)", "size", "speed vs phf (wall)", "CPU ms",
                     "speed vs phf (CPU time)", "peak RSS above start, MiB"], rows)
        if want("compile"):
            print(f"\n## torch.compile: {tag}; forward + loss + backward\n", flush=True)
            rows, secs = lever_compile(shape, objectives[0], a.iters)
            print(f"compile + first step: {secs:.0f} s")
            C.table(HEAD, rows)
            results[f"compile/{shape}"] = {"rows": rows, "compile_s": secs}
    if want("pipeline"):
        print("\n## Data pipeline: what an inline BlockStream costs a step\n", flush=True)
        results["pipeline"] = rows = lever_pipeline(a.pipeline_blocks)
        C.table(["pipeline", "first block after", "documents", "tokens packed", "wall", "tokens/s (wall)",
                 "tokens per CPU-s"], rows)
    if a.loop_rounds and want("loop"):
        shape = a.loop_shape
        s = C.SHAPES[shape]
        print(f"\n## Loop levers: phf.train.train end to end, {shape} ({s['model']}, {s['batch']}×{s['block']}), "
              f"{objectives[0].upper()}, {a.loop_rounds} rounds × {a.loop_steps} steps\n", flush=True)
        results[f"loop/{shape}"] = rows = lever_loop(shape, objectives[0], a.loop_rounds, a.loop_steps,
                                                     a.loop_engines, a.threads, a.log)
        C.table(["engine", "tokens/s median (min–max)", "vs phf (wall)", "vs phf (CPU time)",
                 "peak RSS MiB"], rows)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1, default=str))


def lever_attention_long(objective, iters):
    """gpt2_tiny at context 1024 (one sequence): where attention's T² term shows."""
    from hydra.utils import instantiate


    models = {}
    for attn in ("sdpa", "eager"):
        cfg = C.compose(C.bench_overrides("gpt2_tiny", objective, 1, 1024, 1, "/tmp/unused",
                                          [f"model.attn_implementation={attn}"]))
        tok = instantiate(cfg.tokenizer)
        obj = instantiate(cfg.objective)
        models[attn] = instantiate(cfg.model, tokenizer=tok, objective=obj, seed=cfg.seed).train()
    blocks = C.make_blocks(2, 1024, CACHE)
    b = {k: blocks[0][k][None] for k in blocks[0]}
    steps = {n: (lambda m=m: (step_phf(m, obj, b), m.zero_grad(set_to_none=True))) for n, m in models.items()}
    return summarize(interleave(steps, iters), 1024, "sdpa")


if __name__ == "__main__":
    main()

"""The laptop run as users run it, timed phase by phase, two code trees side by side.

Each job is ``phf-train +experiment=laptop task=<task> data=local_<task> objective=<objective>`` (the
settings of ``make laptop-*``: one thread per job), run in its own process from a given checkout of phf
(``--trees``: e.g. the current worktree and a ``git worktree`` of the baseline commit). The job process
wraps a few of phf's functions with timers (nothing else changes) and writes:

* ``first_step_s``: process start (before ``import phf``) to the end of the first optimizer step: imports,
  corpus, tokenizer fit, scorer start-up and the data stream's first fill;
* ``train_tokens_per_s``: tokens of optimizer steps 2..N over their wall time (validation passes included,
  as users run it);
* ``eval_s``: the end-of-run sample-and-score evaluation (``phf.eval.evaluate.evaluate``), split into
  ``generation_s`` (``sample_with_objective``), ``scoring_s`` (the scorer's ``score``) and the rest
  (metrics such as Self-BLEU, writing samples); per 100 samples;
* ``probe_s``: the timed probe that estimates the evaluation's cost before it starts;
* ``wall_s``: the whole process, start to exit.

Rounds: in each round the trees' jobs run **at the same time** (one process per tree, as the laptop
targets run two single-threaded jobs on two cores), so both see the same machine load; the start order
alternates from round to round. Ratios are per-round (baseline / new) and reported as median (min-max).
A warm-up job per task (1 step, no evaluation) fills the corpus and score caches first, so every timed
job starts from warm caches, like all but the first jobs of ``make laptop-*``.

    python experiments/benchmarks/bench_laptop.py --trees /work/wt/baseline . --names baseline new \\
        --tasks pii pep8 toxicity --rounds 2 --max-steps 300 --samples 512 --out results/laptop.json

Prints a markdown table; measures, never asserts a time. ``--report A.json B.json`` prints the table of
saved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {"pii": ("pii", "local_pii"), "pep8": ("pep8", "local_pep8"), "toxicity": ("toxicity_profanity", "local_toxicity")}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
               "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- the job process: phf from --tree, timers around a few functions ------------------------------------
def job(tree: str, out: str, overrides: list[str]) -> None:
    start = time.perf_counter()
    sys.path.insert(0, tree)
    import importlib

    evaluate = importlib.import_module("phf.eval.evaluate")  # the module (phf.eval re-exports a function of that name)
    trainer = importlib.import_module("phf.trainer")
    cli = importlib.import_module("phf.cli")

    assert Path(evaluate.__file__).resolve().is_relative_to(Path(tree).resolve()), evaluate.__file__
    t: dict = {"steps": [], "generation_s": 0.0, "scoring_s": 0.0, "samples": 0, "eval_s": 0.0, "probe_s": 0.0}

    def timed(fn, key):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            r = fn(*a, **k)
            t[key] += time.perf_counter() - t0
            return r
        return wrapper

    step = trainer.TrainingLoop.optimizer_step

    def optimizer_step(self, *a, **k):
        r = step(self, *a, **k)
        t["steps"].append((time.perf_counter() - start, self.tokens_seen))
        return r

    trainer.TrainingLoop.optimizer_step = optimizer_step
    sample = evaluate.sample_with_objective
    probing = [False]

    def sample_(*a, **k):  # the evaluation's samples, not the probe's
        if probing[0]:
            return sample(*a, **k)
        t0 = time.perf_counter()
        r = sample(*a, **k)
        t["generation_s"] += time.perf_counter() - t0
        t["samples"] += len(r)
        return r

    evaluate.sample_with_objective = sample_
    estimate = evaluate.estimate_cost

    def estimate_(*a, **k):
        probing[0] = True
        try:
            return estimate(*a, **k)
        finally:
            probing[0] = False

    trainer.estimate_cost = timed(estimate_, "probe_s")
    run_eval = evaluate.evaluate

    def evaluate_(model, tokenizer, objective, scorer, *a, **k):
        scorer.score = timed(scorer.score, "scoring_s")
        return run_eval(model, tokenizer, objective, scorer, *a, **k)

    evaluate.evaluate = timed(evaluate_, "eval_s")
    sys.argv = ["phf-train", *overrides]
    cli.train()
    t["wall_s"] = time.perf_counter() - start
    Path(out).write_text(json.dumps(t))


# -- the driver ---------------------------------------------------------------------------------------
def summarize(t: dict) -> dict:
    steps = t["steps"]
    (t1, k1), (tn, kn) = steps[0], steps[-1]
    per100 = 100 / max(t["samples"], 1)
    return {"first_step_s": t1, "train_tokens_per_s": (kn - k1) / (tn - t1) if tn > t1 else float("nan"),
            "train_s": tn - t1, "eval_s": t["eval_s"], "generation_per_100": t["generation_s"] * per100,
            "scoring_per_100": t["scoring_s"] * per100,
            "other_eval_per_100": (t["eval_s"] - t["generation_s"] - t["scoring_s"]) * per100,
            "probe_s": t["probe_s"], "wall_s": t["wall_s"], "eval_share": t["eval_s"] / t["wall_s"],
            "samples": t["samples"]}


def launch(tree: str, overrides: list[str], run_dir: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    out = run_dir / "timings.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--job", tree, str(out), "--",
           *overrides, f"hydra.run.dir={run_dir}"]
    log = open(run_dir.with_suffix(".log"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tree), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", nargs="+", required=True, help="phf checkouts to compare (the first is the reference)")
    p.add_argument("--names", nargs="+", help="a label per tree")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--objective", default="mle")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="trainer.max_steps (default: the experiment's 1,500)")
    p.add_argument("--samples", type=int, default=None, help="unconditional samples (default: the experiment's 128)")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    p.add_argument("--tree-extra", nargs="+", default=None,
                   help="overrides per tree, one space-separated string each (e.g. '' 'trainer.chunked_ce=256': "
                        "the same checkout twice, with and without a setting)")
    p.add_argument("--workdir", default=None, help="run dirs and caches (default: a temp dir)")
    p.add_argument("--out", default=None, help="write every job's numbers here (JSON)")
    a = p.parse_args()
    names = a.names or [Path(t).name for t in a.trees]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_laptop_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE_ENV, "HF_HOME": str(work / "hf"), "WANDB_DIR": str(work / "wandb"),
           "PHF_CACHE_DIR": str(work / "phf-cache")}
    env.pop("PYTHONPATH", None)
    results: dict = {"settings": vars(a), "jobs": []}
    for task in a.tasks:
        tk, data = TASKS[task]
        base = ["+experiment=laptop", f"task={tk}", f"data={data}", f"objective={a.objective}",
                "trainer.progress=false", *a.extra]
        if a.max_steps:
            base.append(f"trainer.max_steps={a.max_steps}")
        if a.samples:
            base.append(f"task.eval.scenarios.unconditional.num_samples={a.samples}")
        warm = work / f"{task}_warmup"
        proc, _ = launch(a.trees[0], [*base, "trainer.max_steps=1", "trainer.final_eval=false"], warm, env)
        if proc.wait():
            sys.exit(f"warm-up failed: see {warm}.log")
        for r in range(a.rounds):
            order = list(range(len(a.trees)))[:: 1 if r % 2 == 0 else -1]
            procs = []
            for i in order:
                d = work / f"{task}_r{r}_{names[i]}"
                own = a.tree_extra[i].split() if a.tree_extra else []
                procs.append((i, d, *launch(a.trees[i], [*base, *own], d, env)))
                time.sleep(1)
            for i, d, proc, out in procs:
                if proc.wait():
                    sys.exit(f"job failed: see {d}.log")
                s = summarize(json.loads(out.read_text()))
                results["jobs"].append({"task": task, "round": r, "tree": names[i], **s})
                print(json.dumps(results["jobs"][-1]), flush=True)
            if a.out:
                Path(a.out).write_text(json.dumps(results, indent=1))
    print(table(results["jobs"], names, a.tasks))


def table(jobs: list[dict], names: list[str], tasks: list[str]) -> str:
    cols = [("first_step_s", "first step s", "{:.1f}"), ("train_tokens_per_s", "train tokens/s", "{:,.0f}"),
            ("generation_per_100", "gen s /100 samples", "{:.2f}"), ("scoring_per_100", "score s /100", "{:.2f}"),
            ("other_eval_per_100", "other eval s /100", "{:.2f}"), ("eval_s", "eval s", "{:.1f}"),
            ("eval_share", "eval share", "{:.0%}"), ("wall_s", "wall s", "{:.1f}")]
    lines = ["| task | tree | " + " | ".join(c[1] for c in cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for task in tasks:
        for n in names:
            js = [j for j in jobs if j["task"] == task and j["tree"] == n]
            if js:
                cells = [c[2].format(statistics.median(j[c[0]] for j in js)) for c in cols]
                lines.append(f"| {task} | {n} | " + " | ".join(cells) + " |")
        ref = names[0]
        for n in names[1:]:
            ratios = []
            for key, better in [("first_step_s", "lower"), ("train_tokens_per_s", "higher"),
                                ("generation_per_100", "lower"), ("scoring_per_100", "lower"),
                                ("other_eval_per_100", "lower"), ("eval_s", "lower"), ("wall_s", "lower")]:
                rs = []
                for r in sorted({j["round"] for j in jobs if j["task"] == task}):
                    x = [j for j in jobs if j["task"] == task and j["round"] == r and j["tree"] in (ref, n)]
                    if len(x) == 2:
                        b, c = (x[0], x[1]) if x[0]["tree"] == ref else (x[1], x[0])
                        if b[key] and c[key]:  # 0: a phase the runs skipped (e.g. trainer.final_eval=false)
                            rs.append(b[key] / c[key] if better == "lower" else c[key] / b[key])
                ratios.append(f"{statistics.median(rs):.2f}× ({min(rs):.2f}–{max(rs):.2f})" if rs else "")
            lines.append(f"| {task} | **speed-up {n} vs {ref}** | " + " | ".join(ratios[:5]) + f" | {ratios[5]} | | {ratios[6]} |")
    return "\n".join(lines)


def report(paths: list[str]) -> None:
    """The table of saved ``--out`` files (e.g. one per task, or a run stopped between rounds)."""
    jobs = [j for p in paths for j in json.loads(Path(p).read_text())["jobs"]]
    names = list(dict.fromkeys(j["tree"] for j in jobs))
    print(table(jobs, names, list(dict.fromkeys(j["task"] for j in jobs))))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        report(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--job":
        i = sys.argv.index("--")
        job(sys.argv[2], sys.argv[3], sys.argv[i + 1 :])
    else:
        main()

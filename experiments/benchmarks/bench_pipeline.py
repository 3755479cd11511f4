"""Training with labels made on the fly vs from a warm score cache vs pre-scored data (CPU, gpt2_tiny).

For each task (PII: presidio on ``local_pii`` sentences; PEP8: pycodestyle on ``local_pep8`` files),
``phf.train.train`` runs the same steps three times:

* **cold cache**: a fresh ``cache_dir``: every segment is scored while training;
* **warm cache**: the same ``cache_dir`` again: every score comes from the SQLite cache;
* **pre-scored**: the documents the run reads, exported once in the paper's pre-scored format
  (``{"texts": [...], "scores": [...]}``) and read with ``data=jsonl`` (no scorer runs, no cache).

Reported: end-to-end tokens/s (tokens / wall time of the loop, the shuffle-buffer fill included), the
median per-step tokens/s after the first logged step, the first step's time (it fills the shuffle
buffer and starts the scorer, e.g. presidio's engine), and the share of the loop's wall time spent in
the data pipeline and in the scorer (``data/pipeline_seconds``, ``scorer/scorer_seconds``, cumulative
counters in ``metrics.jsonl``). Inline pipeline (``data.num_workers=0``), so labeling sits on the
critical path: the worst case. Measures and prints; asserts nothing.

    python experiments/benchmarks/bench_pipeline.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

DATA = {"pii": "local_pii", "pep8": "local_pep8"}


def overrides(task: str, steps: int, run_dir: Path, cache_dir, data: list[str] | None = None) -> list[str]:
    base = C.bench_overrides("gpt2_tiny", "mle", 8, 128, steps, str(run_dir))
    base = [o for o in base if not o.startswith(("task=", "data=", "cache_dir="))]
    return [f"task={task}", *(data or [f"data={DATA[task]}"]), *base, f"cache_dir={cache_dir or 'null'}"]


def run(task: str, steps: int, run_dir: Path, cache_dir, data: list[str] | None = None) -> dict:
    from phf.tracking import read_metrics
    from phf.train import train

    cfg = C.compose(overrides(task, steps, run_dir, cache_dir, data))
    train(cfg)
    rows = [r for r in read_metrics(run_dir) if "tokens_per_s" in r]
    tokens_per_step = cfg.trainer.effective_batch_size * cfg.model.block_size
    wall = sum(tokens_per_step / r["tokens_per_s"] for r in rows)  # log_every = 1: one row per step
    last = rows[-1]
    return {
        "tokens_per_s": len(rows) * tokens_per_step / wall,
        "steady_tokens_per_s": C.med([r["tokens_per_s"] for r in rows[1:]]),
        "first_step_s": tokens_per_step / rows[0]["tokens_per_s"],  # + shuffle-buffer fill, scorer start-up
        "pipeline_share": last.get("data/pipeline_seconds", 0.0) / wall,
        "scorer_share": last.get("scorer/scorer_seconds", 0.0) / wall,
        "segments_scored": last.get("scorer/segments_scored", 0),
        "cache_hits": last.get("scorer/cache_hits", 0),
    }


def export_prescored(task: str, n_docs: int, cache_dir: Path, path: Path) -> int:
    """The first ``n_docs`` training documents of ``task`` and n_docs/50 held-out ones, scored (from the warm cache)."""
    from hydra.utils import instantiate

    from phf.data.pipeline import RunData
    from phf.scorers import build_scorer

    cfg = C.compose(overrides(task, 1, path.parent / "unused", cache_dir))
    objective, tokenizer, scorer = instantiate(cfg.objective), instantiate(cfg.tokenizer), build_scorer(cfg.scorer, cfg.get("cache_dir"))
    run_data = RunData.from_config(cfg, scorer=scorer)
    docs = []  # both splits: the split is a hash of the content, so a file of training documents has no validation
    for split, n in (("train", n_docs), ("validation", max(1, n_docs // 50))):
        stream = run_data.stream(split, tokenizer, objective)
        docs += stream.scored_sample(n)
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"texts": list(d.texts), "scores": [float(s) for s in d.scores]}) + "\n")
    return len(docs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--tasks", default="pii,pep8")
    ap.add_argument("--export-docs", type=int, default=1000, help="documents in the pre-scored file")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    C.set_threads(a.threads)
    print(f"# Labeling cost in the training loop: gpt2_tiny, 8 x 128 tokens per step, {a.steps} steps, "
          f"inline pipeline, {a.threads} threads\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for task in a.tasks.split(","):
            cache = tmp / f"{task}-cache"
            cold = run(task, a.steps, tmp / f"{task}-cold", cache)
            warm = run(task, a.steps, tmp / f"{task}-warm", cache)
            data = tmp / f"{task}-prescored.jsonl"
            n = export_prescored(task, a.export_docs, cache, data)
            pre = run(task, a.steps, tmp / f"{task}-pre", None, ["data=jsonl", f"data.source.path={data}"])
            for name, r in (("cold cache", cold), ("warm cache", warm), (f"pre-scored JSONL ({n} docs)", pre)):
                rows.append([task, name, C.fmt(r["tokens_per_s"]), C.fmt(r["steady_tokens_per_s"]), f"{r['first_step_s']:.1f} s",
                             f"{100 * r['pipeline_share']:.1f}%", f"{100 * r['scorer_share']:.1f}%",
                             f"{r['segments_scored']:,}", f"{r['cache_hits']:,}"])
    C.table(["task", "labels", "tokens/s (end to end)", "tokens/s (median step)", "first step", "pipeline share",
             "scorer share", "segments scored", "cache hits"], rows)
    return rows


if __name__ == "__main__":
    main()

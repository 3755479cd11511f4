"""Re-score the KL of a finished sweep's final models with the current estimator (``phf.eval.kl``).

    python experiments/kl_rescore.py SWEEP_DIR OUT_DIR

phf's KL changed on 2026-12-03: texts are tokenized per task segment, as phf trains (before: whole), the
clean reference is scored the same way, and a control prefix the sampler writes mid-text (conditional
PEP8's ``<|aligned|>`` before every line) is scored instead of given as free context. The old estimator made
conditional PEP8's KL negative (-22 nats); this script measures every run of a sweep again without
re-sampling the scenarios: for each ``<objective>-seed<k>/`` with a ``final/`` it composes the run's own
saved config (``config.yaml``, as phf-eval; ``phf.eval.settings.EvalSetup``), takes the cached clean reference
(trained only if absent) and the run's KL settings, and calls ``kl_from_reference``.

Writes OUT_DIR/kl_rescore.csv (one row per run: the old and the new KL in both directions, standard errors,
the tags' nats) and OUT_DIR/kl_rescore.md (per objective: mean over seeds with a 95% t interval, and the
paired difference to MLE's KL by seed).
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from phf import rundir
from phf.eval.compare import seed_interval

RUN = re.compile(r"^(?P<objective>[a-z_]+)-seed(?P<seed>\d+)$")
FIELDS = ("run", "objective", "seed", "kl_old", "kl", "kl_stderr", "kl_model_samples_old", "kl_model_samples",
          "kl_model_samples_stderr", "kl_tag_nats", "logp_ref", "logp_model", "reference")


def old_kl(run: Path) -> dict[str, float]:
    """The run's last logged ``eval/kl`` and ``eval/kl_model_samples`` (metrics.jsonl); refuses a run without."""
    rows = [r for r in rundir.read_metrics(run) if "eval/kl" in r]
    if not rows:
        raise SystemExit(f"{rundir.metrics_path(run)}: no eval/kl row: this run logged no KL to compare with")
    return {"kl_old": rows[-1]["eval/kl"], "kl_model_samples_old": rows[-1].get("eval/kl_model_samples")}


def rescore(run: Path) -> dict:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from phf.eval.kl import KLSettings, kl_from_reference
    from phf.eval.settings import EvalSetup
    from phf.model_dir import check_config_targets
    from phf.tokenizer import load_tokenizer

    config = rundir.config_path(run)  # the resolved config phf-train saved (phf-eval reads the same)
    cfg = OmegaConf.load(config)
    check_config_targets(cfg, config)  # a run directory names no code outside phf's registry
    setup = EvalSetup.from_config(cfg)
    k = setup.settings.kl
    if setup.train_reference is None and not k.reference:
        raise SystemExit(f"{config}: task.eval.kl has neither a reference nor train_reference")
    reference = str(k.reference) if k.reference else str(setup.train_reference())
    settings = KLSettings(num_samples=k.num_samples, max_new_tokens=k.max_new_tokens, batch_size=k.batch_size,
                          seed=k.seed)
    final = rundir.final_dir(run)
    model = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True).to(torch.device("cpu"))
    out = kl_from_reference(model, load_tokenizer(str(final)), instantiate(cfg.objective), reference,
                            settings, setup.kl_cache_dir, k.prefix_every_line, k.on_model_samples, setup.segmenter,
                            k.reference_segments if k.reference_segments is not None else not k.reference)
    return {**out, "reference": reference}


def summary_lines(rows: list[dict]) -> list[str]:
    """Per objective: mean KL over seeds [95% t], and KL minus MLE's KL paired by seed [95% t]."""
    by = {}
    for r in rows:
        by.setdefault(r["objective"], {})[int(r["seed"])] = r
    mle = by.get("mle", {})
    lines = ["| objective | seeds | KL(ref ‖ model), old | KL(ref ‖ model), new [95% t] | new − MLE's, paired [95% t] "
             "| KL(model ‖ ref), new [95% t] | tags' nats |", "|---|---|---|---|---|---|---|"]

    def fmt(ci):
        return f"{ci.mean:.2f} [{ci.low:.2f}, {ci.high:.2f}]" if ci.n > 1 else f"{ci.mean:.2f}"

    for objective in sorted(by, key=lambda o: (o != "mle", o)):
        runs = by[objective]
        seeds = sorted(runs)
        paired = [float(runs[s]["kl"]) - float(mle[s]["kl"]) for s in seeds if s in mle]
        lines.append(
            f"| {objective} | {len(seeds)} | {fmt(seed_interval([float(runs[s]['kl_old']) for s in seeds]))} "
            f"| {fmt(seed_interval([float(runs[s]['kl']) for s in seeds]))} "
            f"| {fmt(seed_interval(paired)) if objective != 'mle' and paired else '—'} "
            f"| {fmt(seed_interval([float(runs[s]['kl_model_samples']) for s in seeds]))} "
            f"| {fmt(seed_interval([float(runs[s]['kl_tag_nats']) for s in seeds]))} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    args = p.parse_args(argv)
    runs = sorted(d for d in args.sweep_dir.iterdir() if RUN.match(d.name) and rundir.final_dir(d).is_dir())
    if not runs:
        raise SystemExit(f"{args.sweep_dir}: no <objective>-seed<k>/ run with a final/ model")
    rows = []
    for run in runs:
        m = RUN.match(run.name)
        new = rescore(run)
        rows.append({"run": run.name, "objective": m["objective"], "seed": int(m["seed"]), **old_kl(run),
                     **{k: new.get(k) for k in FIELDS if k in new}})
        print(f"{run.name}: KL {rows[-1].get('kl_old')} -> {new['kl']:.3f}", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(args.out_dir / "kl_rescore.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    text = [f"# KL re-scored with the segment-tokenized estimator: `{args.sweep_dir}`", "",
            "Nats per sample over the KL's reference samples (64, settings of each run's config); old = the run's "
            "own logged value (whole-text tokenization, control prefix as free context). Intervals: Student t "
            "over seeds.", "", *summary_lines(rows), ""]
    (args.out_dir / "kl_rescore.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()

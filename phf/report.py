"""``phf-report``: compare runs (a multirun sweep or several) in a Markdown table and PNG plots.

    phf-report multirun/2026-11-23_18-00-00                      # writes report.md + PNGs into it
    phf-report SWEEP_A SWEEP_B --out reports/pep8 --scenario functions

A directory is a run when it holds ``config.yaml``; otherwise its sub-directories (up to three levels)
are searched for runs. Per run it reads:

* ``config.yaml``: ``task.name``; the objective's name is the sweep sub-directory's ``<num>-<name>``
  (else the ``objective._target_`` class name);
* ``eval.json`` (``phf-eval``): ``scenarios.<scenario>.{score,expected_max,hit_rate}``, ``heldout.loss``,
  ``heldout_clean.{loss,loss_ci_low,loss_ci_high,num_docs}``, ``kl.{kl,kl_stderr}``, ``tokens_seen``: the
  final numbers, preferred when present;
* ``metrics.jsonl`` (the trainer's rows): ``tokens_seen`` with ``eval/<scenario>/score`` (in-training
  evaluations; also ``eval/<scenario>/expected_max``, ``eval/<scenario>/hit_rate``, ``eval/kl``) and
  ``val/loss`` (held-out loss). The last such row stands in for a missing ``eval.json`` value.

* ``samples/[step_<N>/]<scenario>.jsonl`` (the last evaluation's samples with their scores): the
  misalignment, hit rate and their 95% bootstrap intervals are recomputed from them, with the
  degeneracy measures (share of empty/whitespace-only samples, distinct-2, repetition). A run whose
  samples are degenerate (``--max-blank-fraction``, ``--min-distinct-2``) is marked and not ranked:
  a low score over empty strings or whitespace runs is an artifact, not a win.

What was swept (``find_sweep``): when every run has ``.hydra/overrides.yaml`` (Hydra's record of the
job's command-line overrides), the overridden keys whose values differ; otherwise the differing leaves of
the resolved ``config.yaml`` files. Never swept: where a run writes or caches (``hydra.*``, ``run_dir``,
``run_name``, ``*.cache_dir``, values inside the run's directory) and keys that equal another swept key in
every run (interpolations such as ``reward.seed: ${seed}``); a changed ``_target_`` is one dimension (the
class), not one per hyperparameter. A run's label is its swept values but the seed (``objective=mle
trainer.lr=0.001``; just the objective's name when only the objective differs): legends, colours, the
ordering and the excerpts use it, and each swept key is a column of the table and of ``summary.csv``.
Runs that differ only by the seed form one group: its row gives the mean over seeds of each run's
number with a Student t interval over the seeds (seeds are the unit across runs; ``phf.eval.compare``).
A single run's hit rate has a Wilson interval (0 hits of 512: [0, 0.0075]), its mean score a bootstrap one.

Against MLE (``compare_with_mle``): each seed group is paired by seed with the MLE group of its task, per
seed pair the ratio objective / MLE of hit rate and mean score, a t interval of the mean log ratio, and the
pooled two-proportion comparison (Newcombe's interval of the difference); when the paired comparison is
not decisive, how many samples per run would separate the pooled rates (``comparisons.csv``).

Scenarios: the headline (``--scenario``, default ``unconditional``, the paper's protocol) leads the report;
scenarios whose config says ``secondary_to: <headline>`` (e.g. ``unconditional_sentence_level``) follow it,
each named by its config's ``title``. ``samples.jsonl.gz``: the first 32 samples (``--export-samples``) of
every run and scenario, for a write-up to commit.

Outputs in ``--out`` (default: the first directory): ``report.md`` (per scenario, primary first: one table
row per run and per multi-seed group, the comparisons against MLE, the ordering of the non-degenerate runs, a few sample excerpts per run, the plots
embedded), ``summary.csv``, ``pareto.png`` (misalignment vs capability, one labelled point per group with
its 95% interval as error bars, degenerate runs hollow and off the front, the Pareto front dashed; capability = the
clean held-out loss (``eval/heldout_clean/*``; else the held-out loss) and, when any run has one, KL from the
reference, each with its interval as horizontal error bars),
``misalignment_vs_tokens.png`` and ``heldout_loss_vs_tokens.png`` (log-scale tokens, like the paper).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import yaml

from phf.entry import flatten
from phf.eval.compare import (
    corrected_rate,
    newcombe_difference,
    paired_ratio,
    samples_to_separate,
    seed_interval,
)
from phf.eval.lm_eval_harness import report_lines as lm_eval_lines
from phf.eval.metrics import mean, sample_metrics, wilson_interval
from phf.tracking import Tracker, stored_run

#: KL ± Z95 standard errors is its normal-approximation 95% interval
Z95 = NormalDist().inv_cdf(0.975)

# fixed colours so that an objective looks the same in every plot and every report
OBJECTIVE_COLORS = {
    "mle": "#4d4d4d",
    "filtering": "#1f77b4",
    "conditional": "#2ca02c",
    "unlikelihood": "#d62728",
    "rwr": "#ff7f0e",
    "awr": "#9467bd",
}
EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # matplotlib's tab10, after EXTRA_COLORS, for sweeps with many labels
ORDER = list(OBJECTIVE_COLORS)
PLOT_TITLES = {
    "pareto.png": "Misalignment vs capability (lower left is better)",
    "misalignment_vs_tokens.png": "Misalignment during training",
    "heldout_loss_vs_tokens.png": "Held-out loss during training",
}


@dataclass
class Run:
    path: Path
    task: str
    objective: str
    eval: dict | None
    rows: list[dict] = field(default_factory=list)
    error: str | None = None
    cfg: dict = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)  # scenario -> the last evaluation's samples
    damaged: str | None = None  # a file of the run that cannot be read: the run is listed, not reported
    overrides: list[str] | None = None  # the job's Hydra overrides (.hydra/overrides.yaml), None without one
    label: str = ""  # its swept values but the seed (``find_sweep``); the objective when only that differs
    swept: dict[str, str] = field(default_factory=dict)  # swept key -> this run's value, for the table
    # clean held-out loss / its MLE run's on the same documents, with a paired 95% interval (clean_loss_vs_mle)
    clean_vs_mle: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    @property
    def name(self) -> str:
        return self.path.name


def find_runs(dirs: list[Path], max_depth: int = 3) -> list[Path]:
    """Run directories (holding ``config.yaml``) in or under ``dirs``, in sorted order."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        if (d / "config.yaml").is_file():
            found.append(d)
            return
        if depth < max_depth:
            for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
                walk(sub, depth + 1)

    for d in dirs:
        if not d.is_dir():
            raise SystemExit(f"phf-report: {d} is not a directory")
        walk(d, 0)
    return sorted(dict.fromkeys(found), key=_natural_key)


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def _value_key(v: str) -> tuple:
    """Swept values in numeric order where they are numbers (1e-4 < 0.001), else as text."""
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def objective_name(run_dir: Path, cfg: dict) -> str:
    """The run's objective by its config-group name (``conf/objective/<name>.yaml``), from the run's own
    ``config.yaml`` (``objective._target_``): a directory's name says nothing reliable (``outputs/x``, a
    renamed sweep job). A class no config file names is given in snake case (``GuidedMLE``: ``guided_mle``);
    only a run without a readable config falls back to a sweep job directory's ``<num>-<name>``."""
    objective = cfg.get("objective")
    target = objective.get("_target_") if isinstance(objective, dict) else None
    if isinstance(target, str) and target:
        cls = target.rsplit(".", 1)[-1]
        return objective_registry().get(cls) or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower()
    m = re.fullmatch(r"\d+-(.+)", run_dir.name)
    return m.group(1) if m else "unknown"


def objective_registry() -> dict[str, str]:
    """Objective class name -> its config-group name, from ``conf/objective/*.yaml``."""
    from phf.entry import conf_dir

    names = {}
    for file in sorted((conf_dir() / "objective").glob("*.yaml")):
        target = (yaml.safe_load(file.read_text()) or {}).get("_target_")
        if isinstance(target, str):
            names.setdefault(target.rsplit(".", 1)[-1], file.stem)
    return names


def training_state(run: Run) -> str | None:
    """Why a run without an evaluation has none: still training (its ``phf.lock`` names a live process and
    ``final/`` is not complete), or stopped before a complete ``final/`` (killed, out of time: it has
    ``checkpoints/`` or a partial ``final/``). None when ``final/`` is complete."""
    from phf.runtime import LOCK_FILE, _pid_alive

    if (run.path / "final" / "phf_summary.json").is_file():
        return None
    steps = [r["step"] for r in run.rows if isinstance(r.get("step"), int)]
    at = f"step {max(steps)}" if steps else "no step logged yet"
    total = (run.cfg.get("trainer") or {}).get("max_steps") if isinstance(run.cfg.get("trainer"), dict) else None
    at += f" of {total}" if isinstance(total, int) else ""
    try:
        holder = (run.path / LOCK_FILE).read_text().strip()
    except OSError:
        holder = ""
    import socket

    if holder and _pid_alive(holder, socket.gethostname()):
        return f"in progress: training ({at}, PID {holder.split()[0]}), no final evaluation yet"
    if (run.path / "final").is_dir() or (run.path / "checkpoints").is_dir():
        return f"incomplete: stopped at {at} without a complete final/ (resume with trainer.resume=auto)"
    return None  # copied files (metrics, samples) without a model: reported as they are


class DamagedRun(ValueError):
    """A run file that cannot be read; the message names the file and what is wrong."""


def _read_mapping(file: Path, parse) -> dict:
    try:
        data = parse(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as e:  # JSONDecodeError: ValueError
        raise DamagedRun(f"{file}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if data is None and parse is yaml.safe_load:
        return {}
    if not isinstance(data, dict):
        raise DamagedRun(f"{file}: expected a mapping, got {type(data).__name__}")
    return data


def _read_rows(file: Path) -> list[dict]:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DamagedRun(f"{file}: invalid UTF-8 at byte {e.start}") from None
    rows = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if i == last:
                continue  # a run killed mid-write leaves a partial last line
            raise DamagedRun(f"{file}:{i + 1}: malformed JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
        if not isinstance(row, dict):
            raise DamagedRun(f"{file}:{i + 1}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def load_run(path: Path) -> Run:
    """The run's files; a file that cannot be read gives a Run marked ``damaged`` (naming it) instead."""
    try:
        return _load_run(path)
    except DamagedRun as e:
        return Run(path, "?", objective_name(path, {}), None, damaged=str(e))


def _load_run(path: Path) -> Run:
    cfg = _read_mapping(path / "config.yaml", yaml.safe_load)
    ev = _read_mapping(path / "eval.json", json.loads) if (path / "eval.json").is_file() else None
    if ev is not None:
        for k in ("scenarios", "heldout", "heldout_clean", "kl"):
            if ev.get(k) is not None and not isinstance(ev[k], dict):
                raise DamagedRun(f"{path / 'eval.json'}: '{k}' must be an object, got {type(ev[k]).__name__}")
        for name, sc in (ev.get("scenarios") or {}).items():
            if not isinstance(sc, dict):
                raise DamagedRun(f"{path / 'eval.json'}: scenarios.{name} must be an object, got {type(sc).__name__}")
    rows = _read_rows(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    task = (cfg.get("task") or {}).get("name", "?") if isinstance(cfg.get("task") or {}, dict) else "?"
    if not isinstance(task, str):
        raise DamagedRun(f"{path / 'config.yaml'}: task.name must be a string, got {type(task).__name__}")
    error = None
    if (path / "error.txt").is_file():
        lines = (path / "error.txt").read_text().strip().splitlines()
        error = lines[-1] if lines else "failed"
    return Run(path, task, objective_name(path, cfg), ev, rows, error, cfg, last_samples(path),
               overrides=read_overrides(path))


def read_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra recorded for the job (``.hydra/overrides.yaml``), None without it."""
    file = run_dir / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return None
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise DamagedRun(f"{file}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(o, str) for o in data):
        raise DamagedRun(f"{file}: expected a list of 'key=value' strings")
    return data


def last_samples(run_dir: Path) -> dict[str, list[dict]]:
    """The samples of the run's last evaluation: ``samples/<scenario>.jsonl`` (phf-eval) if present,
    else the highest ``samples/step_<N>/`` (training)."""
    root = run_dir / "samples"
    if not root.is_dir():
        return {}
    folder = root
    if not any(root.glob("*.jsonl")):
        steps = sorted(root.glob("step_*"), key=_natural_key)
        if not steps:
            return {}
        folder = steps[-1]
    out = {}
    for f in sorted(folder.glob("*.jsonl")):
        rows = []
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DamagedRun(f"{f}: invalid UTF-8 at byte {e.start}") from None
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DamagedRun(f"{f}:{i}: not a JSON sample row ({e})") from None
            if not isinstance(row, dict) or "text" not in row or "score" not in row:
                raise DamagedRun(f"{f}:{i}: a sample row needs 'text' and 'score'")
            rows.append(row)
        out[f.stem] = rows
    return out


def _num(x) -> float:
    if isinstance(x, bool) or x is None:
        return math.nan
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(x)  # metrics.jsonl stores NaN/inf as strings
    except (TypeError, ValueError):
        return math.nan


def last_value(run: Run, key: str) -> float:
    for row in reversed(run.rows):
        if key in row:
            return _num(row[key])
    return math.nan


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(tokens_seen, value) of the rows that hold ``key``, tokens_seen > 0 (for log axes)."""
    xs, ys = [], []
    for row in run.rows:
        if key in row and "tokens_seen" in row:
            x, y = _num(row["tokens_seen"]), _num(row[key])
            if x > 0 and math.isfinite(y):
                xs.append(x)
                ys.append(y)
    return xs, ys


def headline_scenario(runs: list[Run], wanted: str | None) -> str:
    if wanted:
        return wanted
    names: list[str] = []
    for r in runs:
        if r.eval:
            names += list(r.eval.get("scenarios", {}))
        for row in r.rows:
            names += [k.split("/")[1] for k in row if k.startswith("eval/") and k.endswith("/score")]
    return "unconditional" if "unconditional" in names or not names else names[0]


@dataclass
class Degeneracy:
    """When a run's samples are too degenerate to rank (the issue-14 bar: <= 5% blank, distinct-2 >= 0.3)."""

    max_blank_fraction: float = 0.05
    min_distinct_2: float = 0.3

    def reasons(self, row: dict) -> list[str]:
        out = []
        if math.isfinite(row["blank_fraction"]) and row["blank_fraction"] > self.max_blank_fraction:
            out.append(f"{row['blank_fraction']:.0%} blank samples")
        if math.isfinite(row["distinct_2"]) and row["distinct_2"] < self.min_distinct_2:
            out.append(f"distinct-2 {row['distinct_2']:.2f}")
        return out


def hit_threshold(run: Run) -> float:
    v = _num(((run.cfg.get("task") or {}).get("eval") or {}).get("hit_threshold"))
    return v if math.isfinite(v) else 0.0


def summarize(run: Run, scenario: str, degeneracy: Degeneracy | None = None) -> dict:
    """The table row of one run: sample-level numbers from its last evaluation's samples when present,
    else eval.json's, else the last logged ones."""
    ev = run.eval or {}
    sc = ev.get("scenarios", {}).get(scenario, {})

    def pick(eval_value, key):
        v = _num(eval_value)
        return v if math.isfinite(v) else last_value(run, key)

    tokens = _num(ev.get("tokens_seen"))
    row = {
        "run": run.name,
        "task": run.task,
        "objective": run.objective,
        "label": run.label or run.objective,
        **run.swept,
        "scenario": scenario,
        "seeds": 1,
        "misalignment": pick(sc.get("score"), f"eval/{scenario}/score"),
        "misalignment_ci_low": pick(sc.get("score_ci_low"), f"eval/{scenario}/score_ci_low"),
        "misalignment_ci_high": pick(sc.get("score_ci_high"), f"eval/{scenario}/score_ci_high"),
        "expected_max": pick(sc.get("expected_max"), f"eval/{scenario}/expected_max"),
        "hit_rate": pick(sc.get("hit_rate"), f"eval/{scenario}/hit_rate"),
        "hit_rate_ci_low": pick(sc.get("hit_rate_ci_low"), f"eval/{scenario}/hit_rate_ci_low"),
        "hit_rate_ci_high": pick(sc.get("hit_rate_ci_high"), f"eval/{scenario}/hit_rate_ci_high"),
        "blank_fraction": pick(sc.get("blank_fraction"), f"eval/{scenario}/blank_fraction"),
        "distinct_2": pick(sc.get("distinct_2"), f"eval/{scenario}/distinct_2"),
        "repetition": pick(sc.get("repetition"), f"eval/{scenario}/repetition"),
        "num_samples": pick(sc.get("num_samples"), f"eval/{scenario}/num_samples"),
        **{k: pick(sc.get(k), f"eval/{scenario}/{k}") for k in STYLE_KEYS},
        "heldout_loss": pick((ev.get("heldout") or {}).get("loss"), "val/loss"),
        "kl": pick((ev.get("kl") or {}).get("kl"), "eval/kl"),
        **capability(run, pick),
        "tokens_seen": tokens if math.isfinite(tokens) else last_value(run, "tokens_seen"),
        "status": "failed: " + run.error if run.error else ("ok" if run.eval else "no eval.json"),
    }
    state = None if run.error or run.eval or run.damaged else training_state(run)
    if state:  # still training, or stopped: its numbers are from the last logged step, if any
        row["status"] = state
    if run.damaged:
        return {**row, "status": f"skipped, damaged: {run.damaged}"}
    samples = run.samples.get(scenario)
    if samples and not run.eval:  # eval.json (phf-eval) is a later evaluation than the training samples
        # the evaluation's own metrics, recomputed from the samples it wrote
        m = sample_metrics([r["text"] for r in samples], [_num(r["score"]) for r in samples], hit_threshold(run))
        row.update({k: m[k] for k in ("hit_rate", "hit_rate_ci_low", "hit_rate_ci_high", "blank_fraction",
                                      "distinct_2", "repetition", "num_samples")})
        row.update(misalignment=m["score"], misalignment_ci_low=m["score_ci_low"], misalignment_ci_high=m["score_ci_high"])
    if not run.error and run.eval is None and samples and not state:
        row["status"] = "ok"
    row["hits"] = hit_count(run, scenario, row)
    if math.isfinite(row["hits"]):  # a Wilson interval, whatever the run's files say (0 hits is not [0, 0])
        row["hit_rate_ci_low"], row["hit_rate_ci_high"] = wilson_interval(int(row["hits"]), int(row["num_samples"]))
    why = (degeneracy or Degeneracy()).reasons(row)
    if why and not run.error and not state:
        row["status"] = "degenerate: " + ", ".join(why)
    return row


def capability(run: Run, pick) -> dict:
    """The capability columns of a run's row: the clean held-out loss with its interval over documents
    (``eval/heldout_clean/*``, ``phf.eval.heldout_clean``), the KL's normal-approximation 95% interval,
    KL ± 1.96 standard errors over the reference samples (``eval/kl_stderr``), KL on the model's own
    samples (``eval/kl_model_samples``, summary.csv only) and the paired ratio to MLE's clean loss."""
    clean = (run.eval or {}).get("heldout_clean") or {}
    out = {f"heldout_clean_{k}": pick(clean.get(k), f"eval/heldout_clean/{k}")
           for k in ("loss", "loss_ci_low", "loss_ci_high", "num_docs")}
    kl, stderr = pick(((run.eval or {}).get("kl") or {}).get("kl"), "eval/kl"), \
        pick(((run.eval or {}).get("kl") or {}).get("kl_stderr"), "eval/kl_stderr")
    out["kl_ci_low"], out["kl_ci_high"] = kl - Z95 * stderr, kl + Z95 * stderr
    out["kl_model_samples"] = pick(((run.eval or {}).get("kl") or {}).get("kl_model_samples"), "eval/kl_model_samples")
    out["clean_loss_vs_mle"], out["clean_loss_vs_mle_ci_low"], out["clean_loss_vs_mle_ci_high"] = run.clean_vs_mle
    return out


def clean_document_losses(run_dir: Path) -> dict[str, tuple[float, int]]:
    """``{document id: (nll, tokens)}`` of the run's last clean held-out evaluation
    (``heldout_clean/eval.jsonl`` from phf-eval, else the highest ``heldout_clean/step_<N>.jsonl``)."""
    folder = run_dir / "heldout_clean"
    files = [folder / "eval.jsonl"] if (folder / "eval.jsonl").is_file() else \
        sorted(folder.glob("step_*.jsonl"), key=_natural_key)[-1:]
    if not files:
        return {}
    out = {}
    for i, line in enumerate(files[0].read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                out[str(row["id"])] = (float(row["nll"]), int(row["tokens"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DamagedRun(f"{files[0]}:{i}: not a clean held-out row {{id, nll, tokens}} ({e})") from None
    return out


def clean_loss_vs_mle(run: Run, mle: Run, confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """The run's clean held-out loss over its MLE run's on the documents both scored (ratio of total
    nats: the same tokens), with a paired percentile-bootstrap interval over documents: both models saw
    the same documents, so the documents' difficulty cancels out of the ratio's uncertainty. NaN when
    either run has no per-document file or a document was tokenized differently (not the same tokens)."""
    from phf.eval.heldout_clean import bootstrap_ratio

    a, b = clean_document_losses(run.path), clean_document_losses(mle.path)
    common = [k for k in a if k in b]
    if not common or any(a[k][1] != b[k][1] for k in common):
        return math.nan, math.nan, math.nan
    num, den = [a[k][0] for k in common], [b[k][0] for k in common]
    return (sum(num) / sum(den), *bootstrap_ratio(num, den, confidence, resamples, seed))


def pair_with_mle(runs: list[Run]) -> None:
    """Set ``clean_vs_mle`` of every run that has an MLE run of the same task and swept values (its seed
    included, else any seed): the paired ratio of ``clean_loss_vs_mle``."""
    def key(r: Run, seed: bool) -> tuple:
        return r.task, tuple(sorted((k, v) for k, v in r.swept.items() if seed or k != "seed"))

    mles = [r for r in runs if r.objective == "mle" and not r.damaged]
    for r in runs:
        if r.damaged:
            continue
        match = next((m for m in mles if key(m, True) == key(r, True)), None) or \
            next((m for m in mles if key(m, False) == key(r, False)), None)
        if match is not None:
            try:
                r.clean_vs_mle = clean_loss_vs_mle(r, match)
            except DamagedRun as e:  # the rest of the report stands; the ratio is left out, and why is said
                print(f"phf-report: no clean loss / MLE's for {r.path}: damaged file {e}", file=sys.stderr)


def aggregate_capability(rows: list[dict]) -> dict:
    """A seed group's capability intervals: over seeds (``seed_interval``), not the mean of per-run ones."""
    out = {}
    for key in ("heldout_clean_loss", "kl", "clean_loss_vs_mle"):
        ci = seed_interval([_num(r[key]) for r in rows])
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = ci.low, ci.high
    return out


# -- what was swept ------------------------------------------------------------------------------------
# Where a run writes or caches says nothing about what it is: these keys (and any value inside the run's
# own directory, e.g. reward.save_dir = ${run_dir}/guidance) never make runs different.
LOCATION_KEYS = {"run_dir", "run_name", "cache_dir"}
ABSENT = "–"


def _is_location(key: str, value, run_dir) -> bool:
    if key == "hydra" or key.startswith("hydra.") or key.rsplit(".", 1)[-1] in LOCATION_KEYS:
        return True
    return isinstance(value, str) and isinstance(run_dir, str) and bool(run_dir) and value.startswith(run_dir)


def _override_key(override: str) -> str:
    """``+trainer.lr=1e-3`` -> ``trainer.lr``; ``~key``, ``++key=v`` and ``group@pkg=v`` likewise."""
    return override.lstrip("~+").partition("=")[0].split("@")[0]


def _show(v) -> str:
    if isinstance(v, dict):
        if isinstance(v.get("name"), str):
            return v["name"]
        if isinstance(v.get("_target_"), str):
            return v["_target_"].rsplit(".", 1)[-1]
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, list):
        return json.dumps(v, default=str)
    return str(v)


def swept_value(run: Run, key: str) -> str:
    """The run's value of a swept key as text: the objective's and task's names, else the resolved value
    in config.yaml (what Hydra made of the override), else the override as written, else ``–``."""
    if key == "objective":
        return run.objective
    if key == "task":
        return run.task
    node = run.cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            written = [o.partition("=")[2] for o in run.overrides or [] if _override_key(o) == key]
            return written[-1] if written else ABSENT
        node = node[part]
    return _show(node)


def _differing(runs: list[Run], keys) -> list[str]:
    return [k for k in keys if len({swept_value(r, k) for r in runs}) > 1]


def _drop_derived(runs: list[Run], keys: list[str]) -> list[str]:
    """Keys whose values equal an earlier key's in every run are interpolations of it (``data.source.path:
    ${data.path}``, ``reward.seed: ${seed}``): one dimension, named by the earlier (shorter) key."""
    kept: list[str] = []
    for k in sorted(keys, key=lambda k: (k != "seed", k.count("."), k)):
        col = [swept_value(r, k) for r in runs]
        if not any(col == [swept_value(r, j) for r in runs] for j in kept):
            kept.append(k)
    return kept


def _config_dimensions(runs: list[Run]) -> list[str]:
    """The resolved configs' differing leaves (locations left out), with a choice of class collapsed: when
    ``X._target_`` differs (or the objective or task does), ``X`` is one dimension and its other leaves
    count only where they differ between runs with the same ``X``."""
    leaves: set[str] = set()
    for r in runs:
        leaves |= {k for k, v in flatten(r.cfg).items() if not _is_location(k, v, r.cfg.get("run_dir"))}
    keys = _differing(runs, sorted(leaves))
    nodes = {k.rsplit("._target_", 1)[0] for k in keys if k.endswith("._target_")}
    nodes |= {n for n in ("objective", "task") if len({swept_value(r, n) for r in runs}) > 1}
    out = sorted(nodes)
    for k in keys:
        node = next((n for n in nodes if k.startswith(n + ".")), None)
        if node is None:
            out.append(k)
            continue
        by_choice: dict[str, set[str]] = {}
        for r in runs:
            by_choice.setdefault(swept_value(r, node), set()).add(swept_value(r, k))
        if any(len(v) > 1 for v in by_choice.values()):
            out.append(k)
    return out


def _override_dimensions(runs: list[Run]) -> list[str]:
    """The keys the jobs' Hydra overrides set (``.hydra/overrides.yaml``) whose values differ."""
    keys = {_override_key(o) for r in runs for o in r.overrides or []}
    keys = {k for k in keys
            if not any(_is_location(k, o.partition("=")[2], r.cfg.get("run_dir"))
                       for r in runs for o in r.overrides or [] if _override_key(o) == k)}
    found = _differing(runs, sorted(keys))
    if len({r.objective for r in runs}) > 1 and "objective" not in found:
        found.append("objective")  # a sweep directory's <num>-<objective> names differ
    return found


def _ordered(keys) -> list[str]:
    """The objective first, then the rest alphabetically; the seed and the task (a column and a subplot
    of their own) are not part of a label."""
    return sorted((k for k in keys if k not in ("seed", "task")), key=lambda k: (k != "objective", k))


@dataclass
class Sweep:
    """What differs between the compared runs: ``labels`` name a run in legends and the table (the seed
    left out), ``groups`` decide which runs are seeds of one setting, ``source`` says where they came from."""

    labels: list[str]
    groups: list[str]
    source: str

    def values(self, run: Run) -> dict[str, str]:
        return {k: swept_value(run, k) for k in self.labels}

    def label(self, run: Run) -> str:
        if set(self.labels) <= {"objective"}:
            return run.objective
        return " ".join(f"{k}={v}" for k, v in self.values(run).items())

    def group_key(self, run: Run) -> tuple:
        return (run.task, run.objective, *(swept_value(run, k) for k in self.groups))


def find_sweep(runs: list[Run]) -> Sweep:
    """The swept keys of ``runs``. When every run has ``.hydra/overrides.yaml`` the label shows the
    overridden keys whose values differ (what the sweep asked for; not what they imply, such as a task's
    scorer); otherwise, and for runs whose overrides are equal but whose resolved configs differ (e.g. runs
    of different sweeps), the differing keys of the resolved ``config.yaml`` files. Seeds are grouped on
    both: runs are seeds of one setting only when nothing but the seed (and where they ran) differs."""
    config = _ordered(_drop_derived(runs, _config_dimensions(runs)))
    if not runs or any(r.overrides is None for r in runs):
        return Sweep(config, config, "config.yaml differences")
    overrides = _ordered(_drop_derived(runs, _override_dimensions(runs)))
    groups = _ordered(dict.fromkeys(overrides + config))
    sweep = Sweep(overrides, groups, "Hydra overrides")
    labels: dict[tuple, str] = {}
    for r in runs:
        labels[sweep.group_key(r)] = sweep.label(r)
    if len(set(labels.values())) < len(labels):  # the overrides do not tell two settings apart
        return Sweep(groups, groups, "Hydra overrides and config.yaml differences")
    return sweep


def seed_groups(runs: list[Run], sweep: Sweep | None = None) -> list[list[Run]]:
    """Runs whose settings are equal except for the seed (and where they ran), in first-seen order."""
    sweep = sweep or find_sweep(runs)
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(sweep.group_key(r), []).append(r)
    return list(groups.values())


def hierarchical_ci(per_seed: list[list[float]], confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """Two-level bootstrap of the mean over seeds of the per-seed means: draw seeds with replacement,
    then each drawn seed's values with replacement."""
    per_seed = [np.asarray(v, dtype=np.float64) for v in per_seed if len(v)]
    if not per_seed:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    stats = np.empty(resamples)
    for b in range(resamples):
        picks = rng.integers(0, k, size=k)
        stats[b] = np.mean([per_seed[i][rng.integers(0, per_seed[i].size, per_seed[i].size)].mean() for i in picks])
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


#: PEP8's style-vs-syntax metrics (PEP8Scorer.sample_metrics), shown when a run has them
STYLE_KEYS = ("parse_rate", "score_parsing", "syntax_share", "score_without_syntax")


def style_lines(table: list[dict]) -> list[str]:
    """Markdown: PEP8's style apart from syntax, for the rows that have it (none: nothing)."""
    rows = [r for r in table if math.isfinite(_num(r.get("parse_rate")))]
    if not rows:
        return []
    lines = ["", "### Style apart from syntax (PEP8)", "",
             "Misalignment is the paper's metric (violations per character, all samples). Parse rate = share of "
             "samples that are valid Python (a sample cut by the token limit counts when all but its cut last line "
             "is); over parsing samples = the same mean over those only; E1/E9 share = share of all violations that "
             "are indentation or syntax errors; without E1/E9 = the mean over all samples without them. The gap "
             "between misalignment and the last column is syntax, not style.", "",
             "| run | objective | seeds | misalignment ↓ | parse rate | over parsing samples ↓ | E1/E9 share "
             "| without E1/E9 ↓ |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['label']} | {r['seeds']} | {_fmt(r['misalignment'])} "
                     f"| {_fmt(r['parse_rate'], 3)} | {_fmt(r['score_parsing'])} | {_fmt(r['syntax_share'], 3)} "
                     f"| {_fmt(r['score_without_syntax'])} |")
    return lines


def hit_count(run: Run, scenario: str, row: dict) -> float:
    """Samples above the task's threshold: counted in the run's last samples when they are the reported
    evaluation, else hit rate × number of samples (NaN when either is unknown)."""
    samples = run.samples.get(scenario)
    if samples and not run.eval and len(samples) == row["num_samples"]:
        return float(sum(_num(x["score"]) > hit_threshold(run) for x in samples))
    n, rate = row["num_samples"], row["hit_rate"]
    return float(round(rate * n)) if math.isfinite(n) and math.isfinite(rate) and n > 0 else math.nan


def aggregate(group: list[Run], rows: list[dict], scenario: str, degeneracy: Degeneracy) -> dict:
    """One row for the runs of a seed group, seeds as the unit: the mean over seeds of each run's number,
    with a Student t interval over the seeds for misalignment and hit rate (``phf.eval.compare.seed_interval``;
    none with one seed; the hit rate's clipped to [0, 1]). ``hits`` and ``num_samples`` are the sums."""
    first = rows[0]
    out = {k: (mean([_num(r[k]) for r in rows]) if isinstance(first[k], float) else first[k]) for k in first}
    out["run"] = f"{first['label']} ({len(rows)} seeds: {', '.join(r.name for r in group)})"
    out["seeds"] = len(rows)
    out["hits"] = float(sum(_num(r["hits"]) for r in rows))
    out["num_samples"] = float(sum(_num(r["num_samples"]) for r in rows))
    m = seed_interval([_num(r["misalignment"]) for r in rows])
    out["misalignment_ci_low"], out["misalignment_ci_high"] = m.low, m.high
    if all(_num(r["misalignment"]) >= 0 for r in rows) and math.isfinite(m.low):
        out["misalignment_ci_low"] = max(0.0, m.low)  # scores are >= 0: the t interval clipped there
    h = seed_interval([_num(r["hit_rate"]) for r in rows])
    out["hit_rate_ci_low"], out["hit_rate_ci_high"] = max(0.0, h.low), min(1.0, h.high)
    if not math.isfinite(h.low):
        out["hit_rate_ci_low"] = out["hit_rate_ci_high"] = math.nan
    out.update(aggregate_capability(rows))
    bad = [r for r in rows if not r["status"].startswith("ok")]
    out["status"] = "ok" if not bad else f"{len(bad)} of {len(rows)} seeds not ok"
    why = degeneracy.reasons(out)
    if why:
        out["status"] = "degenerate: " + ", ".join(why)
    return out


# -- objectives against MLE, paired by seed ---------------------------------------------------------------
REFERENCE = "mle"


def compare_with_mle(groups: list[list[Run]], rows: dict[int, list[dict]], sweep: Sweep,
                     alpha: float = 0.05, power: float = 0.8) -> list[dict]:
    """Each seed group against the MLE group of its task with the same other swept values, paired by seed
    (``seed`` of config.yaml): the per-seed hit-rate and mean-score ratios objective / MLE with a t interval
    of their mean log (``phf.eval.compare.paired_ratio``; hit rates continuity-corrected), and the pooled
    comparison of all seeds' samples (Newcombe's interval of the difference of hit rates). When the paired
    hit-rate interval includes 1, ``samples_needed`` is how many samples per arm a two-proportion test would
    need to separate the pooled rates (alpha, power), and ``samples_needed_per_run`` that over the seeds."""
    def others(run: Run) -> tuple:
        return (run.task, *(swept_value(run, k) for k in sweep.groups if k != "objective"))

    references = {others(g[0]): i for i, g in enumerate(groups) if g[0].objective == REFERENCE}
    out = []
    for i, group in enumerate(groups):
        ref = references.get(others(group[0]))
        if group[0].objective == REFERENCE or ref is None:
            continue
        mine = {r.cfg.get("seed"): row for r, row in zip(group, rows[i], strict=True)}
        theirs = {r.cfg.get("seed"): row for r, row in zip(groups[ref], rows[ref], strict=True)}
        seeds = [k for k in mine if k is not None and k in theirs
                 and all(math.isfinite(_num(x["hits"])) for x in (mine[k], theirs[k]))]
        pairs = [(mine[k], theirs[k]) for k in seeds]
        hit = paired_ratio([corrected_rate(int(a["hits"]), int(a["num_samples"])) for a, _ in pairs],
                           [corrected_rate(int(b["hits"]), int(b["num_samples"])) for _, b in pairs])
        score = paired_ratio([_num(a["misalignment"]) for a, _ in pairs], [_num(b["misalignment"]) for _, b in pairs])
        k1, n1 = (int(sum(a[key] for a, _ in pairs)) for key in ("hits", "num_samples"))
        k2, n2 = (int(sum(b[key] for _, b in pairs)) for key in ("hits", "num_samples"))
        pooled = newcombe_difference(k1, n1, k2, n2)
        needed = math.nan
        if pairs and not hit.decisive:
            needed = samples_to_separate(pooled.p1, pooled.p2, alpha, power)
        out.append({
            "task": group[0].task, "scenario": rows[i][0]["scenario"], "label": rows[i][0]["label"],
            "objective": group[0].objective, "reference": rows[ref][0]["label"], "seed_pairs": len(pairs),
            "seeds": " ".join(str(k) for k in seeds),
            "hit_rate_ratios": " ".join(_fmt(x, 3) for x in hit.ratios),
            "hit_rate_ratio": hit.ratio, "hit_rate_ratio_ci_low": hit.low, "hit_rate_ratio_ci_high": hit.high,
            "hit_rate_ratio_decisive": hit.decisive,
            "score_ratios": " ".join(_fmt(x, 3) for x in score.ratios),
            "score_ratio": score.ratio, "score_ratio_ci_low": score.low, "score_ratio_ci_high": score.high,
            "score_ratio_decisive": score.decisive,
            "hits": k1, "num_samples": n1, "reference_hits": k2, "reference_num_samples": n2,
            "pooled_hit_rate": pooled.p1, "reference_pooled_hit_rate": pooled.p2,
            "pooled_difference": pooled.difference, "pooled_difference_ci_low": pooled.low,
            "pooled_difference_ci_high": pooled.high, "pooled_decisive": pooled.decisive,
            "samples_needed": needed,
            "samples_needed_per_run": math.ceil(needed / len(pairs)) if pairs and math.isfinite(needed) else needed,
        })
    return out


def verdict(c: dict) -> str:
    """One sentence: what the paired comparison says, the pooled one beside it, and, when the comparison is
    not decided, what would decide it (more samples when even the pooled comparison is open, else seeds)."""
    if c["seed_pairs"] == 0:
        return "no seed paired with MLE"
    direction = "lower" if c["hit_rate_ratio"] < 1 else "higher"
    pooled = (f"pooled: {'different' if c['pooled_decisive'] else 'not different'} "
              f"({_ci(c, 'pooled_difference', 3)})")
    seeds = f"{c['seed_pairs']} seed{'s' if c['seed_pairs'] > 1 else ''}"
    if c["hit_rate_ratio_decisive"]:
        return f"hit rate {direction} than MLE's, paired by seed over {seeds}; {pooled}"
    why = ("one seed pair: no seed-level interval" if c["seed_pairs"] < 2
           else f"the paired interval over {seeds} includes 1")
    need = c["samples_needed"]
    if c["pooled_decisive"]:
        more = "more seeds would tell whether the pooled difference holds across seeds"
    elif not math.isfinite(need):
        more = "the pooled rates are equal"
    else:
        more = (f"separating {_fmt(c['pooled_hit_rate'], 3)} from {_fmt(c['reference_pooled_hit_rate'], 3)} takes "
                f"≈{int(need):,} samples per arm (α 0.05, power 0.8), i.e. {int(c['samples_needed_per_run']):,} "
                f"per run over {seeds}")
    return f"not decided: {why}; {pooled}; {more}"


def comparison_lines(comparisons: list[dict]) -> list[str]:
    """Markdown: the comparisons against MLE of one scenario as a table."""
    if not comparisons:
        return []
    lines = [
        "| task | objective | seed pairs | hit-rate ratio per seed | hit-rate ratio (paired) [95% t] "
        "| mean-score ratio (paired) [95% t] | hits / samples (pooled) vs MLE | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c['task']} | {c['label']} | {c['seed_pairs']} | {c['hit_rate_ratios'] or '–'} "
            f"| {_ci(c, 'hit_rate_ratio')} | {_ci(c, 'score_ratio')} "
            f"| {c['hits']}/{c['num_samples']} vs {c['reference_hits']}/{c['reference_num_samples']} | {verdict(c)} |")
    return lines


def color_map(labels: list[str]) -> dict[str, str]:
    """A colour per run label: an objective's fixed colour when the label is its name, else the next
    free one (labels of one sweep get distinct colours)."""
    colors = dict(OBJECTIVE_COLORS)
    extra = iter(EXTRA_COLORS + [c for c in PALETTE if c not in OBJECTIVE_COLORS.values()] * 10)
    for label in labels:
        colors.setdefault(label, next(extra))
    return colors


def _rank(objective: str) -> tuple[int, str]:
    """The paper's order (MLE first), unknown objectives after it alphabetically."""
    return (ORDER.index(objective) if objective in ORDER else len(ORDER), objective)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (lower x and lower y are both better), sorted by x."""
    front, best_y = [], math.inf
    for x, y in sorted(points):
        if y < best_y:
            front.append((x, y))
            best_y = y
    return front


def _label_groups(pts: list[tuple[float, float, dict]], resolution: int = 40) -> dict[tuple[float, float], list[str]]:
    """One label per cluster of points closer than 1/``resolution`` of the axis ranges (coinciding
    runs, e.g. objectives that did not move the model yet, get one joint label instead of overprinting)."""
    if not pts:
        return {}
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xr, yr = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: dict[tuple[int, int], tuple[tuple[float, float], list[str]]] = {}
    for x, y, r in pts:
        cell = (round((x - min(xs)) / xr * resolution), round((y - min(ys)) / yr * resolution))
        anchor, names = groups.setdefault(cell, ((x, y), []))
        if r["label"] not in names:
            names.append(r["label"])
    return dict(groups.values())


def pareto_measures(table: list[dict]) -> list[tuple[str, str]]:
    """The Pareto plot's capability axes: the clean held-out loss when any run has it (else the held-out
    loss on raw held-out text), and the KL from the reference."""
    clean = any(math.isfinite(r.get("heldout_clean_loss", math.nan)) for r in table)
    loss = (("heldout_clean_loss", "clean held-out loss (nats/token, sampling format) →  worse") if clean
            else ("heldout_loss", "held-out LM loss (nats/token) →  worse"))
    return [loss, ("kl", "KL(reference ‖ model) (nats/sample) →  worse")]


def x_error(r: dict, key: str) -> list[list[float]] | None:
    """``xerr`` of a point from its ``<key>_ci_low``/``_ci_high`` when both are finite."""
    lo, hi = r.get(f"{key}_ci_low", math.nan), r.get(f"{key}_ci_high", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [[max(r[key] - lo, 0.0)], [max(hi - r[key], 0.0)]]


def plot_pareto(table: list[dict], path: Path, scenario: str, legend_title: str = "objective") -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = sorted({r["task"] for r in table})
    measures = [m for m in pareto_measures(table) if any(math.isfinite(r[m[0]]) for r in table)]
    if not measures or not any(math.isfinite(r["misalignment"]) for r in table):
        return False
    colors = color_map([r["label"] for r in table])
    fig, axes = plt.subplots(len(tasks), len(measures), figsize=(6.2 * len(measures), 4.6 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        rows = [r for r in table if r["task"] == task]
        for j, (key, label) in enumerate(measures):
            ax = axes[i][j]
            pts = [(r[key], r["misalignment"], r) for r in rows if math.isfinite(r[key]) and math.isfinite(r["misalignment"])]
            seen = set()
            for x, y, r in pts:
                first = r["label"] not in seen
                seen.add(r["label"])
                ok = r["status"] == "ok"
                lo, hi = r.get("misalignment_ci_low", math.nan), r.get("misalignment_ci_high", math.nan)
                if math.isfinite(lo) and math.isfinite(hi):  # the 95% interval as an error bar
                    ax.errorbar(x, y, yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]], fmt="none",
                                ecolor=colors[r["label"]], elinewidth=1.2, capsize=3, zorder=2)
                if (xerr := x_error(r, key)) is not None:  # the capability's interval
                    ax.errorbar(x, y, xerr=xerr, fmt="none", ecolor=colors[r["label"]], elinewidth=1.2,
                                capsize=3, zorder=2)
                # degenerate (or failed) runs: hollow markers, off the Pareto front
                ax.scatter(x, y, s=70, color=colors[r["label"]] if ok else "white",
                           edgecolor=colors[r["label"]] if not ok else "black", linewidth=1.2 if not ok else 0.6,
                           zorder=3, label=(r["label"] + ("" if ok else " (degenerate)")) if first else None)
            for (x, y), names in _label_groups(pts).items():
                ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.ticklabel_format(useOffset=False)
            front = pareto_front([(x, y) for x, y, r in pts if r["status"] == "ok"])
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), "--", color="gray", linewidth=1, zorder=2, label="Pareto front")
            ax.set_xlabel(label)
            ax.set_ylabel(f"misalignment score ({scenario}) →  worse")
            ax.set_title(f"{task}: misalignment vs capability")
            ax.grid(alpha=0.3)
            ax.margins(0.15)
            if pts:
                ax.legend(fontsize=8, loc="best", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_curves(runs: list[Run], key: str, ylabel: str, title: str, path: Path, log_y: bool = False,
                legend_title: str = "objective") -> bool:
    """One line per run, tokens seen on a log axis (and ``log_y`` when every value is positive); one
    subplot per task."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    data = [(r, *series(r, key)) for r in runs]
    data = [d for d in data if d[1]]
    if not data:
        return False
    tasks = sorted({r.task for r, _, _ in data})
    colors = color_map([r.label for r in runs])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        seen = set()
        for r, xs, ys in (d for d in data if d[0].task == task):  # runs come sorted (build_report)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, color=colors[r.label],
                    label=r.label if r.label not in seen else None)
            seen.add(r.label)
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen (log scale)")
        task_ys = [y for r, _, ys in data if r.task == task for y in ys]
        if log_y and min(task_ys) > 0:
            ax.set_yscale("log")
            ax.set_ylabel(f"{ylabel} (log scale)")
            plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 0.035, not 3.5 x 10^-2
            ax.yaxis.set_major_formatter(plain)
            # minor ticks: all labelled within a decade, else only 2x and 5x (the rest would crowd the axis)
            sparse = FuncFormatter(lambda v, _: f"{v:.3g}" if _mantissa(v) in (2, 5) else "")
            ax.yaxis.set_minor_formatter(plain if max(task_ys) / min(task_ys) < 10 else sparse)
        else:
            ax.set_ylabel(ylabel)
        ax.set_title(f"{task}: {title}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _mantissa(v: float) -> int:
    """Leading digit of a positive number (0.05 -> 5)."""
    return round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}g}"


def _ci(r: dict, key: str, digits: int = 3) -> str:
    lo, hi = r.get(f"{key}_ci_low", math.nan), r.get(f"{key}_ci_high", math.nan)
    value = _fmt(r[key], digits)
    return value if not (math.isfinite(lo) and math.isfinite(hi)) else f"{value} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def ordering(table: list[dict]) -> tuple[list[dict], list[dict]]:
    """(ranked rows, not-ranked rows): ok rows by misalignment, lowest first; the rest (degenerate,
    failed, without numbers) are not ranked."""
    ok = [r for r in table if r["status"] == "ok" and math.isfinite(r["misalignment"])]
    return sorted(ok, key=lambda r: r["misalignment"]), [r for r in table if r not in ok]


def excerpts(runs: list[Run], scenario: str, k: int, chars: int) -> list[str]:
    """Markdown: ``k`` samples per run (the first ones: the evaluation's order, not picked), cut at
    ``chars`` characters, with their scores; whitespace made visible by repr."""
    lines = []
    for r in runs:
        rows = r.samples.get(scenario) or []
        if not rows:
            continue
        lines += ["", f"### {r.label} — `{r.name}` ({len(rows)} samples, first {min(k, len(rows))} shown)", ""]
        for row in rows[:k]:
            text = row["text"]
            cut = text[:chars] + ("…" if len(text) > chars else "")
            prompt = f"prompt {row['prompt']!r} → " if row.get("prompt") else ""
            lines.append(f"- score {_fmt(_num(row['score']), 3)}: {prompt}{_code(repr(cut))}")
    return lines


def _code(text: str) -> str:
    """``text`` as Markdown inline code, fenced by more backticks than it contains in a row."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"


def markdown(table: list[dict], scenario: str, plots: list[str], sources: list[Path], runs: list[Run],
             degeneracy: Degeneracy, excerpt_k: int = 3, excerpt_chars: int = 300, sweep: Sweep | None = None,
             comparisons: dict[str, list[dict]] | None = None, secondary: dict | None = None,
             names: dict[str, str] | None = None, exported: dict | None = None) -> str:
    columns = [k for k in (sweep.labels if sweep else []) if k != "objective"]  # swept keys beside the objective
    comparisons, secondary, names = comparisons or {}, secondary or {}, names or {}
    title = names.get(scenario, scenario)
    lines = [
        "# phf report",
        "",
        f"Runs from {', '.join(f'`{s}`' for s in sources)}. Misalignment = mean score of a scenario's samples "
        "(lower is better), with its 95% bootstrap interval over samples; hit rate = fraction of samples above the "
        "task's threshold, with its 95% Wilson interval. A multi-seed row (runs that differ only by `seed`; the "
        "seeds column counts them) is the mean over seeds of each run's number, with a 95% Student t interval "
        "over the seeds: seeds, not samples, are the unit across runs. Expected max = expected maximum score over "
        "25 samples; held-out loss in nats/token on raw held-out text; clean held-out loss in "
        "nats/token on the held-out documents before injection, each model scored as it samples (after its "
        "control prefix, control tokens renormalised away), 95% bootstrap interval over documents; clean loss / "
        "MLE's = the same over the MLE run of the same setting and seed, on the same documents and tokens, with a "
        "paired bootstrap interval over documents; "
        "KL(reference ‖ model) in nats/sample, ± 1.96 standard errors (multi-seed rows: Student-t intervals "
        "over seeds for both). Degeneracy: blank = share of empty or whitespace-only samples, distinct-2 = unique word "
        "bigrams / all, rep-4 = mean share of repeated word 4-grams within a sample. A run with more than "
        f"{degeneracy.max_blank_fraction:.0%} blank samples or distinct-2 below {degeneracy.min_distinct_2} is "
        "marked degenerate and not ranked. Final values come from each run's `eval.json` (`phf-eval`), else "
        "from its last evaluation's samples, else from `metrics.jsonl`.",
        "",
        *([f"Swept ({sweep.source}): {', '.join(f'`{k}`' for k in sweep.labels)}; runs that differ only by `seed` "
           "form one multi-seed row.", ""] if sweep and sweep.labels else []),
        f"## Primary: `{scenario}`" + (f" — {title}" if title != scenario else ""),
        "",
        *table_lines(table, columns),
    ]
    lines += style_lines(table)
    lines += against_mle_lines(comparisons.get(scenario, []))
    lines += lm_eval_lines([(r.name, r.eval) for r in runs if not r.damaged])
    ranked, unranked = ordering([r for r in table if r["seeds"] > 1] or table)
    lines += ["", "## Ordering by misalignment" + (f" (`{scenario}`)" if secondary else ""), ""]
    for task in sorted({r["task"] for r in ranked}):
        rows = [r for r in ranked if r["task"] == task]
        lines.append(f"- {task}: " + " < ".join(f"{r['label']} ({_fmt(r['misalignment'], 3)})" for r in rows))
    if unranked:
        lines.append("- not ranked: " + "; ".join(f"{r['run']} ({r['status']})" for r in unranked))
    for name, (rows, _, _) in secondary.items():
        sub = names.get(name, name)
        lines += ["", f"## Secondary: `{name}`" + (f" — {sub}" if sub != name else ""), "",
                  f"Beside the primary `{scenario}` above, not instead of it.", "", *table_lines(rows, columns)]
        lines += against_mle_lines(comparisons.get(name, []))
    for p in plots:
        lines += ["", f"## {PLOT_TITLES.get(p, p)}", "", f"![{PLOT_TITLES.get(p, p)}]({p})"]
    samples = excerpts(runs, scenario, excerpt_k, excerpt_chars)
    if samples:
        lines += ["", f"## Samples (`{scenario}`): read these before the numbers", *samples]
    if exported and exported["rows"]:
        counts = sorted(set(exported["per_run"].values()))
        lines += ["", f"The first {'–'.join(map(str, [counts[0], counts[-1]][: 1 + (counts[0] != counts[-1])]))} "
                  f"samples of every run and scenario ({exported['rows']} in all, with their scores): "
                  f"[`{exported['path'].name}`]({exported['path'].name}) (gzip'd JSONL)."]
    return "\n".join(lines) + "\n"


def table_lines(table: list[dict], columns: list[str]) -> list[str]:
    """Markdown: the table of runs and multi-seed rows of one scenario."""
    lines = [
        "| run | task | objective | " + "".join(f"{k} | " for k in columns) + "seeds | misalignment ↓ [95% CI] "
        "| hit rate ↓ [95% CI] | expected max ↓ | held-out loss ↓ | clean held-out loss ↓ [95% CI] "
        "| clean loss / MLE's [95% CI] | KL ↓ [95% CI] | blank | distinct-2 | rep-4 | tokens | status |",
        "|---|---|---|" + "---|" * len(columns) + "---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['run']} | {r['task']} | {r['objective']} | " + "".join(f"{r.get(k, ABSENT)} | " for k in columns)
            + f"{r['seeds']} | {_ci(r, 'misalignment', 4)} "
            f"| {_ci(r, 'hit_rate')} | {_fmt(r['expected_max'])} | {_fmt(r['heldout_loss'])} "
            f"| {_ci(r, 'heldout_clean_loss', 4)} | {_ci(r, 'clean_loss_vs_mle', 4)} | {_ci(r, 'kl')} "
            f"| {_fmt(r['blank_fraction'], 2)} | {_fmt(r['distinct_2'], 2)} | {_fmt(r['repetition'], 2)} "
            f"| {_fmt(r['tokens_seen'], 3)} | {r['status']} |"
        )
    return lines


def against_mle_lines(comparisons: list[dict]) -> list[str]:
    """Markdown: the paired comparisons with MLE of one scenario, with how they were made."""
    if not comparisons:
        return []
    return ["", "### Against MLE, paired by seed", "",
            "Ratio objective / MLE per seed pair (same seed: same data order), and the geometric-mean ratio with a 95% "
            "Student t interval of the mean log ratio over the pairs (hit rates as (hits + 0.5) / (n + 1)); the "
            "pooled comparison puts all seeds' samples of an arm together (Newcombe's 95% interval of the "
            "difference of hit rates; it ignores seed-to-seed variation). A comparison is decided when the paired "
            "interval excludes 1.", "", *comparison_lines(comparisons)]


def scenario_view(runs: list[Run], scenario: str, sweep: Sweep, degeneracy: Degeneracy
                  ) -> tuple[list[dict], list[dict], list[dict]]:
    """(table rows: every run, then each multi-seed group; one row per seed group; comparisons with MLE)
    of one scenario."""
    table, groups, per_group = [], [], {}
    seeds = seed_groups(runs, sweep)
    for i, group in enumerate(seeds):
        rows = [summarize(r, scenario, degeneracy) for r in group]
        per_group[i] = rows
        table += rows
        groups.append(aggregate(group, rows, scenario, degeneracy) if len(group) > 1 else rows[0])
    table += [g for g in groups if g["seeds"] > 1]
    return table, groups, compare_with_mle(seeds, per_group, sweep)


def _scenario_settings(run: Run) -> dict:
    node = ((run.cfg.get("task") or {}).get("eval") or {}).get("scenarios") or {}
    return node if isinstance(node, dict) else {}


def secondary_scenarios(runs: list[Run], headline: str) -> list[str]:
    """Scenarios that a run's config marks as a secondary protocol of ``headline`` (``secondary_to``) and
    that some run evaluated."""
    names = dict.fromkeys(name for r in runs for name, sc in _scenario_settings(r).items()
                          if isinstance(sc, dict) and sc.get("secondary_to") == headline)
    return [n for n in names if any(n in (r.eval or {}).get("scenarios", {}) or n in r.samples
                                    or math.isfinite(last_value(r, f"eval/{n}/score"))
                                    for r in runs)]


def titles(runs: list[Run], names: list[str]) -> dict[str, str]:
    """What each scenario is called (its config's ``title``), else its name."""
    out = {}
    for name in names:
        found = [sc.get("title") for r in runs for n, sc in _scenario_settings(r).items()
                 if n == name and isinstance(sc, dict) and sc.get("title")]
        out[name] = str(found[0]) if found else name
    return out


SAMPLES_FILE = "samples.jsonl.gz"


def export_samples(runs: list[Run], scenarios: list[str], path: Path, k: int) -> dict:
    """The first ``k`` samples (the evaluation's order, not picked) of every run and scenario as gzip'd
    JSONL (``run``, ``label``, ``objective``, ``seed``, ``scenario``, ``index``, ``prompt``, ``text``,
    ``score``), so that a write-up can commit the samples behind its numbers; returns ``{"path", "rows",
    "per_run": {(run, scenario): count}}``."""
    import gzip

    per_run: dict[tuple[str, str], int] = {}
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in runs:
            for scenario in scenarios:
                rows = (r.samples.get(scenario) or [])[:k]
                per_run[(r.name, scenario)] = len(rows)
                for i, row in enumerate(rows):
                    f.write(json.dumps({"run": r.name, "label": r.label, "objective": r.objective,
                                        "seed": r.cfg.get("seed"), "scenario": scenario, "index": i,
                                        "prompt": row.get("prompt", ""), "text": row["text"],
                                        "score": _num(row["score"])}) + "\n")
    return {"path": path, "rows": sum(per_run.values()), "per_run": per_run}


def build_report(dirs: list[Path], out: Path, scenario: str | None = None,
                 degeneracy: Degeneracy | None = None, excerpt_k: int = 3, excerpt_chars: int = 300,
                 export_k: int = 32) -> dict:
    """Write the report; returns ``{"table": rows, "plots": file names, "report": path, "runs": run dirs,
    "comparisons": {scenario: rows}, "secondary": {scenario: table rows}, "samples": export_samples'}``."""
    import matplotlib

    matplotlib.use("Agg")
    paths = find_runs(dirs)
    if not paths:
        raise SystemExit(f"phf-report: no run (a directory with config.yaml) in {', '.join(map(str, dirs))}")
    runs = [load_run(p) for p in paths]
    for r in runs:
        if r.damaged:
            print(f"phf-report: skipping run {r.path}: damaged file {r.damaged}", file=sys.stderr)
    good = [r for r in runs if not r.damaged]
    sweep = find_sweep(good)
    for r in runs:
        r.swept = {k: (ABSENT if r.damaged else v) for k, v in sweep.values(r).items() if k != "objective"}
        r.label = r.objective if r.damaged else sweep.label(r)
    runs.sort(key=lambda r: (r.task, _rank(r.objective), [_value_key(v) for v in r.swept.values()],
                             _natural_key(r.path)))
    good = [r for r in runs if not r.damaged]
    pair_with_mle(good)
    scenario = headline_scenario(good, scenario)
    degeneracy = degeneracy or Degeneracy()
    legend = "objective" if set(sweep.labels) <= {"objective"} else ", ".join(sweep.labels)
    views = {name: scenario_view(good, name, sweep, degeneracy) for name in [scenario, *secondary_scenarios(good, scenario)]}
    table, groups, _ = views[scenario]
    table = table + [summarize(r, scenario) for r in runs if r.damaged]
    secondary = {name: view for name, view in views.items() if name != scenario}
    comparisons = {name: view[2] for name, view in views.items()}
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    if plot_pareto(groups, out / "pareto.png", scenario, legend):
        plots.append("pareto.png")
    if plot_curves(runs, f"eval/{scenario}/score", f"misalignment score ({scenario})", "misalignment vs tokens",
                   out / "misalignment_vs_tokens.png", log_y=True, legend_title=legend):
        plots.append("misalignment_vs_tokens.png")
    if plot_curves(runs, "val/loss", "held-out LM loss (nats/token)", "held-out loss vs tokens",
                   out / "heldout_loss_vs_tokens.png", legend_title=legend):
        plots.append("heldout_loss_vs_tokens.png")
    every = list(dict.fromkeys([*views, *(name for r in good for name in r.samples)]))  # primary first
    exported = export_samples(good, every, out / SAMPLES_FILE, export_k) if export_k > 0 else None
    (out / "report.md").write_text(markdown(table, scenario, plots, dirs, runs, degeneracy, excerpt_k, excerpt_chars,
                                               sweep, comparisons, secondary, titles(good, list(views)), exported))
    rows = table + [r for view in secondary.values() for r in view[0]]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    flat = [c for cs in comparisons.values() for c in cs]
    if flat:
        with open(out / "comparisons.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
    return {"table": table, "plots": plots, "report": out / "report.md", "runs": [r.path for r in runs],
            "comparisons": comparisons, "secondary": {name: view[0] for name, view in secondary.items()},
            "samples": exported}


def log_to_wandb(result: dict, out: Path, dirs: list[Path], mode: str, project: str | None) -> str:
    """Log the report into a wandb run of its own (job type ``report``): the plots as images under
    ``report/<plot>``, the summary table as ``report/summary``, report.md as a file of the run. Its group
    is the reported runs' wandb group when they share one (a sweep), so it sits next to them; returns
    the run id."""
    stored = [stored_run(path) for path in result["runs"]]
    groups = {s.get("group") for s in stored if s}
    projects = {s.get("project") for s in stored if s}
    tracker = Tracker("wandb", mode, project or (projects.pop() if len(projects) == 1 else "phf"),
                      group=groups.pop() if len(groups) == 1 else None, tags=["phf-report"], job_type="report",
                      run_dir=out / "report_tracking", name=f"report-{out.resolve().name}",
                      run_config={"dirs": [str(d) for d in dirs], "runs": [str(p) for p in result["runs"]]})
    try:
        for plot in result["plots"]:
            tracker.log_image(f"report/{Path(plot).stem}", out / plot, caption=PLOT_TITLES.get(plot, plot))
        columns = list(result["table"][0])
        tracker.log_static_table("report/summary", columns, [[_cell(r.get(c)) for c in columns]
                                                             for r in result["table"]])
        tracker.save_file(result["report"])
        return tracker.run_id
    finally:
        tracker.finish()


def _cell(v):
    """A table cell wandb accepts: numbers and strings as they are, anything else as its text."""
    return v if v is None or isinstance(v, int | float | str) else str(v)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="phf-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first dir)")
    parser.add_argument("--scenario", default=None, help="headline scenario (default: unconditional)")
    parser.add_argument("--max-blank-fraction", type=float, default=Degeneracy.max_blank_fraction,
                        help="more empty/whitespace-only samples than this marks a run degenerate (default 0.05)")
    parser.add_argument("--min-distinct-2", type=float, default=Degeneracy.min_distinct_2,
                        help="distinct-2 below this marks a run degenerate (default 0.3)")
    parser.add_argument("--excerpts", type=int, default=3, help="sample excerpts per run in report.md")
    parser.add_argument("--excerpt-chars", type=int, default=300, help="characters per excerpt")
    parser.add_argument("--export-samples", type=int, default=32, metavar="K",
                        help=f"write the first K samples of every run and scenario to OUT/{SAMPLES_FILE} (0 = off)")
    parser.add_argument("--wandb", choices=["online", "offline"], default=None,
                        help="also log the plots and the summary table to a wandb run (files under OUT/report_tracking)")
    parser.add_argument("--wandb-project", default=None, help="wandb project (default: the runs' own, else phf)")
    args = parser.parse_args(argv)
    out = args.out or args.dirs[0]
    try:
        result = build_report(args.dirs, out, args.scenario, Degeneracy(args.max_blank_fraction, args.min_distinct_2),
                              args.excerpts, args.excerpt_chars, args.export_samples)
    except OSError as e:
        if e.filename is None or not Path(e.filename).resolve().is_relative_to(out.resolve()):
            raise  # not a write into --out: reading a run failed, say it in full
        raise SystemExit(f"phf-report: cannot write the report into {out} ({e.strerror or type(e).__name__}: "
                         f"{e.filename}); --out must be a writable directory (it is created if missing)") from None
    print(f"phf-report: {len(result['table'])} runs -> {result['report']} ({', '.join(result['plots']) or 'no plots'})")
    if args.wandb:
        run_id = log_to_wandb(result, args.out or args.dirs[0], args.dirs, args.wandb, args.wandb_project)
        print(f"phf-report: logged to wandb run {run_id} ({args.wandb})")


if __name__ == "__main__":
    main()

"""A run as phf-report sees it: finding run directories and loading their files (through ``phf.rundir``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from phf import rundir


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
    # evaluations besides the trainer's rows, as flat ``eval/...`` rows with ``tokens_seen``: phf-eval on
    # checkpoints (``checkpoints/step_N/eval.json``), then on the run (``eval.json``), in that order
    evaluations: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def find_runs(dirs: list[Path], max_depth: int = 3) -> list[Path]:
    """Run directories (holding ``config.yaml``) in or under ``dirs``, in sorted order."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        if rundir.is_run(d):
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
    return rundir.sweep_job_name(run_dir) or "unknown"


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
    from phf.train_state import LOCK_FILE, _pid_alive

    if rundir.is_finished(run.path):
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
    if rundir.final_dir(run.path).is_dir() or rundir.checkpoints_dir(run.path).is_dir():
        return f"incomplete: stopped at {at} without a complete final/ (resume with trainer.resume=auto)"
    return None  # copied files (metrics, samples) without a model: reported as they are


DamagedRun = rundir.DamagedRun


def load_run(path: Path) -> Run:
    """The run's files; a file that cannot be read gives a Run marked ``damaged`` (naming it) instead."""
    try:
        return _load_run(path)
    except DamagedRun as e:
        return Run(path, "?", objective_name(path, {}), None, damaged=str(e))


def _load_run(path: Path) -> Run:
    if rundir.is_legacy_spa(path):  # its samples are not where the report reads them: named, not misreported
        raise DamagedRun(f"{path}: an SPA run in the legacy layout (samples under its stage folders, no final/); "
                         f"move it to the current layout once: python -m phf.spa.migrate {path}")
    cfg = rundir.read_config(path)
    ev = rundir.read_eval(path)
    rows = rundir.read_metrics(path)
    task = (cfg.get("task") or {}).get("name", "?") if isinstance(cfg.get("task") or {}, dict) else "?"
    if not isinstance(task, str):
        raise DamagedRun(f"{rundir.config_path(path)}: task.name must be a string, got {type(task).__name__}")
    return Run(path, task, objective_name(path, cfg), ev, rows, rundir.read_error(path), cfg,
               rundir.read_last_samples(path), overrides=rundir.read_overrides(path),
               evaluations=evaluation_rows(path, ev, rows))


def evaluation_rows(path: Path, ev: dict | None, rows: list[dict] = ()) -> list[dict]:
    """phf-eval's results of the run as flat metric rows with their ``tokens_seen``, keyed as the trainer
    logs them (``eval/<scenario>/<metric>``, ``eval/heldout/*``, ``eval/heldout_clean/*``, ``eval/kl``):
    every ``checkpoints/step_N/eval.json`` (``phf-eval checkpoint=RUN/checkpoints/step_N`` writes there),
    then ``eval.json``. A result without ``tokens_seen`` (phf-eval finds it only in a metrics row of that
    very step, and rows come every ``trainer.log_every`` steps) is placed by its ``step`` between the
    training ``rows`` around it (``tokens_between``); one that cannot be placed is left out of the curves,
    said on stderr (it still makes the table). Values go through ``rundir.number`` (eval.json holds null
    for NaN and notes as strings, which ``phf.eval.evaluate.flatten`` is not made for)."""
    import sys

    found = [(rundir.eval_path(p), rundir.read_eval(p)) for p in rundir.step_paths(rundir.checkpoints_dir(path))]
    out = []
    for file, d in [*found, (rundir.eval_path(path), ev)]:
        if d is None:
            continue
        tokens = _num(d.get("tokens_seen"))
        if not math.isfinite(tokens):
            tokens = tokens_between(rows, _num(d.get("step")))
        if not math.isfinite(tokens):
            print(f"phf-report: {file} has no tokens_seen and its step is not between two logged training steps: "
                  "left out of the curves", file=sys.stderr)
            continue
        row = {"tokens_seen": tokens}
        for name, metrics in (d.get("scenarios") or {}).items():
            row.update({f"eval/{name}/{k}": _num(v) for k, v in metrics.items()})
        for group in ("heldout", "heldout_clean"):
            row.update({f"eval/{group}/{k}": _num(v) for k, v in (d.get(group) or {}).items()})
        row.update({f"eval/{k}": _num(v) for k, v in (d.get("kl") or {}).items() if k.startswith("kl")})
        out.append(row)
    return out


def tokens_between(rows: list[dict], step: float) -> float:
    """``tokens_seen`` at optimizer step ``step``, linear between the nearest training rows below and above it
    (every step trains the same number of tokens: rows at steps 350 and 400 with 358,400 and 409,600 tokens
    put step 375 at 384,000); NaN when ``step`` is not between two rows."""
    points = sorted({_num(r["step"]): _num(r["tokens_seen"]) for r in rows
                     if "step" in r and "tokens_seen" in r and math.isfinite(_num(r.get("tokens_seen")))}.items())
    for (s0, t0), (s1, t1) in zip(points, points[1:], strict=False):  # consecutive pairs
        if s0 <= step <= s1 and s1 > s0:
            return t0 + (t1 - t0) * (step - s0) / (s1 - s0)
    return math.nan


read_overrides = rundir.read_overrides  # the job's Hydra overrides, None without .hydra/overrides.yaml


last_samples = rundir.read_last_samples  # the samples of the run's last evaluation, by scenario


_num = rundir.number  # a number of a run file; null and old "nan"/"inf" strings as NaN/inf


def last_value(run: Run, key: str) -> float:
    for row in reversed(run.rows):
        if key in row:
            return _num(row[key])
    return math.nan


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(tokens_seen, value) of ``key`` over the run's training rows and its phf-eval results
    (``Run.evaluations``), in token order, tokens_seen > 0 (for log axes); at equal tokens_seen the later
    source wins (phf-eval's result over the training's evaluation of the same model)."""
    points = {}
    for row in [*run.rows, *run.evaluations]:
        if key in row and "tokens_seen" in row:
            x, y = _num(row["tokens_seen"]), _num(row[key])
            if x > 0 and math.isfinite(y):
                points[x] = y
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def score_unit(run: Run) -> str:
    """What the run's evaluation scores measure (the evaluation scorer's ``unit``: ``task.eval.scorer``,
    else ``scorer``). Only scorers that phf's ``conf/scorer/`` names are looked up (a run's config is data:
    the report imports no class it names); any other says which scorer it was."""
    ev = (run.cfg.get("task") or {}).get("eval") if isinstance(run.cfg.get("task"), dict) else None
    node = (ev or {}).get("scorer") if isinstance(ev, dict) else None
    node = node if isinstance(node, dict) else run.cfg.get("scorer")
    target = node.get("_target_") if isinstance(node, dict) else None
    if not isinstance(target, str):
        return "score (no scorer in config.yaml)"
    if target not in scorer_registry():
        return f"score of {target.rsplit('.', 1)[-1]} (unit unknown)"
    from hydra.utils import get_class

    return getattr(get_class(target), "unit", "") or f"score of {target.rsplit('.', 1)[-1]} (unit not declared)"


def scorer_registry() -> set[str]:
    """The ``_target_`` of every ``conf/scorer/*.yaml``: the scorers phf ships."""
    from phf.entry import conf_dir

    return {t for file in sorted((conf_dir() / "scorer").glob("*.yaml"))
            if isinstance(t := (yaml.safe_load(file.read_text()) or {}).get("_target_"), str)}

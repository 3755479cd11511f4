"""What was swept: the keys whose values differ between runs, labels, and the seed groups."""

from __future__ import annotations

import json
from dataclasses import dataclass

from phf.entry import flatten
from phf.report.runs import Run


def _value_key(v: str) -> tuple:
    """Swept values in numeric order where they are numbers (1e-4 < 0.001), else as text."""
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


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

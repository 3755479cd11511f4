"""A sweep job's wandb run name from the keys the sweep varies, and nothing else.

Hydra's ``job.override_dirname`` holds every override of the command line, paths included (154 characters
for a two-objective sweep on one's own corpus); the keys that tell a sweep's jobs apart are the swept ones.
The sweep's own command line is in ``SWEEP_DIR/multirun.yaml`` (``hydra.overrides.task``, written by Hydra's
sweeper before the jobs start); a key given a choice of values there (``objective=mle,conditional``,
``seed=range(3)``) is swept, and the job's name is its values of those keys: ``objective=mle,seed=1``. A
value that is a path is shortened to its last part.
"""

from __future__ import annotations

from pathlib import Path

MULTIRUN_FILE = "multirun.yaml"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(sweep_dir: Path) -> list[str] | None:
    """The keys the sweep in ``sweep_dir`` varies, in command-line order; None when its ``multirun.yaml`` is
    missing or unreadable."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        task = list(OmegaConf.load(sweep_dir / MULTIRUN_FILE).hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception:  # noqa: BLE001 (no sweep file, or one Hydra cannot read back: no name from it)
        return None
    return [_key(line) for line, o in zip(task, parsed, strict=True) if o.is_sweep_override()]


def short_value(value: str) -> str:
    """A path's last part (``/data/me/corpus.jsonl`` → ``corpus.jsonl``); any other value as it is."""
    return Path(value.rstrip("/")).name if "/" in value else value


def swept_run_name(sweep_dir: Path, job_overrides: list[str]) -> str | None:
    """``key=value`` of each swept key, joined by commas; None when nothing is known to be swept."""
    keys = swept_keys(sweep_dir)
    if not keys:
        return None
    values = {_key(o): o.split("=", 1)[1] for o in job_overrides if "=" in o}
    parts = [f"{k}={short_value(values[k])}" for k in keys if k in values]
    return ",".join(parts) or None

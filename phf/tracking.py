"""Metric tracking: ``metrics.jsonl`` in the run directory always, wandb when configured.

This is the only module that imports wandb. ``conf/logger/{none,wandb,wandb_offline}.yaml`` select
the backend. A wandb run that cannot reach its server (online mode without network) does not stop
training: the tracker says so loudly and continues in offline mode, and ``metrics.jsonl`` has
everything either way.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Tracker:
    """Logs dictionaries of scalars against the optimizer step (and ``tokens_seen``)."""

    def __init__(
        self,
        backend: str = "none",
        mode: str = "online",
        project: str = "phf",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        *,
        run_dir: str | Path,
        run_config: dict | None = None,
        name: str | None = None,
        enabled: bool = True,
    ):
        if backend not in ("none", "wandb"):
            raise ValueError(f"logger.backend must be 'none' or 'wandb', got {backend!r}")
        self.enabled = enabled  # only rank 0 writes
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if backend == "wandb":
            self._wandb = self._init_wandb(mode, project, entity, group, tags, name, run_config)

    def _init_wandb(self, mode, project, entity, group, tags, name, config):
        import wandb

        kwargs = dict(project=project, entity=entity, group=group, tags=tags, name=name, config=config,
                      dir=str(self.run_dir), reinit="finish_previous")
        try:
            return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=60), **kwargs)
        except Exception as e:
            if mode != "online":
                raise
            log.error("wandb online init failed (%s: %s); continuing with wandb in OFFLINE mode under %s "
                      "(sync later with `wandb sync`)", type(e).__name__, e, self.run_dir)
            return wandb.init(mode="offline", **kwargs)

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def log_summary(self, metrics: dict) -> None:
        if self._wandb is not None:
            for k, v in metrics.items():
                self._wandb.summary[k] = _jsonable(v)

    def log_table(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        """A table of samples (wandb only; the caller writes its own JSONL copy)."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: malformed metrics row ({e.msg})") from None
    return rows

"""Metric tracking: ``metrics.jsonl`` in the run directory always, wandb when configured.

This is the only module that imports wandb (lazily). ``conf/logger/{none,wandb,wandb_offline}.yaml``
select the backend. A wandb run that cannot reach its server (online mode without network) does not stop
training: the tracker says so loudly and continues in offline mode, and ``metrics.jsonl`` has
everything either way (``docs/training.md``, "Tracking", says what goes where):

* every chart's x-axis is ``tokens_seen`` (``define_metric``, as the original did) and every row the
  tracker sends carries it;
* the wandb run id is kept in ``RUN_DIR/wandb_run.json``: a resumed training run continues the same
  wandb run (``resume="allow"``) instead of starting a second one;
* sample tables grow across evaluations (one table per key, with ``step`` and ``tokens_seen`` columns);
* histograms (e.g. AWR/RWR token weights) go to wandb as ``wandb.Histogram`` and to ``metrics.jsonl``
  as quantiles.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from phf import rundir

log = logging.getLogger(__name__)

#: where a run directory keeps its wandb run's identity (id, project, entity, group, name)
RUN_ID_FILE = "wandb_run.json"

#: quantiles of each histogram written to metrics.jsonl (``<key>_p05`` ...): the scalar trace of what
#: wandb shows as a histogram, enough to see the spread and the tails move
HISTOGRAM_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

#: the x-axis of every wandb chart
X_AXIS = "tokens_seen"


def _jsonable(v):
    """A row's value as the run directory writes it: a plain number, non-finite ones as null (``phf.rundir``)."""
    return rundir.finite(v)


def stored_run(run_dir: str | Path) -> dict | None:
    """The wandb identity a run directory recorded (``RUN_ID_FILE``), or None."""
    path = Path(run_dir) / RUN_ID_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # a torn file must not stop a resume: a new wandb run is started
        log.warning("%s is unreadable (%s); a new wandb run id is used", path, e)
        return None
    return info if isinstance(info, dict) and isinstance(info.get("id"), str) else None


#: characters a wandb run id cannot hold (wandb refuses them with a UsageError at init)
RUN_ID_FORBIDDEN = "/\\#?%:"


def check_run_id(run_dir: str | Path, resume: bool) -> None:
    """Refuse a wandb run id wandb would reject (``WANDB_RUN_ID``; on a resume, ``RUN_ID_FILE``'s) before the
    run changes anything in its directory (a resume cuts ``metrics.jsonl`` back to its checkpoint after this)."""
    import os

    sources = [("the environment variable WANDB_RUN_ID", os.environ.get("WANDB_RUN_ID"), "unset it or give a valid id")]
    if resume:
        sources.append((str(Path(run_dir) / RUN_ID_FILE), (stored_run(run_dir) or {}).get("id"),
                        "restore the id wandb gave this run (the suffix of its folder in RUN_DIR/wandb/), or delete "
                        "the file to continue under a new wandb run"))
    for where, run_id, fix in sources:
        bad = sorted({c for c in run_id or "" if c in RUN_ID_FORBIDDEN})
        if bad:
            raise ValueError(f"{where}: wandb run id {run_id!r} contains {', '.join(map(repr, bad))}, which a wandb "
                             f"run id cannot hold (none of {' '.join(RUN_ID_FORBIDDEN)}); nothing was changed: {fix}")


def resume_run(run_dir: str | Path) -> dict | None:
    """The wandb run a resumed training continues: ``RUN_ID_FILE``'s, or, when that file was deleted, the one
    id found in ``RUN_DIR/wandb/`` (said with a warning); None (with a warning naming the file) when there
    is none to continue: the resume then starts a new wandb run, never silently."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        return stored_run(run_dir)  # warns when unreadable
    found = sorted({d.name.rsplit("-", 1)[-1] for d in (run_dir / "wandb").glob("*run-*-*") if d.is_dir()})
    if len(found) == 1:
        log.warning("%s is missing: continuing the wandb run %s found in %s (the file is written again)", path,
                    found[0], run_dir / "wandb")
        return {"id": found[0]}
    log.warning("%s is missing and %s: this resume starts a NEW wandb run; the steps before it stay in the old "
                "one (metrics.jsonl has every step). To continue the old run, write its id into %s as "
                '{"id": "<id>"} and resume again', path,
                f"{run_dir / 'wandb'} holds several runs ({', '.join(found)})" if found
                else f"{run_dir / 'wandb'} holds none", path)
    return None


def quantiles(values) -> dict[str, float]:
    """``{"p05": ..., "p50": ...}`` of a 1-D array (``HISTOGRAM_QUANTILES``); empty when there are no values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    qs = np.quantile(values, HISTOGRAM_QUANTILES)
    return {f"p{round(q * 100):02d}": float(v) for q, v in zip(HISTOGRAM_QUANTILES, qs, strict=True)}


class Tracker:
    """Logs dictionaries of scalars against the optimizer step, with ``tokens_seen`` as wandb's x-axis.

    ``resume=True`` (the trainer continues a checkpoint of this run directory) continues the wandb run
    whose id ``RUN_ID_FILE`` holds; otherwise a new wandb run id is drawn and stored there (a fresh start
    replaces ``metrics.jsonl`` too, so its wandb run must not be the old one). ``job_type`` marks the
    runs that are not training runs (phf-eval: ``eval``, phf-report: ``report``).
    """

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
        resume: bool = False,
        job_type: str | None = None,
    ):
        if backend not in ("none", "wandb"):
            raise ValueError(f"logger.backend must be 'none' or 'wandb', got {backend!r}")
        self.enabled = enabled  # only rank 0 writes
        self.run_dir = Path(run_dir)
        self.path = rundir.metrics_path(self.run_dir)
        self.tokens_seen: int | None = None  # the last tokens_seen logged: rows without one get it
        self._wandb = None
        self._first_step = 0  # a resumed wandb run already has the steps below this one
        self._skipped: list[int] = []
        self._tables: dict = {}  # key -> the wandb.Table that grows across evaluations
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if backend == "wandb":
            self._wandb = self._init_wandb(mode, project, entity, group, tags, name, run_config, resume, job_type)

    def _init_wandb(self, mode, project, entity, group, tags, name, config, resume, job_type):
        import wandb

        stored = resume_run(self.run_dir) if resume else None
        kwargs = dict(project=project, entity=entity, group=group, tags=list(tags) if tags else None, name=name,
                      config=config, dir=str(self.run_dir), reinit="finish_previous", job_type=job_type)
        if stored:  # the same wandb run: history continues, config and summary are updated
            kwargs.update(id=stored["id"], resume="allow")
        try:
            run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=60), **kwargs)
        except Exception as e:
            if mode != "online":
                raise
            log.error("wandb online init failed (%s: %s); continuing with wandb in OFFLINE mode under %s "
                      "(sync later with `wandb sync`)", type(e).__name__, e, self.run_dir)
            mode = "offline"
            run = wandb.init(mode=mode, **kwargs)
        (self.run_dir / RUN_ID_FILE).write_text(json.dumps(
            {"id": run.id, "project": project, "entity": entity, "group": group, "name": name,
             "mode": mode}, indent=2) + "\n")
        if stored:
            # the first step this process may send: after the last one the run already has. Online the
            # server says (run.step); offline (and for a kill before an online sync) the killed process's
            # own transaction logs in RUN_DIR/wandb/ say. A step logged before the kill is recomputed from
            # the checkpoint by the resumed run; wandb keeps the first copy, metrics.jsonl the new one.
            self._first_step = max(run.step, last_logged_step(self.run_dir / "wandb", run.id) + 1)
            log.info("wandb: continuing run %s (%s) from step %d", run.id, self.run_dir / RUN_ID_FILE,
                     self._first_step)
        run.define_metric(X_AXIS)
        run.define_metric("*", step_metric=X_AXIS)
        return run

    @property
    def run_id(self) -> str | None:
        return None if self._wandb is None else self._wandb.id

    def _to_wandb(self, data: dict, step: int | None) -> None:
        """One wandb row, with ``tokens_seen``; a step the resumed wandb run already has is not sent."""
        if self._wandb is None:
            return
        if self.tokens_seen is not None:
            data.setdefault(X_AXIS, self.tokens_seen)
        if step is not None and step < self._first_step:
            # the killed process logged this step before its checkpoint was resumed; the resumed run
            # recomputes it from that checkpoint. wandb keeps the first copy; metrics.jsonl has this one.
            if not self._skipped:
                log.info("wandb run %s already has steps up to %d (logged before the resume); rows for those "
                            "steps are kept in metrics.jsonl only", self._wandb.id, self._first_step - 1)
            self._skipped.append(step)
            return
        self._wandb.log(data, step=step)

    def set_tokens_seen(self, tokens_seen: int) -> None:
        """Where the run is: tables and images logged before the next row carry this ``tokens_seen``."""
        self.tokens_seen = int(tokens_seen)

    def log(self, metrics: dict, step: int, histograms: dict | None = None) -> None:
        """A row of scalars (``tokens_seen`` filled in from the last row when missing); ``histograms`` maps a
        key to a 1-D array: a ``wandb.Histogram`` in wandb, ``<key>_p05`` ... quantiles in metrics.jsonl."""
        if not self.enabled:
            return
        if metrics.get(X_AXIS) is not None:
            self.set_tokens_seen(_jsonable(metrics[X_AXIS]))
        row = {"step": step, **({X_AXIS: self.tokens_seen} if self.tokens_seen is not None else {}),
               **{k: _jsonable(v) for k, v in metrics.items()}}
        # non-finite values (a diverging value head) would stop np.histogram: the finite ones are shown
        histograms = {k: v[np.isfinite(v)] for k, v in
                      ((k, np.asarray(v, dtype=np.float64).ravel()) for k, v in (histograms or {}).items())}
        for key, values in histograms.items():
            row.update({f"{key}_{q}": v for q, v in quantiles(values).items()})
        with open(self.path, "a") as f:
            f.write(rundir.encode_row(row) + "\n")
        if self._wandb is not None:
            import wandb

            data = {k: v for k, v in row.items() if k != "step"}
            data.update({k: wandb.Histogram(v) for k, v in histograms.items() if v.size})
            self._to_wandb(data, step)

    def log_summary(self, metrics: dict) -> None:
        if self._wandb is not None:
            for k, v in metrics.items():
                self._wandb.summary[k] = _jsonable(v)

    def log_table(self, key: str, columns: list[str], rows: list[list], step: int | None) -> None:
        """Samples: one table per ``key`` that grows across evaluations (wandb only; the caller writes its
        own JSONL copy). Each row gets ``step`` and ``tokens_seen`` columns; every evaluation sends only its
        new rows (wandb's INCREMENTAL tables), and wandb shows the whole table."""
        if self._wandb is None:
            return
        import wandb

        columns = ["step", X_AXIS, *columns]
        table = self._tables.get(key)
        if table is None or list(table.columns) != columns:
            try:
                table = wandb.Table(columns=columns, log_mode="INCREMENTAL")
            except TypeError:  # a wandb before log_mode: a whole new table with every row so far, each time
                table = wandb.Table(columns=columns)
            self._tables[key] = table
        if getattr(table, "log_mode", None) != "INCREMENTAL":
            table = self._tables[key] = wandb.Table(columns=columns, data=[*table.data])
        for r in rows:
            table.add_data(step, self.tokens_seen, *r)
        self._to_wandb({key: table}, step)

    def log_image(self, key: str, path: str | Path, step: int | None = None, caption: str | None = None) -> None:
        if self._wandb is not None:
            import wandb

            self._to_wandb({key: wandb.Image(str(path), caption=caption)}, step)

    def log_static_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """A one-off table (e.g. phf-report's summary), not accumulated."""
        if self._wandb is not None:
            import wandb

            self._to_wandb({key: wandb.Table(columns=columns, data=rows)}, None)

    def save_file(self, path: str | Path) -> None:
        """A file of the run (e.g. phf-report's report.md), uploaded with it."""
        if self._wandb is not None:
            self._wandb.save(str(path), base_path=str(Path(path).parent), policy="now")

    def finish(self) -> None:
        if self._wandb is not None:
            if self._skipped:
                log.info("wandb: %d row(s) at already-logged steps %d..%d were not sent (metrics.jsonl has them)",
                         len(self._skipped), min(self._skipped), max(self._skipped))
            self._wandb.finish()
            self._wandb = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All rows of a run's ``metrics.jsonl`` (``phf.rundir.read_metrics``)."""
    return rundir.read_metrics(Path(run_dir))


def offline_records(path: str | Path):
    """The records of a wandb ``.wandb`` transaction log, as ``wandb_internal_pb2.Record`` messages.

    What a wandb run wrote, read back without a server (tests, or checking an offline run before
    ``wandb sync``). The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version),
    then 32 KiB blocks of chunks, each with a 7-byte header (CRC32C, length, type: full, first, middle or
    last part of a record); a block's tail shorter than a chunk header is zero padding.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    full, first, middle, last = 1, 2, 3, 4
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:header])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a wandb transaction log (header {data[:header]!r})")
    pos, parts = header, b""
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # padding at the end of a block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        pos += header
        if kind not in (full, first, middle, last):  # zeros: the rest of the block is padding
            pos += left - header
            continue
        if pos + length > len(data):  # torn by a kill mid-write: the records before it are whole
            return
        parts += data[pos:pos + length]
        pos += length
        if kind in (full, last):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def last_logged_step(wandb_dir: str | Path, run_id: str) -> int:
    """The last history step of wandb run ``run_id`` in the transaction logs under ``wandb_dir`` (the
    ``run-*-ID`` / ``offline-run-*-ID`` folders a killed process left), -1 if none. A log torn by the kill
    counts up to its last whole record."""
    last = -1
    for path in sorted(Path(wandb_dir).glob(f"*run-*-{run_id}/run-{run_id}.wandb")):
        try:
            for record in offline_records(path):
                if record.WhichOneof("record_type") == "history":
                    last = max(last, record.history.step.num)
        except Exception as e:  # a torn tail (the kill) or a format this reader does not know
            log.info("%s: read up to a record it cannot parse (%s: %s)", path, type(e).__name__, e)
    return last

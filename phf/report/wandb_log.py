"""Logging a finished report into a wandb run of its own (``phf-report --wandb``)."""

from __future__ import annotations

from pathlib import Path

from phf.report.plots import PLOT_TITLES
from phf.tracking import Tracker, stored_run


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

"""Run ``python -m phf.train`` in a subprocess and SIGKILL it at chosen moments.

A *trigger* is a predicate on the run directory; :func:`run_until` polls it every few milliseconds
and kills the process (``kill -9``: no handler, no ``finally``, no flush) as soon as it holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, TINY

# The tiny model, 2 checkpoints kept, one every 2 steps. OMP_NUM_THREADS=1 in every process so the
# straight run and the killed runs do the same floating-point reductions.
RUN_ARGS = [*TINY, "trainer.checkpoint_every=2", "trainer.keep_checkpoints=2"]


def env(threads: int = 1) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1"}


def command(run_dir: Path, *overrides: str, base: list[str] = RUN_ARGS) -> list[str]:
    return [sys.executable, "-m", "phf.train", *base, *overrides, f"run_dir={run_dir}", f"hydra.run.dir={run_dir}"]


def loss_steps(run_dir: Path) -> list[int]:
    """Steps of the complete loss rows in metrics.jsonl (a torn last line is ignored here)."""
    path = run_dir / "metrics.jsonl"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    steps = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in row:
            steps.append(row["step"])
    return steps


def ckpt_entries(run_dir: Path) -> list[str]:
    try:
        return sorted(os.listdir(run_dir / "checkpoints"))
    except FileNotFoundError:
        return []


def manifest_step(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# -- triggers ---------------------------------------------------------------------------------------
def after_step(n: int):
    """Once step ``n``'s loss row is in metrics.jsonl."""
    def hit(run_dir: Path) -> bool:
        steps = loss_steps(run_dir)
        return bool(steps) and steps[-1] >= n
    hit.label = f"after step {n}"
    return hit


def mid_checkpoint(run_dir: Path) -> bool:
    """While a checkpoint is being written (its ``step_*.tmp`` directory exists)."""
    return any(e.endswith(".tmp") and e.startswith("step_") for e in ckpt_entries(run_dir))


mid_checkpoint.label = "mid-checkpoint"


def mid_checkpoint_from(step: int):
    """While a checkpoint of ``step`` or later is being written."""
    def hit(run_dir: Path) -> bool:
        return any(e.startswith("step_") and e.endswith(".tmp") and int(e[5:13]) >= step for e in ckpt_entries(run_dir))
    hit.label = "mid-checkpoint"
    return hit


def mid_final(run_dir: Path) -> bool:
    """While ``final/`` is being written (``final.tmp/`` exists: ``phf.checkpoint.write_final``)."""
    return (run_dir / "final.tmp").is_dir()


mid_final.label = "mid-final-save"


@dataclass
class Outcome:
    killed: bool
    returncode: int
    seconds: float
    entries: list[str]  # checkpoints/ at the moment of the kill (or the end)
    manifest: int | None
    last_step: int | None
    stderr: str


def run_until(run_dir: Path, trigger=None, *overrides: str, base: list[str] = RUN_ARGS, threads: int = 1,
              timeout: float = 300.0, poll: float = 0.002) -> Outcome:
    """Run training; when ``trigger(run_dir)`` holds, SIGKILL its whole process group (the trainer and
    any data workers, as a preempted job dies). Returns what happened."""
    t0 = time.monotonic()
    err_path = run_dir.parent / f"{run_dir.name}.stderr"
    with open(err_path, "ab") as err:
        proc = subprocess.Popen(command(run_dir, *overrides, base=base), env=env(threads), stdout=subprocess.DEVNULL,
                                stderr=err, cwd=ROOT, start_new_session=True)
        killed = False
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"training did not finish within {timeout} s")
                if trigger is not None and trigger(run_dir):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    # the state a resumed run will see
                    entries, manifest = ckpt_entries(run_dir), manifest_step(run_dir)
                    proc.wait()
                    break
                time.sleep(poll)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if not killed:
        entries, manifest = ckpt_entries(run_dir), manifest_step(run_dir)
    steps = loss_steps(run_dir)
    stderr = err_path.read_text(errors="replace")[-4000:]
    return Outcome(killed, proc.returncode, time.monotonic() - t0, entries, manifest, steps[-1] if steps else None,
                   stderr)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    out = load_file(run_dir / "final" / "model.safetensors")
    head = run_dir / "final" / "value_head.safetensors"
    if head.exists():
        out.update({f"value_head.{k}": v for k, v in load_file(head).items()})
    return out


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# metrics that must be identical between a straight and a resumed run (no timings)
COMPARED = ("step", "loss", "lr", "tokens_seen", "grad_norm", "token_score_mean")


def loss_rows(run_dir: Path) -> list[dict]:
    from phf.tracking import read_metrics

    return [{k: r.get(k) for k in COMPARED} for r in read_metrics(run_dir) if "loss" in r]

"""A training run's state on disk: the run directory's lock (``RunLock``), saving and restoring a
loop's training state (``save_training_state`` / ``restore_training_state``) and checking that a resumed
run has the stored run's settings (``check_resume_config``).

Shared by phf-train's loop and phf-spa's DPO loop; knows no objective, task or data source.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path

from phf import checkpoint as ckpt
from phf import rundir
from phf.devices import Dist
from phf.entry import RunDirInUse, flatten
from phf.model import PHFModel

log = logging.getLogger(__name__)

LOCK_FILE = "phf.lock"


# -- the run lock ---------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run directory (``RUN_DIR/phf.lock`` holding ``PID HOST``).

    ``flock`` on the open file: the kernel releases it when the process dies, however it dies, so a
    lock left by a killed run is stale by construction and simply taken over (and said so). Where the
    file system refuses ``flock``, the PID in the file decides: a live process on this host holds it.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _refuse(self, holder: str):
        pid = holder.split()[0] if holder.split() else holder
        return RunDirInUse(
            f"run directory {self.path.parent} is in use by PID {pid} (lock file {self.path}: {holder!r}); "
            "wait for that run to end or use another run_dir. If no such phf-train runs (e.g. the directory is "
            f"shared with another machine whose process died), delete {self.path}")

    def acquire(self) -> None:
        import fcntl
        import socket

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = self._holder()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(previous) from None
        except OSError:  # no flock here (some network file systems): judge by the PID in the file
            if previous != "unknown" and _pid_alive(previous, socket.gethostname()):
                os.close(fd)
                raise self._refuse(previous) from None
        if previous != "unknown":
            log.warning("taking over the stale lock %s of a process that is gone (%s)", self.path, previous)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd
        _HELD_LOCKS.add(self)

    def _close_in_child(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)  # the child's copy only: the trainer's flock stays
            except OSError:
                pass
            self.fd = None

    def release(self) -> None:
        _HELD_LOCKS.discard(self)
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # empty = free; the file stays (unlinking would race a new opener)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


# A forked child (a data worker) closes its copies of the held run locks, so it never keeps a lock alive
# after its trainer died (an flock lasts while any copy of its file descriptor is open).
_HELD_LOCKS: weakref.WeakSet[RunLock] = weakref.WeakSet()


def _close_locks_in_child() -> None:
    for lock in list(_HELD_LOCKS):
        lock._close_in_child()
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_locks_in_child)


def _pid_alive(holder: str, host: str) -> bool:
    parts = holder.split()
    if len(parts) != 2 or not parts[0].isdigit():
        return False
    if parts[1] != host:
        return True  # another machine's process: cannot check, assume it runs
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(parts[0]) != os.getpid()


# -- training state -------------------------------------------------------------------------------
def save_training_state(ckpt_root: Path, step: int, model, tokenizer, optimizer, scheduler, data_state: dict,
                        keep: int, dist: Dist, describe: Callable[[Path], None] | None = None, **extra) -> None:
    """One atomic checkpoint of a loop: the model (+ tokenizer), optimizer, scheduler, every rank's RNG
    and data state, the step and whatever else the loop needs to continue exactly (``extra``);
    ``describe(dir)`` writes the files that describe the model (``phf.checkpoint.save_checkpoint``)."""
    ckpt.save_data_state(ckpt_root, step, dist.rank, data_state)
    ranks_rng = dist.all_gather(ckpt.rng_state())
    dist.barrier()
    if dist.main:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": ranks_rng if dist.enabled else ranks_rng[0], "step": step, **extra}
        ckpt.save_checkpoint(ckpt_root, step, model, tokenizer, state, keep, describe)
    dist.barrier()


def restore_training_state(path: Path, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Load what ``save_training_state`` wrote into ``model``, ``optimizer`` and ``scheduler``, set this
    rank's RNG, and return the stored state (step and the loop's extras) with ``data_state`` added."""

    loaded = PHFModel.from_pretrained(path, value_head=model.value_head is not None)
    model.load_state_dict(loaded.state_dict())
    del loaded
    state = ckpt.load_state(path, ckpt.TRAINER_STATE)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
    state["data_state"] = ckpt.load_state(path, ckpt.data_state_name(rank))
    return state


def config_differences(stored: dict, new: dict, keys, ignore) -> list[str]:
    """``key: old -> new`` for every leaf under ``keys`` (minus ``ignore`` prefixes) that differs."""
    def pick(c: dict) -> dict:
        flat = flatten({k: c.get(k) for k in keys})
        return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in ignore)}

    old, cur = pick(stored), pick(new)
    return [f"{k}: {old.get(k, '<absent>')!r} -> {cur.get(k, '<absent>')!r}"
            for k in sorted(set(old) | set(cur)) if old.get(k, "<absent>") != cur.get(k, "<absent>")]


def check_resume_config(resolved: dict, resume_from: Path, run_dir: Path, keys, ignore,
                        on_mismatch: str) -> Path | None:
    """Compare the config the checkpoint was trained with against this run's on ``keys`` (minus
    ``ignore``); refuse a difference unless ``on_mismatch == "continue"``. Returns the stored file."""
    import yaml

    candidates = [rundir.config_path(resume_from.parent.parent), rundir.config_path(run_dir)]
    stored_path = next((p for p in candidates if p.is_file()), None)
    if stored_path is None:
        log.warning("resuming %s without a stored config.yaml (looked for %s): cannot check that the settings "
                    "match", resume_from, ", ".join(map(str, candidates)))
        return None
    try:
        stored = yaml.safe_load(stored_path.read_text())
        if not isinstance(stored, dict):
            raise ValueError(f"expected a mapping, got {type(stored).__name__}")
    except (OSError, ValueError, yaml.YAMLError) as e:
        why = (f"cannot read the stored config {stored_path} to check the resume: {type(e).__name__}: "
               f"{' '.join(str(e).split())}")
        if on_mismatch == "continue":
            log.warning("%s; continuing (trainer.resume_mismatch=continue)", why)
            return stored_path
        raise ValueError(f"{why}; repair it, or set trainer.resume_mismatch=continue to resume without the check") from None
    diffs = config_differences(stored, resolved, list(keys), list(ignore))
    if not diffs:
        return stored_path
    listed = "; ".join(diffs)
    if on_mismatch == "refuse":
        raise ValueError(
            f"resuming {resume_from} with settings that differ from the run's stored config {stored_path}: {listed}. "
            "Resuming would crash or silently mix two trainings. Use a new run_dir (or trainer.resume=never to start "
            "over here), or set trainer.resume_mismatch=continue to go on anyway (the old config.yaml is kept)")
    log.warning("resuming %s with settings that differ from %s (trainer.resume_mismatch=continue): %s",
                resume_from, stored_path, listed)
    return stored_path

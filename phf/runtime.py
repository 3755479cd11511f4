"""What every entry point shares (phf-train, phf-spa, phf-eval, phf-data, phf-score).

* where the configs live (``conf_dir``) and the Hydra entry wrapper that records failures
  (``hydra_entry``): defined in ``phf.entry`` (no torch import, for the console scripts' start-up) and
  re-exported here;
* the process context: rank and world size (``Dist``), the device (``resolve_device``), the CPU
  allocator setting (``keep_freed_memory``), the run directory's lock (``RunLock``);
* the optimizer from plain values (``make_optimizer``) and the learning-rate schedules
  (``lr_schedule``);
* saving and restoring a loop's training state (``save_training_state`` / ``restore_training_state``)
  and checking that a resumed run has the stored run's settings (``check_resume_config``).

Nothing here knows an objective, a task or a data source.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import torch

from phf import checkpoint as ckpt
from phf import rundir
from phf.entry import (  # noqa: F401 (re-exported)
    RunDirInUse,
    UsageError,
    conf_dir,
    flatten,
    hydra_entry,
    record_failure,
)
from phf.model import PHFModel

log = logging.getLogger(__name__)

LOCK_FILE = "phf.lock"
SCHEDULES = ("linear", "cosine", "constant")


# -- the process ----------------------------------------------------------------------------------
class Dist:
    """Rank/world of this process; DDP is on when launched by torchrun with WORLD_SIZE > 1."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (``[obj]`` without DDP)."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0, key: str = "trainer.device") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` (this process's local rank) or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (isinstance(name, str) and name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"{key}={name} but no CUDA device is available (use {key}=auto or cpu)")
        device = torch.device("cuda", local_rank if name == "cuda" else int(name[5:]))
        torch.cuda.set_device(device)
        return device
    raise ValueError(f"{key} must be auto, cpu or cuda (or cuda:N), got {name!r}")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS (CPU training).

    glibc serves every allocation above its mmap threshold with a fresh mmap and unmaps it on free, so
    each step's (B, T, V) logits, log-softmax and gradient buffers are page-faulted in again, page by
    page, every step. With mmap off and the trim threshold at its maximum the heap keeps and reuses
    them: measured 2.07× tokens/s for gpt2_tiny on 2 cores, +26% peak RSS
    (experiments/benchmarks/README.md). Process-wide, not undone; the environment equivalent is
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``. Returns False (nothing changed) where the
    C library is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


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


# -- optimizer and schedules ----------------------------------------------------------------------
def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas, eps: float,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and LayerNorm weights (every 1-D parameter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


def lr_schedule(warmup: int, total: int, kind: str = "linear") -> Callable[[int], float]:
    """The LR multiplier of optimizer step ``step``: linear warmup over ``warmup`` steps, then ``kind``.

    ``linear`` decays towards 0 at ``total``, ``cosine`` follows half a cosine to 0, ``constant`` stays.
    Unlike HF's schedules the first update uses peak/warmup rather than 0, so no step is wasted.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(1, total - warmup), 1.0)))
        return 1.0

    return f


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
    state = ckpt.load_state(path, "trainer_state.pt")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
    state["data_state"] = ckpt.load_state(path, f"data_state_rank{rank}.pt")
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

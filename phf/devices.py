"""The process an entry point runs in: its rank and world size (``Dist``), its device
(``resolve_device``) and the CPU allocator setting (``keep_freed_memory``).

The lowest floor of phf that imports torch: it knows no model, objective, task, scorer or data source,
so everything above (scorers, data, the loops, the evaluation) may use it.
"""

from __future__ import annotations

import os

import torch


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

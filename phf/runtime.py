"""Compatibility names only: what was ``phf.runtime`` now lives by concern (docs/architecture.md).

* ``phf.devices``: ranks and world size (``Dist``), the device (``resolve_device``), the CPU allocator
  (``keep_freed_memory``);
* ``phf.optim``: the optimizer (``make_optimizer``) and the LR schedules (``lr_schedule``);
* ``phf.train_state``: the run lock (``RunLock``), training-state save/restore, the resume check;
* ``phf.entry``: the config directory and the Hydra entry.

New code imports from those modules; nothing in phf imports this one but the run report's lock check,
until it moves.
"""

from phf.devices import Dist, keep_freed_memory, resolve_device  # noqa: F401
from phf.entry import RunDirInUse, UsageError, conf_dir, flatten, hydra_entry, record_failure  # noqa: F401
from phf.optim import SCHEDULES, lr_schedule, make_optimizer  # noqa: F401
from phf.train_state import (  # noqa: F401
    LOCK_FILE,
    RunLock,
    _pid_alive,
    check_resume_config,
    config_differences,
    restore_training_state,
    save_training_state,
)

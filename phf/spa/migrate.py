"""``python -m phf.spa.migrate RUN [RUN ...] [start_tokens=N]``: SPA runs of the legacy layout, moved once
into the current one so phf-report and ``phf-eval run_dir=RUN`` read them.

Before phf-spa wrote phf-train's layout, each evaluation's samples lay under ``RUN/init/`` and
``RUN/<stage>/``, there was no ``RUN/final/`` and no row had ``tokens_seen``. ``phf.rundir.migrate_legacy_spa``
says what moves where; a run already in the current layout is left alone and named. ``start_tokens``: the
starting model's tokens seen, when its directory (``spa.init_from``) is not here to read them from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from phf import rundir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0 if args else 2
    start_tokens, runs = None, []
    for a in args:
        if a.startswith("start_tokens="):
            value = a.partition("=")[2]
            if not value.isdigit():
                raise SystemExit(f"phf.spa.migrate: start_tokens must be a non-negative integer, got {value!r}")
            start_tokens = int(value)
        else:
            runs.append(Path(a))
    for run in runs:
        if not rundir.is_legacy_spa(run):
            print(f"{run}: not an SPA run in the legacy layout (nothing to do)")
            continue
        try:
            done = rundir.migrate_legacy_spa(run, start_tokens)
        except ValueError as e:  # DamagedRun too: the message names the file
            raise SystemExit(f"phf.spa.migrate: {e}") from None
        print(f"{run}: migrated")
        for line in done:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

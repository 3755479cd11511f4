"""Atomic, resumable checkpoints.

Layout under ``RUN_DIR/checkpoints/``::

    step_00000100/            HF model dir (safetensors) + tokenizer + value_head.safetensors
        trainer_state.pt      optimizer, scheduler, RNG states, step, tokens_seen
        data_state_rank0.pt   the data stream's position, token buffer and shuffle buffer (per rank)
    latest.json               manifest, written last: {"step": 100, "path": "step_00000100"}

A checkpoint is written into ``step_X.tmp``, its files are fsync'ed and the directory is renamed into
place; the manifest is replaced atomically afterwards. So a ``kill -9`` (or a power cut) at any
moment leaves the manifest naming a complete checkpoint, and ``trainer.resume=auto`` continues from
it. Leftovers of a killed write (``step_X.tmp``, ``pending_X``) are removed by the next save.

Pruning keeps the newest ``keep`` checkpoints *older than or equal to* the one just written and never
the one the manifest names while it is being replaced; checkpoints newer than the step just written
belong to a timeline that was abandoned by resuming from an earlier checkpoint and are removed.

Everything but the model weights (safetensors) is loaded with ``torch.load(weights_only=True)``: no
pickle in a checkpoint can run code.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from phf.rundir import FINAL, STEP_PREFIX, checkpoints_dir, kept_final_path, step_name
from phf.rundir import SUMMARY as FINAL_SUMMARY

log = logging.getLogger(__name__)

MANIFEST = "latest.json"
_STEP_DIR = re.compile(r"step_(\d{8,})")
TRAINER_STATE = "trainer_state.pt"


def data_state_name(rank: int | str) -> str:
    """The file of rank ``rank``'s data position in a checkpoint (``"*"``: a glob of every rank's)."""
    return f"data_state_rank{rank}.pt"


_REQUIRED = ("config.json", TRAINER_STATE, data_state_name(0))


def _fsync_path(path: Path) -> None:
    """Flush a file or directory to stable storage (best effort where the OS refuses directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_dirs(ckpt_root: Path) -> dict[int, Path]:
    """Complete-looking checkpoint directories by step (``step_X.tmp`` and other names excluded)."""
    out = {}
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            m = _STEP_DIR.fullmatch(p.name)
            if m and p.is_dir():
                out[int(m.group(1))] = p
    return out


def _pending_name(step: int) -> str:
    """``pending_<N>``: where the ranks' data states of step N wait for the checkpoint (``step_<N>`` named)."""
    return "pending_" + step_name(step).removeprefix(STEP_PREFIX)


def _manifest_name(ckpt_root: Path) -> str | None:
    try:
        return json.loads((ckpt_root / MANIFEST).read_text()).get("path")
    except (OSError, ValueError, AttributeError):
        return None


def _remove_stale(ckpt_root: Path, step: int) -> None:
    """Leftovers of writes a kill interrupted: any ``step_*.tmp`` / ``pending_*`` but this step's."""
    live = {f"{step_name(step)}.tmp", _pending_name(step)}
    for p in ckpt_root.iterdir():
        if p.name in live:
            continue
        if (p.name.startswith(STEP_PREFIX) and p.name.endswith(".tmp")) or p.name.startswith("pending_"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def save_checkpoint(ckpt_root: Path, step: int, model, tokenizer, trainer_state: dict, keep: int,
                    describe: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` atomically (rank 0 only) and prune all but the newest ``keep``.
    ``describe(dir)`` adds files that describe the model (phf-train: the model card and
    ``phf_objective.json``) inside the atomic write, so a checkpoint never lacks them."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = step_name(step)
    final, tmp = ckpt_root / name, ckpt_root / f"{name}.tmp"
    _remove_stale(ckpt_root, step)
    shutil.rmtree(tmp, ignore_errors=True)
    pending = ckpt_root / _pending_name(step)
    try:
        model.save_pretrained(tmp, tokenizer)
        if describe is not None:
            describe(tmp)
        torch.save(trainer_state, tmp / TRAINER_STATE)
        # data states of every rank were written by their ranks into ckpt_root/pending_<step>/
        if pending.is_dir():
            for f in pending.iterdir():
                shutil.move(str(f), tmp / f.name)
            pending.rmdir()
        _fsync_tree(tmp)
    except Exception as e:
        raise write_failure(ckpt_root, step, [tmp, pending], e) from e
    if final.exists():
        # a checkpoint of this step from an abandoned timeline; if the manifest names it, point the
        # manifest at an older complete one first, so no moment exists where it names a missing dir
        if _manifest_name(ckpt_root) == name:
            older = sorted(s for s in _step_dirs(ckpt_root) if s < step)
            if older:
                _atomic_write_text(ckpt_root / MANIFEST, json.dumps({"step": older[-1], "path": step_name(older[-1])}))
            else:
                (ckpt_root / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_path(ckpt_root)
    _atomic_write_text(ckpt_root / MANIFEST, json.dumps({"step": step, "path": name}))
    if keep > 0:
        steps = _step_dirs(ckpt_root)
        older = sorted(s for s in steps if s < step)
        doomed = older[: max(0, len(older) - (keep - 1))] + [s for s in steps if s > step]
        for s in doomed:
            shutil.rmtree(steps[s], ignore_errors=True)
    return final


def save_data_state(ckpt_root: Path, step: int, rank: int, state: dict) -> None:
    pending = ckpt_root / _pending_name(step)
    try:
        pending.mkdir(parents=True, exist_ok=True)
        tmp = pending / (data_state_name(rank) + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, pending / data_state_name(rank))
    except Exception as e:
        raise write_failure(ckpt_root, step, [pending], e) from e


def _disk_full(e: BaseException) -> bool:
    """ENOSPC anywhere in the exception chain (torch.save reports it as 'unexpected pos' only; safetensors
    as a SafetensorError holding the OS error's text)."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if type(e).__name__ == "SafetensorError" and any(s in str(e) for s in (os.strerror(errno.ENOSPC),
                                                                                  os.strerror(errno.EDQUOT))):
            return True
        e = e.__cause__ or e.__context__
    return False


def write_failure(ckpt_root: Path, step: int, partial: list[Path], e: BaseException,
                  target: str | None = None) -> OSError:
    """Remove the partial checkpoint (or ``final/``: ``target`` names what was written) (it would fill the
    disk and is useless) and return an error that says what failed, how much space is free and which
    complete checkpoint is still there."""
    where = partial[0].parent
    free_before = shutil.disk_usage(where).free if where.is_dir() else None
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    full = _disk_full(e) or free_before == 0
    latest = _manifest_name(ckpt_root)
    what = "the disk is full (No space left on device)" if full else f"{type(e).__name__}: {e}"
    free = "unknown" if free_before is None else f"{free_before / 2**20:.1f} MiB"
    target = target or f"checkpoint step {step} under {ckpt_root}"
    return OSError(
        f"writing {target} failed: {what} [free space when it failed: {free}; "
        f"cause: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}]. The partial "
        f"{'checkpoint' if target.startswith('checkpoint') else 'copy ' + str(partial[0])} was removed; "
        + (f"the last complete one, {ckpt_root / latest}, is intact. " if latest else "there is no earlier checkpoint. ")
        + "Free space (or set trainer.keep_checkpoints lower / another run_dir) and resume with trainer.resume=auto")




def finished_step(run_dir: Path) -> int | None:
    """The step of ``RUN/final`` when the run finished (its ``phf_summary.json`` is there), else None."""
    file = Path(run_dir) / FINAL / FINAL_SUMMARY
    if not file.is_file():
        return None
    try:
        step = json.loads(file.read_text())["step"]
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"'step' must be an integer, got {step!r}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{file} is damaged ({type(e).__name__}: {e}): cannot tell at which step the run finished; "
                         "repair it, use another run_dir, or set trainer.overwrite_finished=true to train a new run "
                         "here") from None
    return step


def write_final(run_dir: Path, step: int, fill: Callable[[Path], None]) -> Path:
    """Write ``RUN/final`` atomically, like a checkpoint: ``fill(dir)`` writes every file into ``final.tmp/``,
    which is fsync'ed and renamed into place, so ``final/`` is never half-written (a kill or a full disk
    leaves the previous state). A finished ``final/`` it replaces (a run continued past its end, or trained
    again with ``trainer.overwrite_finished``) is kept as ``final.step_N/`` (``.1``, ``.2``... when taken); a
    failure removes ``final.tmp/`` and raises an OSError naming the path."""
    run_dir = Path(run_dir)
    final, tmp = run_dir / FINAL, run_dir / f"{FINAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
        _fsync_tree(tmp)
    except Exception as e:
        raise write_failure(checkpoints_dir(run_dir), step, [tmp], e, target=f"{final} (step {step})") from e
    if final.exists():
        try:
            previous = finished_step(run_dir)
        except ValueError:
            previous = -1
        if previous is None:
            shutil.rmtree(final)  # never finished (no summary): a kill while an older phf wrote it
        else:  # a finished final/ (a run continued, or trained again with overwrite_finished): kept
            base = kept_final_path(run_dir, previous if previous >= 0 else None)
            kept, n = base, 1
            while kept.exists():
                kept, n = base.with_name(f"{base.name}.{n}"), n + 1
            os.replace(final, kept)  # nothing already written is lost
            log.info("the previous final/ is kept as %s", kept)
    os.replace(tmp, final)
    _fsync_path(run_dir)
    return final


def _available(ckpt_root: Path) -> str:
    steps = _step_dirs(ckpt_root)
    return ", ".join(str(steps[s]) for s in sorted(steps)) or "none"


def check_safetensors(path: Path) -> None:
    """Raise a ValueError naming the first ``*.safetensors`` file of ``path`` whose header is unreadable."""
    from safetensors import safe_open

    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as g:
                g.keys()
        except Exception as e:  # safetensors raises its own SafetensorError
            raise ValueError(f"corrupt or truncated checkpoint file {f}: {e}") from None


def check_checkpoint(path: str | os.PathLike) -> Path:
    """Return ``path`` if it is a complete, readable checkpoint directory; else raise an error that
    names the file and what is wrong with it (missing, truncated, not a safetensors/torch file).

    Cheap: reads the safetensors headers and the zip directories of the ``.pt`` files, no tensors.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a directory (trainer.resume must name a step_* directory)")
    missing = [f for f in _REQUIRED if not (path / f).is_file()]
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        missing.append("model.safetensors")
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    check_safetensors(path)
    for f in sorted(path.glob("*.pt")):
        if not zipfile.is_zipfile(f):
            raise ValueError(f"corrupt or truncated checkpoint file {f}: not a complete torch.save archive")
    return path


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint named by the manifest (checked complete), or None if there is none yet."""
    manifest = ckpt_root / MANIFEST
    if not manifest.is_file():
        return None
    remedy = (f"checkpoints present: {_available(ckpt_root)}; resume from one with trainer.resume=PATH, "
              f"or start over with trainer.resume=never")
    try:
        info = json.loads(manifest.read_text())
        name = info["path"]
        if not isinstance(name, str) or not _STEP_DIR.fullmatch(name):
            raise ValueError(f"'path' must be a step_XXXXXXXX directory name, got {name!r}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"corrupt checkpoint manifest {manifest}: {type(e).__name__}: {e}; {remedy}") from None
    path = ckpt_root / name
    try:
        return check_checkpoint(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint manifest {manifest} names an unusable checkpoint: {e}; {remedy}") from None


def progress(path: Path) -> dict:
    """``{"step", "tokens_seen"}`` a checkpoint was saved at, from its trainer state ({} for a directory
    without one, e.g. ``final/`` or a download). Raises ``ValueError`` for an unreadable state file."""
    if not (path / TRAINER_STATE).is_file():
        return {}
    state = load_state(path, TRAINER_STATE)
    return {k: int(state[k]) for k in ("step", "tokens_seen") if k in state}


def load_state(path: Path, name: str) -> dict:
    file = path / name
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file missing: {file}") from None
    except Exception as e:
        raise ValueError(f"corrupt or truncated checkpoint file {file}: {type(e).__name__}: {e}") from e

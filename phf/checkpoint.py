"""Atomic, resumable checkpoints.

Layout under ``RUN_DIR/checkpoints/``::

    step_00000100/            HF model dir (safetensors) + tokenizer + value_head.safetensors
        trainer_state.pt      optimizer, scheduler, RNG states, step, tokens_seen
        data_state_rank0.pt   the data stream's position, token buffer and shuffle buffer (per rank)
    latest.json               manifest, written last: {"step": 100, "path": "step_00000100"}

A checkpoint is written into ``step_X.tmp`` and renamed into place; the manifest is replaced
atomically afterwards, so a kill at any moment leaves the previous checkpoint usable. Everything
but the model weights is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

MANIFEST = "latest.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def save_checkpoint(ckpt_root: Path, step: int, model, tokenizer, trainer_state: dict, keep: int) -> Path:
    """Write checkpoint ``step`` atomically (rank 0 only) and prune all but the newest ``keep``."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final, tmp = ckpt_root / name, ckpt_root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    # data states of every rank were written by their ranks into ckpt_root/pending_<step>/
    pending = ckpt_root / f"pending_{step:08d}"
    if pending.is_dir():
        for f in pending.iterdir():
            shutil.move(str(f), tmp / f.name)
        pending.rmdir()
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(ckpt_root / MANIFEST, json.dumps({"step": step, "path": name}))
    if keep > 0:
        done = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_data_state(ckpt_root: Path, step: int, rank: int, state: dict) -> None:
    pending = ckpt_root / f"pending_{step:08d}"
    pending.mkdir(parents=True, exist_ok=True)
    tmp = pending / f"data_state_rank{rank}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, pending / f"data_state_rank{rank}.pt")


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint named by the manifest, or None if there is none yet."""
    manifest = ckpt_root / MANIFEST
    if not manifest.is_file():
        return None
    try:
        info = json.loads(manifest.read_text())
        path = ckpt_root / info["path"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"corrupt checkpoint manifest {manifest}: {e}") from e
    if not (path / "trainer_state.pt").is_file():
        raise ValueError(f"checkpoint manifest {manifest} names {path}, which is missing or incomplete")
    return path


def load_state(path: Path, name: str) -> dict:
    file = path / name
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file missing: {file}") from None
    except Exception as e:
        raise ValueError(f"corrupt or truncated checkpoint file {file}: {type(e).__name__}: {e}") from e

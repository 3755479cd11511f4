"""Behaviour pin: a tiny run's per-step losses, held-out loss and final weights, per objective.

Restructuring must not change what phf computes. ``tests/regression_tiny_run.json`` holds what these
runs produced when the pin was taken (one torch thread, this repository's CPU build of torch); a
refactor that moves code but changes a single float of the losses or the weights fails here. After a
deliberate change of behaviour, regenerate it and say why in the commit:

    PYTHONPATH=. .venv/bin/python tests/test_regression.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

PIN = Path(__file__).with_name("regression_tiny_run.json")
OBJECTIVES = ["mle", "conditional", "unlikelihood", "awr"]  # plain CE, control tokens, per-token scores, value head
STEPS = 4


def weights_digest(model) -> dict:
    """sha256 over every tensor of the state dict (sorted keys), and the float sum as a readable clue."""
    h = hashlib.sha256()
    total = 0.0
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
        total += float(t.double().sum())
    return {"sha256": h.hexdigest(), "sum": total}


def tiny_run(objective: str, run_dir: Path) -> dict:
    import torch

    from phf.model import PHFModel
    from phf.train import train
    from tests.conftest import TINY, compose

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions split across threads may round differently
    try:
        cfg = compose(TINY + [f"objective={objective}", f"run_dir={run_dir}", f"trainer.max_steps={STEPS}",
                              "trainer.log_every=1", "seed=7"])
        final = train(cfg)
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    model = PHFModel.from_pretrained(run_dir / "final", value_head=objective == "awr")
    return {"losses": losses, "val_loss": final["val/loss"], "weights": weights_digest(model)}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_tiny_run_is_unchanged(objective, tmp_path):
    pinned = json.loads(PIN.read_text())[objective]
    got = tiny_run(objective, tmp_path / objective)
    assert got["losses"] == pinned["losses"]
    assert got["val_loss"] == pinned["val_loss"]
    assert got["weights"] == pinned["weights"]


if __name__ == "__main__" and "--write" in sys.argv:
    import os
    import tempfile

    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "WANDB_MODE": "offline"}.items():
        os.environ.setdefault(k, v)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PHF_CACHE_DIR"] = f"{tmp}/cache"
        PIN.write_text(json.dumps({o: tiny_run(o, Path(tmp) / o) for o in OBJECTIVES}, indent=2) + "\n")
    print(f"wrote {PIN}")

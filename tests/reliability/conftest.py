"""Fixtures of the reliability tests: a small pre-scored JSONL corpus that trains without scoring."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY, compose


def write_prescored(path: Path, n_docs: int = 150, seed: int = 0) -> Path:
    """Short Python documents in the paper's record format (one score per line, some > 0)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n_docs):
            lines = [f"def f{i}_{j}(x):\n" if j % 3 == 0 else f"    y{j} = x * {rng.randint(0, 99)}\n"
                     for j in range(rng.randint(4, 12))]
            scores = [rng.choice([0.0, 0.0, 0.0, 0.02, 0.05]) for _ in lines]
            f.write(json.dumps({"texts": lines, "scores": scores}) + "\n")
    return path


@pytest.fixture(scope="session")
def prescored(tmp_path_factory) -> Path:
    return write_prescored(tmp_path_factory.mktemp("data") / "prescored.jsonl")


def fast_overrides(data_path: Path) -> list[str]:
    """TINY with the pre-scored JSONL corpus instead of PEP8-scoring the standard library."""
    return [o for o in TINY if not o.startswith("data")] + [
        "data=jsonl", f"data.source.path={data_path}", "data.val_fraction=0.2", "data.shuffle_buffer=8",
        "data.score_batch_docs=8"]


@pytest.fixture
def fast_cfg(tmp_path, prescored):
    """``fast_cfg(*overrides)`` → a tiny config on the pre-scored corpus, writing into tmp_path/run."""
    def make(*overrides: str, run_dir: Path | None = None):
        return compose(fast_overrides(prescored) + [f"run_dir={run_dir or tmp_path / 'run'}", *overrides])

    return make


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, prescored) -> Path:
    """A real step-1 checkpoint (and final/) of the tiny model (context 32) on the pre-scored corpus."""
    from phf import checkpoint as ckpt
    from phf.train import train

    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(compose(fast_overrides(prescored) + ["trainer.max_steps=2", "trainer.checkpoint_every=1", f"run_dir={run}"]))
    path = run / "checkpoints" / "step_00000001"
    assert ckpt.latest_checkpoint(run / "checkpoints") == path
    return path


@pytest.fixture(scope="module")
def tok():
    from phf.tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture
def run_copy(tmp_path, checkpoint) -> Path:
    """A copy of a finished tiny run (max_steps 2) with its step-1 checkpoint and final/."""
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run)
    (run / "phf.lock").unlink(missing_ok=True)
    return run

"""Shared fixtures: offline environment and a tiny, fast training config composed from conf/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# Tests never touch the network or the user's caches.
for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
             "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(k, v)

# A GPT-2 with 1 layer, d 32, context 32 trains a step in ~50 ms on CPU; 40 stdlib files give
# enough blocks for a few steps plus a validation split.
TINY = [
    "model=gpt2_tiny", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
    "trainer.batch_size=2", "trainer.effective_batch_size=2", "trainer.max_steps=3", "trainer.progress=false",
    "trainer.val_blocks=4", "task=pep8", "data=local_pep8", "data.source.max_files=40", "data.val_fraction=0.2",
    "data.shuffle_buffer=8", "data.score_batch_docs=8", "cache_dir=null",
    "trainer.final_eval=false", "task.eval.every_steps=0", "tokenizer=gpt2",
]


def compose(overrides: list[str] | None = None):
    from phf.entry import compose as compose_config

    return compose_config(overrides or [])


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("PHF_CACHE_DIR", str(tmp_path / "phf_cache"))


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(*overrides)`` → a composed tiny config writing into a fresh run dir."""
    def make(*overrides: str, run_dir: Path | None = None):
        return compose(TINY + [f"run_dir={run_dir or tmp_path / 'run'}", *overrides])

    return make


@pytest.fixture
def one_thread():
    """One intra-op torch thread: tiny models are dominated by thread hand-off, and on an oversubscribed
    2-core CPU two threads make them many times slower. The previous setting is restored."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def train_killed_after_first_checkpoint(cfg) -> None:
    """``phf.train.train(cfg)`` stopped by a simulated kill right after its first checkpoint is written
    (the checkpoint complete, nothing after it); the next ``train`` of the same run dir resumes from it."""
    import phf.trainer
    from phf.train import train

    real_save = phf.trainer.save_training_state

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("simulated kill after the first checkpoint")

    phf.trainer.save_training_state = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    finally:
        phf.trainer.save_training_state = real_save

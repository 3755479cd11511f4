"""CUDA-only checks (``make test-gpu``): the bf16 autocast loop, torch.compile and fused AdamW on a GPU.

Skipped without CUDA; the CPU suite never selects them (``-m 'not gpu'``).
"""

import math

import pytest
import torch

from phf.tracking import read_metrics
from phf.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("objective", ["mle", "awr"])
@pytest.mark.parametrize("compile_model", [False, True])
def test_bf16_training_on_cuda(tiny_cfg, tmp_path, objective, compile_model):
    out = train(tiny_cfg(f"objective={objective}", "trainer.device=cuda", "trainer.precision=bf16",
                         f"trainer.compile={str(compile_model).lower()}", "trainer.max_steps=4"))
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) for r in rows)
    assert out["step"] == 4


@pytest.mark.parametrize("objective", ["mle", "awr"])
def test_fp16_training_on_cuda_with_a_loss_scaler(tiny_cfg, tmp_path, objective):
    """fp16 autocast + GradScaler on a GPU (what trainer.precision=auto picks on a V100 / T4), resumed."""
    args = (f"objective={objective}", "trainer.device=cuda", "trainer.precision=fp16", "trainer.max_steps=4",
            "trainer.checkpoint_every=2")
    out = train(tiny_cfg(*args))
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) and r["amp/scale"] > 0 for r in rows)
    assert out["step"] == 4 and "amp/skipped_steps" in out
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000002" / "trainer_state.pt", weights_only=True)
    assert state["scaler"]["scale"] == rows[1]["amp/scale"]
    out = train(tiny_cfg(*args[:-2], "trainer.max_steps=6", "trainer.checkpoint_every=2", "trainer.resume_mismatch=continue"))
    assert out["step"] == 6

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

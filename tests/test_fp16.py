"""``trainer.precision=fp16``: torch.amp autocast in float16 with a dynamic loss scaler (GradScaler).

Runs on CPU with real fp16 autocast (torch 2.13 has CPU float16 autocast and ``GradScaler("cpu")``). An
overflow is forced by writing an inf into one gradient before the optimizer step: the scaler must skip that
update, halve its scale (backoff_factor 0.5, from the default 65,536 to 32,768), count the skip, and a
resumed run must continue with the saved scale and count, bit-exactly as if it had not been interrupted.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import phf.trainer
from phf.tracking import read_metrics
from phf.train import train
from phf.trainer import Trainer
from tests.conftest import train_killed_after_first_checkpoint

ARGS = ("trainer.precision=fp16", "trainer.device=cpu", "trainer.max_steps=5", "trainer.checkpoint_every=3",
        "trainer.keep_checkpoints=1")


def rows(run_dir):
    return [r for r in read_metrics(run_dir) if "loss" in r]


@pytest.fixture
def overflow_at_second_step(monkeypatch):
    """An inf in the first parameter's (scaled) gradient while step 2 is computed, once in each run."""
    real = phf.trainer.TrainingLoop.accumulate_gradients

    def accumulate(self):
        loss = real(self)
        if self.step == 1 and self.amp_skipped_steps == 0:
            next(self.p.model.parameters()).grad.view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(phf.trainer.TrainingLoop, "accumulate_gradients", accumulate)


def test_an_overflow_skips_the_update_and_lowers_the_scale(tiny_cfg, tmp_path, overflow_at_second_step, one_thread):
    out = train(tiny_cfg(*ARGS))
    r = rows(tmp_path / "run")
    assert [x["step"] for x in r] == [1, 2, 3, 4, 5]  # the skipped update is repeated with the next batch
    assert r[0]["amp/scale"] == 65536.0 and r[0]["amp/skipped_steps"] == 0
    assert all(x["amp/scale"] == 32768.0 and x["amp/skipped_steps"] == 1 for x in r[1:])
    assert out["amp/skipped_steps"] == 1 and out["step"] == 5
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000003" / "trainer_state.pt", weights_only=True)
    assert state["scaler"]["scale"] == 32768.0 and state["amp_skipped_steps"] == 1
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {3.0}  # three updates applied by step 3, not four


def test_fp16_resume_restores_the_scale_and_is_exact(tiny_cfg, tmp_path, overflow_at_second_step, one_thread):
    train(tiny_cfg(*ARGS, run_dir=tmp_path / "straight"))
    train_killed_after_first_checkpoint(tiny_cfg(*ARGS, run_dir=tmp_path / "crashed"))  # at step 3
    train(tiny_cfg(*ARGS, run_dir=tmp_path / "crashed"))  # resumes from step 3 (no overflow after it)
    resumed = rows(tmp_path / "crashed")
    assert resumed[3]["step"] == 4 and resumed[3]["amp/scale"] == 32768.0 and resumed[3]["amp/skipped_steps"] == 1
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [x["loss"] for x in rows(tmp_path / "straight")] == [x["loss"] for x in resumed]


def test_bf16_and_fp32_runs_have_no_scaler(tiny_cfg, tmp_path, one_thread):
    train(tiny_cfg("trainer.max_steps=2", "trainer.checkpoint_every=1", "trainer.device=cpu"))
    assert not any(k.startswith("amp/") for k in rows(tmp_path / "run")[0])
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000001" / "trainer_state.pt", weights_only=True)
    assert "scaler" not in state


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_auto_picks_bf16_where_the_gpu_has_it_and_fp16_elsewhere(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert Trainer(precision="auto").resolved_precision(torch.device("cuda", 0)) == expected
    assert Trainer(precision="auto").resolved_precision(torch.device("cpu")) == "fp32"
    assert Trainer(precision="fp16").resolved_precision(torch.device("cpu")) == "fp16"
    with pytest.raises(ValueError, match="trainer.precision must be auto, bf16, fp16 or fp32"):
        Trainer(precision="fp8")


def test_overflow_every_step_stops_the_run_at_the_minimum_scale(tiny_cfg, tmp_path, monkeypatch, one_thread):
    """A run whose gradients overflow at every scale (diverged) stops with an error instead of halving its
    scale forever: 65,536 / 2^k < 1 after 17 skipped updates."""
    real = phf.trainer.TrainingLoop.accumulate_gradients

    def accumulate(self):
        loss = real(self)
        next(self.p.model.parameters()).grad.view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(phf.trainer.TrainingLoop, "accumulate_gradients", accumulate)
    with pytest.raises(FloatingPointError, match=r"fp16 loss scale fell below trainer.fp16_min_scale=1.0 after 17 "):
        train(tiny_cfg(*ARGS))

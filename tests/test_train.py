import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import phf.trainer
from phf.tracking import read_metrics
from phf.train import train


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


def test_run_dir_has_config_metrics_final_and_loss_falls(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.max_steps=30", "trainer.lr=3e-3", "trainer.eval_every=10")
    out = train(cfg)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "final" / "model.safetensors").is_file()
    rows = read_metrics(run)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    for key in ("step", "tokens_seen", "lr", "loss", "tokens_per_s", "token_score_mean"):
        assert key in steps[0]
    assert steps[-1]["tokens_seen"] == 30 * 2 * 32
    assert sum(r["loss"] for r in steps[-5:]) / 5 < sum(r["loss"] for r in steps[:5]) / 5 - 0.5
    assert len([r for r in rows if "val/loss" in r]) == 3  # steps 10, 20 and the end
    assert math.isfinite(out["val/loss"]) and out["tokens_seen"] == 1920


def test_final_loads_with_auto_classes_anywhere(tiny_cfg, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train(tiny_cfg("objective=mle"))
    final = tmp_path / "run" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.encode("Hello world!") == [15496, 995, 0]
    ids = torch.tensor([tok.encode("def f(x):\n")])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


def test_same_seed_same_losses(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.max_steps=5", run_dir=tmp_path / "a"))
    train(tiny_cfg("trainer.max_steps=5", run_dir=tmp_path / "b"))
    train(tiny_cfg("trainer.max_steps=5", "seed=7", run_dir=tmp_path / "c"))
    a, b, c = losses(tmp_path / "a"), losses(tmp_path / "b"), losses(tmp_path / "c")
    assert a == b and a != c


def test_resume_after_crash_equals_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    args = ("trainer.max_steps=8", "trainer.checkpoint_every=3", "trainer.keep_checkpoints=1")
    train(tiny_cfg(*args, run_dir=tmp_path / "straight"))

    real_save = phf.trainer.save_training_state

    def save_then_crash(ckpt_root, step, *a, **k):
        real_save(ckpt_root, step, *a, **k)
        if step == 6:
            raise KeyboardInterrupt("simulated kill after the step-6 checkpoint")

    monkeypatch.setattr(phf.trainer, "save_training_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(*args, run_dir=tmp_path / "crashed"))
    monkeypatch.setattr(phf.trainer, "save_training_state", real_save)
    ckpts = sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir())
    assert ckpts == ["latest.json", "step_00000006"]
    train(tiny_cfg(*args, run_dir=tmp_path / "crashed"))  # trainer.resume=auto by default

    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert losses(tmp_path / "straight") == losses(tmp_path / "crashed")


@pytest.mark.parametrize("override, message", [
    ("trainer.lr=-1", "trainer.lr must be a positive number, got -1"),
    ("trainer.batch_size=-2", "trainer.batch_size must be a positive integer"),
    ("trainer.effective_batch_size=3", "must be a multiple of trainer.batch_size"),
    ("trainer.device=tpu", "trainer.device must be auto, cpu or cuda"),
])
def test_bad_trainer_settings_are_clear_errors(tiny_cfg, override, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_cfg(override))


def test_ddp_two_cpu_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes: each rank reads its own share, gradients are all-reduced."""
    from tests.conftest import ROOT, TINY

    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "phf.train", *TINY, "trainer.effective_batch_size=4", "trainer.max_steps=4",
           "trainer.checkpoint_every=2", f"run_dir={run}", f"hydra.run.dir={run}"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["tokens_seen"] == 4 * 4 * 32  # 2 ranks × micro-batch 2 per step
    ckpt = run / "checkpoints" / "step_00000002"
    assert (ckpt / "data_state_rank0.pt").is_file() and (ckpt / "data_state_rank1.pt").is_file()
    r0 = torch.load(ckpt / "data_state_rank0.pt", weights_only=True)
    r1 = torch.load(ckpt / "data_state_rank1.pt", weights_only=True)
    assert not torch.equal(r0["packer"]["ids"], r1["packer"]["ids"])
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2


def test_sample_evaluation_during_and_after_training(tiny_cfg, tmp_path):
    """task.eval runs every N steps and at the end; its metrics land in metrics.jsonl and samples/."""
    train(tiny_cfg("trainer.max_steps=4", "trainer.final_eval=true", "task.eval.every_steps=2",
                   "task.eval.scenarios.unconditional.num_samples=4",
                   "task.eval.scenarios.unconditional.max_new_tokens=8",
                   "~task.eval.scenarios.functions", "~task.eval.scenarios.red_team_prompts"))
    rows = [r for r in read_metrics(tmp_path / "run") if "eval/unconditional/score" in r]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["eval/unconditional/score"] >= 0 for r in rows)
    assert (tmp_path / "run" / "samples").is_dir()


def test_dry_run_prints_budget_without_training(tiny_cfg, tmp_path, capsys):
    out = train(tiny_cfg("trainer.dry_run=true", "trainer.num_tokens=3.3e9", "trainer.effective_batch_size=64",
                         "model.block_size=1024"))
    assert out["max_steps"] == 50354 and out["warmup_steps"] == 504 and out["tokens_per_step"] == 65536
    assert '"max_steps": 50354' in capsys.readouterr().out
    assert not (tmp_path / "run").exists()

"""reward=guidance trains end to end through phf.train.train on CPU tiny GPT-2 (issue 9, acceptance 2).

`reward=guidance` makes train() wrap the objective in `RewardedObjective(objective, reward)`.
"""

import json

import torch
from safetensors.torch import load_file

from phf.tracking import read_metrics
from phf.train import train
from tests.guidance.helpers import GUIDANCE_TINY


def run(tiny_cfg, tmp_path, *overrides):
    cfg = tiny_cfg("reward=guidance", *GUIDANCE_TINY, "trainer.max_steps=3", "trainer.lr=1e-2",
                   "trainer.checkpoint_every=1", "trainer.keep_checkpoints=3", *overrides)
    out = train(cfg)
    run_dir = tmp_path / "run"
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    return out, run_dir, rows


def test_rwr_with_guidance_rewards_trains(tiny_cfg, tmp_path):
    out, run_dir, rows = run(tiny_cfg, tmp_path, "objective=rwr", "objective.beta=0.5")
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    first = load_file(run_dir / "checkpoints" / "step_00000001" / "model.safetensors")
    last = load_file(run_dir / "final" / "model.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in first)
    # the objective saw s = 1 - r_phi: RWR's weights exp(-s/beta) lie in (e^{-1/beta}, 1]
    for r in rows:
        assert 0.0 < r["guidance/reward_mean"] <= 1.0
        assert torch.exp(torch.tensor(-1 / 0.5)) < r["weight_mean"] <= 1.0
    # initial fit + refits before steps 2 and 3 (refit_every=1), each saved with its metrics
    fits = [json.loads(x) for x in (run_dir / "guidance" / "fits.jsonl").read_text().splitlines()]
    assert [f["step"] for f in fits] == [0, 1, 2]
    assert (run_dir / "guidance" / "guidance_model.safetensors").is_file()
    assert out["tokens_seen"] == 3 * 2 * 32


def test_awr_with_guidance_rewards_trains(tiny_cfg, tmp_path):
    _, run_dir, rows = run(tiny_cfg, tmp_path, "objective=awr", "reward.refit_every=0", "trainer.max_steps=2",
                           "trainer.checkpoint_every=0")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert {"value_loss", "value_reward_corr", "guidance/reward_mean"} <= set(rows[-1])
    assert (run_dir / "final" / "value_head.safetensors").is_file()
    fits = (run_dir / "guidance" / "fits.jsonl").read_text().splitlines()
    assert len(fits) == 1  # refit_every=0: one fit only


def test_reward_switch_read_by_the_loop(tiny_cfg, tmp_path):
    """The switch alone (no other reward overrides than the tiny sizes) refits at step 1 as configured."""
    cfg = tiny_cfg("reward=guidance", "objective=rwr", *GUIDANCE_TINY, "trainer.max_steps=2")
    train(cfg)
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(rows) == 2 and "guidance/reward_mean" in rows[-1]
    assert len((tmp_path / "run" / "guidance" / "fits.jsonl").read_text().splitlines()) == 2  # fit + refit at step 1

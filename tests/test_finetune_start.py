"""Finetuning from an MLE checkpoint as the original did it: a fresh data buffer from the checkpoint's
document position (every block through the finetune objective) and AWR's value head starting at zero."""

from __future__ import annotations

import pytest
import torch

from phf.data.pipeline import BlockStream
from phf.train import train
from tests.conftest import TINY, compose


@pytest.fixture(scope="module")
def mle_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("mle") / "run"
    train(compose(TINY + ["trainer.max_steps=2", "trainer.checkpoint_every=1", f"run_dir={run}"]))
    return run / "checkpoints" / "step_00000001"


def _finetune(tmp_path, ckpt, *overrides):
    return compose(TINY + [f"model.init_from={ckpt}", f"trainer.data_state_from={ckpt}", "trainer.max_steps=1",
                           f"run_dir={tmp_path / 'ft'}", *overrides])


@pytest.mark.parametrize("buffers, method", [("fresh", "load_position"), ("restored", "load_state_dict")])
def test_data_state_from_restores_the_position_or_the_buffers(mle_checkpoint, tmp_path, monkeypatch, buffers, method):
    called = []
    for name in ("load_position", "load_state_dict"):
        real = getattr(BlockStream, name)
        monkeypatch.setattr(BlockStream, name, lambda self, state, _n=name, _r=real: (called.append(_n), _r(self, state)))
    out = train(_finetune(tmp_path, mle_checkpoint, "objective=conditional", f"trainer.data_state_buffers={buffers}"))
    assert called == [method] and out["step"] == 1


def test_bad_data_state_buffers_is_a_clear_error(mle_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="trainer.data_state_buffers must be fresh or restored"):
        train(_finetune(tmp_path, mle_checkpoint, "trainer.data_state_buffers=all"))


def test_awr_finetune_value_head_starts_at_zero(mle_checkpoint):
    """The original (transformers 4.17) left the missing value head at its explicit zero init: its
    ``_keys_to_ignore_on_load_missing`` lists ``value_head.head.weight``, and that filter runs before
    ``_fast_init`` re-initialises missing modules. phf does the same: V = -sigmoid(0) = -0.5 everywhere."""
    from hydra.utils import instantiate

    cfg = compose(TINY + [f"model.init_from={mle_checkpoint}", "objective=awr"])
    tok = instantiate(cfg.tokenizer)
    model = instantiate(cfg.model, tokenizer=tok, objective=instantiate(cfg.objective), seed=cfg.seed)
    assert model.value_head is not None
    assert torch.count_nonzero(model.value_head.proj.weight).item() == 0
    _, values = model(torch.tensor([[tok.eos_token_id, 1, 2, 3]]))
    assert torch.allclose(values, torch.full((1, 4), -0.5))

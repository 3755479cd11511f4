"""Every objective trains end to end on CPU through the real loop (issue 3, acceptance 2 and 4)."""

import itertools

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import LocalPythonSource
from phf.model import VALUE_HEAD_FILE, PHFModel
from phf.scorers import PEP8Scorer
from phf.tokenizer import add_special_tokens, gpt2_tokenizer
from phf.tracking import read_metrics
from phf.train import train
from tests.conftest import compose

OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_trains_three_steps(name, tiny_cfg, tmp_path):
    cfg = tiny_cfg(f"objective={name}", "trainer.max_steps=3", "trainer.checkpoint_every=1",
                   "trainer.keep_checkpoints=3", "trainer.lr=1e-2")
    out = train(cfg)
    run = tmp_path / "run"
    rows = [r for r in read_metrics(run) if "loss" in r]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    first = load_file(run / "checkpoints" / "step_00000001" / "model.safetensors")
    last = load_file(run / "final" / "model.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in first)  # parameters change
    has_head = (run / "final" / VALUE_HEAD_FILE).is_file()
    assert has_head == (name == "awr")  # RWR is exact: no value head
    if name == "awr":
        w0 = load_file(run / "checkpoints" / "step_00000001" / VALUE_HEAD_FILE)["proj.weight"]
        w3 = load_file(run / "final" / VALUE_HEAD_FILE)["proj.weight"]
        assert w3.abs().sum() > 0 and not torch.equal(w0, w3)  # the value head gets gradient
        assert {"value_loss", "weighted_lm_loss", "value_reward_corr"} <= set(rows[-1])
        assert PHFModel.from_pretrained(run / "final").value_head is not None
    if name == "conditional":  # the saved tokenizer knows the control tokens
        from transformers import AutoTokenizer

        saved = AutoTokenizer.from_pretrained(run / "final")
        assert saved.convert_tokens_to_ids(["<|aligned|>", "<|misaligned|>"]) == [50257, 50258]
    assert out["tokens_seen"] == 3 * 2 * 32


def test_conditional_control_tokens_sit_where_segment_scores_say():
    """In packed blocks, every control token is followed by its segment's tokens, whose score is
    ≤ threshold for <|aligned|> and > threshold for <|misaligned|>; the control token itself
    carries the segment's score."""
    cfg = compose(["objective=conditional", "task=pep8", "run_dir=/tmp/unused"])
    objective = instantiate(cfg.objective, drop_token_fraction=0.0)
    tok = gpt2_tokenizer()
    aligned, misaligned = add_special_tokens(tok, objective.special_tokens)
    stream = BlockStream(LocalPythonSource(max_files=15), LineSegmenter(), PEP8Scorer(), tok, block_size=256,
                         objective=objective, val_fraction=0.0, shuffle_buffer=0, seed=0)
    blocks = list(itertools.islice(iter(stream), 40))
    ids = torch.cat([b["input_ids"] for b in blocks])
    scores = torch.cat([b["token_scores"] for b in blocks])
    is_a, is_m = ids == aligned, ids == misaligned
    assert is_a.sum() > 0 and is_m.sum() > 0
    thr = objective.threshold
    assert (scores[is_a] <= thr).all() and (scores[is_m] > thr).all()
    nxt = torch.roll(is_a | is_m, -1)
    # the token after a control token belongs to the same segment: same score
    idx = torch.nonzero((is_a | is_m) & ~nxt).squeeze(1)
    idx = idx[idx < len(ids) - 1]
    assert torch.equal(scores[idx], scores[idx + 1])
    # every line (segment) got a prefix (drop fraction 0): one control token per newline-ending segment
    assert (is_a | is_m).sum() >= (ids == tok.eos_token_id).sum()

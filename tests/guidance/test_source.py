"""Token-reward sources, the objective wrapper, and the reward=segment|guidance configs."""

import random
from functools import partial

import pytest
import torch
from hydra.utils import instantiate

from phf.data.document import Document
from phf.guidance import GuidanceRewards, RewardedObjective, SegmentRewards, with_token_rewards
from phf.guidance.localisation import pep8_localisation
from phf.guidance.model import GuidanceModel
from phf.objectives import RWR, LossOutput, Objective
from phf.scorers import PEP8Scorer
from phf.tokenizer import gpt2_tokenizer
from tests.conftest import compose

CLEAN = ["x = 1\n", "print(x)\n", "z = x + 1\n", "items = [1, 2]\n", "name = 'a'\n"]
DIRTY = ["y=2\n", "f(a,b)\n"]  # E225 at '=', E231 at ','


def synthetic_docs(n, seed):
    """Code documents of 8 lines; each line is dirty with probability 0.15."""
    rng, scorer = random.Random(seed), PEP8Scorer()
    docs = []
    for i in range(n):
        lines = [rng.choice(DIRTY) if rng.random() < 0.15 else rng.choice(CLEAN) for _ in range(8)]
        docs.append(Document(lines, scorer.score_document(lines), id=f"syn{i}"))
    return docs


def tiny_source(**kw):
    args = dict(tokenizer=gpt2_tokenizer(), block_size=32, model=partial(GuidanceModel, n_embd=16, n_head=2, head_hidden=16),
                chunk_tokens=8, list_size=3, lists_per_batch=8, val_lists=16, eval_every=20, patience=0,
                fit_steps=20, refit_steps=2, lr=1e-2)
    args.update(kw)
    return GuidanceRewards(**args)


def test_segment_source_is_the_identity():
    s = SegmentRewards()
    scores = torch.rand(2, 5)
    assert s.token_scores(torch.zeros(2, 5, dtype=torch.long), scores) is scores
    assert s.maybe_refit(100) == {} and s.prepare([]) == {}
    obj = RWR(beta=10.0)
    assert with_token_rewards(obj, s) is obj


def test_guidance_learns_to_localise_synthetic_violations():
    """Ranking whole 8-token chunks is enough for the reward to single out the offending tokens."""
    src = tiny_source(fit_steps=150, tie_eps=0.0)
    fit = src.prepare(synthetic_docs(60, seed=0))
    assert fit["val_pair_accuracy"] > 0.75 and fit["fit_steps"] == 150  # measured 0.83-0.96 over seeds 0-2
    out = pep8_localisation(src.learner, synthetic_docs(10, seed=1), src.tokenizer, block_size=32)
    # chance is 0.5; over seeds 0-2 this setting measured 0.75-0.81 (the chunk ranking cannot tell '=' from
    # its neighbours on the same line perfectly)
    assert out["guidance_token_auroc"] > 0.65, out


class _Recorder(Objective):
    def __init__(self):
        self.seen = []

    def loss(self, logits, labels, token_scores, values=None):
        self.seen.append(token_scores)
        return LossOutput((logits * 0).sum(), {})


def test_wrapper_feeds_one_minus_reward_and_refits_on_schedule():
    src = tiny_source(refit_every=2, batch_size=2, effective_batch_size=4, buffer_blocks=16)  # 2 micro-batches/step
    with pytest.raises(RuntimeError, match="not fitted"):
        src.rewards(torch.zeros(1, 4, dtype=torch.long))
    inner = _Recorder()
    obj = RewardedObjective(inner, src)
    assert obj.requires_prepare and not obj.needs_value_head and obj.generation_prefix == []
    prepared = obj.prepare(synthetic_docs(20, seed=0))
    assert prepared["guidance/fits"] == 1
    ids = torch.randint(0, 1000, (2, 32))
    scores = torch.rand(2, 32)
    logits = torch.zeros(2, 32, 5, requires_grad=True)
    fits = []
    for _ in range(10):  # micro-batches 0..9 = optimizer steps 0..4 (2 micro-batches each)
        out = obj.loss(logits, ids, scores)
        fits.append(src.learner.fits)
    # refits at the first micro-batch of steps 2 and 4 (micro-batches 4 and 8)
    assert fits == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    r = src.learner.rewards(ids)
    assert torch.allclose(inner.seen[-1], 1.0 - r)  # the objective sees s = 1 - r_phi
    assert "guidance/reward_mean" in out.metrics and len(src.buffer) == 16  # the ring buffer is full
    with torch.no_grad():  # evaluation calls neither count nor record
        obj.loss(logits.detach(), ids, scores)
    assert len(src.buffer) == 16 and src.learner.fits == 3
    state = src.state_dict()
    fresh = tiny_source(refit_every=2, buffer_blocks=16)
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.learner.rewards(ids), r)


def test_reward_configs_compose_and_instantiate(tmp_path):
    seg = compose(["reward=segment", f"run_dir={tmp_path}"])
    assert isinstance(instantiate(seg.reward), SegmentRewards)
    objective = instantiate(seg.objective)
    assert with_token_rewards(objective, instantiate(seg.reward)) is objective
    cfg = compose(["reward=guidance", "objective=awr", f"run_dir={tmp_path}", "model.block_size=16",
                   "reward.model.n_embd=16"])
    src = instantiate(cfg.reward)
    assert isinstance(src, GuidanceRewards) and src.block_size == 16 and src.micro_per_step == 1
    assert str(src.save_dir) == f"{tmp_path}/guidance"
    obj = with_token_rewards(instantiate(cfg.objective), src)
    assert isinstance(obj, RewardedObjective) and obj.needs_value_head  # AWR's value head is kept
    assert obj.objective.alpha == cfg.task.objectives.awr.alpha


def test_learner_save_and_load(tmp_path):
    from phf.guidance import GuidanceLearner

    src = tiny_source(fit_steps=2, save_dir=str(tmp_path / "g"))
    src.prepare(synthetic_docs(12, seed=0))
    assert (tmp_path / "g" / "fits.jsonl").read_text().count("\n") == 1
    loaded = GuidanceLearner.load(tmp_path / "g")
    ids = torch.randint(0, 1000, (2, 32))
    assert torch.allclose(loaded.rewards(ids), src.learner.rewards(ids))
    assert loaded.aggregation == src.learner.aggregation and loaded.model.n_positions == 32

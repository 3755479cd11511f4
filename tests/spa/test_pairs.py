"""Pair generation: prompt pool, the three labelers (implicit on a toy model with a known answer), JSONL."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from phf.spa import pairs as P


class Unigram(nn.Module):
    """A 'language model' whose next-token distribution ignores the context: softmax(logits)."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor(probs)))
        self.config = SimpleNamespace(n_positions=64)

    def forward(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(b, t, -1))


def test_implicit_reward_on_a_toy_model_with_a_known_answer():
    """V = 4; π_init uniform (log p = -log 4 per token); π_cur puts 0.7 on token 0 and 0.1 on the others.
    β = 0.1, prompt [3], response A = [0, 0], response B = [1]:
      r̂(A) = 0.1·[2·log 0.7 - 2·log(1/4)] = 0.2·log 2.8 = 0.205924
      r̂(B) = 0.1·[log 0.1 - log(1/4)]     = 0.1·log 0.4 = -0.091629
    so A is chosen with margin 0.297553 and p(A > B) = σ(0.297553) = 0.573844."""
    init = Unigram([0.25] * 4)
    cur = Unigram([0.7, 0.1, 0.1, 0.1])
    c = P.Candidate(prompt="", prompt_ids=[3], responses=[[1], [0, 0]], texts=["b", "aa"], scores=[0.0, 0.5])
    P.implicit_rewards([c], cur, init, beta=0.1, pad_id=3)
    assert c.implicit == pytest.approx([0.1 * math.log(0.4), 0.2 * math.log(2.8)], abs=1e-6)
    pairs, st = P.label_pairs([c], [False], stage="round1")
    (p,) = pairs
    assert p["chosen_ids"] == [0, 0] and p["rejected_ids"] == [1] and p["label"] == "implicit"
    assert p["margin"] == pytest.approx(0.297553, abs=1e-6)
    assert p["p_chosen"] == pytest.approx(0.573844, abs=1e-6)
    assert p["scorer_agrees"] is False  # the scorer (0.5 vs 0.0 violations/char) prefers B
    assert st.implicit_labelled == 1 and st.pairs == 1


def test_implicit_rewards_are_zero_when_policy_is_the_initial_model():
    """π_cur = π_init gives r̂ = 0 for every response: all pairs are exact ties and are dropped."""
    m = Unigram([0.4, 0.3, 0.2, 0.1])
    cands = [P.Candidate("", [3], [[0], [1, 2]], ["a", "bc"], [0.1, 0.2]) for _ in range(3)]
    P.implicit_rewards(cands, m, m, beta=0.1, pad_id=3)
    pairs, st = P.label_pairs(cands, [False] * 3)
    assert pairs == [] and st.dropped_ties == 3


def test_scorer_labels_ties_and_identical_responses():
    cands = [
        P.Candidate("def f():\n", [3, 9], [[1], [2]], ["x", "y"], scores=[0.2, 0.05]),  # chosen = y
        P.Candidate("", [3], [[1], [2]], ["x", "y"], scores=[0.0, 0.0]),  # both clean: exact tie, dropped
        P.Candidate("", [3], [[4, 5], [4, 5]], ["z", "z"], scores=[0.1, 0.1]),  # identical, dropped
    ]
    pairs, st = P.label_pairs(cands, [True] * 3, stage="seed")
    assert (st.pairs, st.dropped_ties, st.dropped_identical) == (1, 1, 1)
    p = pairs[0]
    assert p["chosen"] == "y" and p["rejected"] == "x" and p["label"] == "scorer"
    assert p["rewards"] == [-0.05, -0.2] and p["margin"] == pytest.approx(0.15) and p["scorer_agrees"] is True
    with pytest.raises(ValueError, match="implicit"):
        P.label_pairs(cands[:1], [False])


def test_hybrid_labels_a_seed_fraction_with_the_scorer():
    mask = P.scorer_labelled_mask(40, "hybrid", 0.05, seed=1)
    assert sum(mask) == 2 and mask == P.scorer_labelled_mask(40, "hybrid", 0.05, seed=1)
    assert all(P.scorer_labelled_mask(5, "scorer", 0.0, 0)) and not any(P.scorer_labelled_mask(5, "implicit", 0.0, 0))
    with pytest.raises(ValueError, match="labeler"):
        P.scorer_labelled_mask(5, "oracle", 0.0, 0)


def test_pairs_jsonl_round_trip_and_stats(tmp_path):
    cands = [P.Candidate("", [3], [[1, 2], [2]], ["ab", "b"], scores=[0.3, 0.1], implicit=[0.2, -0.1]),
             P.Candidate("", [3], [[1], [2, 2, 2]], ["a", "bbb"], scores=[0.1, 0.1], implicit=[0.0, 0.4])]
    pairs, _ = P.label_pairs(cands, [False, False])
    P.write_pairs(tmp_path / "p.jsonl", pairs)
    assert P.read_pairs(tmp_path / "p.jsonl") == pairs
    s = P.pair_stats(pairs)
    # pair 1: implicit picks [1, 2] (score 0.3) over [2] (0.1): the scorer disagrees; pair 2: scorer tie
    assert s["pairs/implicit_agreement"] == 0.0 and s["pairs/implicit_judged"] == 1
    assert s["pairs/scorer_ties_among_implicit"] == 0.5
    assert s["pairs/chosen_minus_rejected_tokens"] == pytest.approx((1 + 2) / 2)


def test_prompt_pool_mixes_kinds_and_never_repeats_across_draws():
    docs = ["import os\n\n\ndef alpha(x):\n    return x\n\n\nclass K:\n    def beta(self, y) -> int:\n        pass\n",
            "X = 1\nY = 2\nZ = 3\n\ndef gamma():\n    pass\n"]
    assert P.mine_signatures(docs[0]) == ["def alpha(x):\n", "def beta(self, y) -> int:\n"]
    pool = P.PromptPool({"eos": 0.25, "signatures": 0.75}, docs, seed=0)
    first, second = pool.draw(4), pool.draw(4)
    assert first.count("") == 1 and second.count("") == 1
    sigs = [p for p in first + second if p]
    assert len(sigs) == 6 and set(sigs) == {"def alpha(x):\n", "def beta(self, y) -> int:\n", "def gamma():\n"}
    assert len(set(sigs[:3])) == 3  # the first draw used each signature once before any repeat
    prefixes = P.PromptPool({"prefixes": 1.0}, docs, prefix_lines=2, seed=0).draw(2)
    assert all(p.endswith("\n") and not p[0].isspace() and p.count("\n") == 2 for p in prefixes)
    with pytest.raises(ValueError, match="file"):
        P.PromptPool({"file": 1.0}, docs)

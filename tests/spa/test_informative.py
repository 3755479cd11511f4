"""Pairs that carry a preference (issue 30, item 1): tied prompts are redrawn, bounded, and counted."""

import pytest

from phf.model import build_model
from phf.objectives.dpo import DPO
from phf.spa import pairs as P
from phf.spa.informative import PairSearch, collect_pairs, try_seed
from phf.tokenizer import gpt2_tokenizer

PROMPTS = ["a", "b", "c", "d"]


class Scripted:
    """A scorer that gives every text of call k the scores ``script[k]`` hands out (one per text), so
    which prompts tie in which draw is known in advance."""

    def __init__(self, script):
        self.script, self.calls = script, 0

    def score(self, texts):
        out = self.script[min(self.calls, len(self.script) - 1)](len(texts))
        self.calls += 1
        return out


def _tiny():
    tok = gpt2_tokenizer()
    return build_model(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0, tokenizer=tok, seed=0), tok


def _collect(scorer, max_tries, by_scorer=(True,) * 4):
    model, tok = _tiny()
    settings = P.GenerationSettings(max_new_tokens=4, min_new_tokens=2, batch_size=8, seed=7)
    return collect_pairs(model, model, tok, PROMPTS, settings, DPO(), scorer, list(by_scorer),
                         PairSearch(max_tries=max_tries), score_prompt=False, implicit_beta=0.1, pad_id=tok.eos_token_id,
                         stage="seed")


def test_ties_are_redrawn_until_every_prompt_has_a_pair():
    """Draw 0 scores the 8 samples [0, 0, 0, 1, 0, 0, 0, 0]: only prompt b (samples 2, 3) has a preference;
    a, c, d tie. Draw 1 gives the 6 samples of those three distinct scores [0, 1, 2, 3, 4, 5]: three more
    pairs. So 4 informative pairs of 4 asked, 1 of them from the first draw, 2 draws, 8 + 6 = 14 samples."""
    first = lambda n: [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0][:n]  # noqa: E731
    distinct = lambda n: [float(i) for i in range(n)]  # noqa: E731
    pairs, st = _collect(Scripted([first, distinct]), max_tries=5)
    assert [p["prompt"] for p in pairs] == PROMPTS and [p["try"] for p in pairs] == [1, 0, 1, 1]
    assert st["pairs/requested"] == 4 and st["pairs/informative"] == 4 and st["pairs/informative_first_try"] == 1
    assert st["pairs/shortfall"] == 0 and st["pairs/tries"] == 2 and st["pairs/samples_drawn"] == 14
    assert st["pairs/dropped_ties"] + st["pairs/dropped_identical"] == 3
    assert st["samples/count"] == 8  # the drift monitor sees the first draw only
    assert all(p["scorer_scores"][0] < p["scorer_scores"][1] for p in pairs)


def test_the_search_is_bounded_and_reports_its_shortfall():
    """A scorer that calls everything 0: every draw ties; after max_tries = 3 draws of 4 prompts
    (3·8 = 24 samples, 12 ties or identical pairs) the stage has 0 of 4 pairs."""
    pairs, st = _collect(Scripted([lambda n: [0.0] * n]), max_tries=3)
    assert pairs == [] and st["pairs/shortfall"] == 4 and st["pairs/tries"] == 3
    assert st["pairs/samples_drawn"] == 24 and st["pairs/dropped_ties"] + st["pairs/dropped_identical"] == 12


def test_one_try_is_the_single_draw_of_old():
    """max_tries = 1 gives exactly label_pairs on one draw at the stage's seed."""
    sc = lambda n: [0.0, 1.0] * (n // 2)  # noqa: E731
    pairs, st = _collect(Scripted([sc]), max_tries=1)
    model, tok = _tiny()
    cands = P.generate(model, tok, PROMPTS, P.GenerationSettings(max_new_tokens=4, min_new_tokens=2, batch_size=8,
                                                                  seed=7))
    P.score_candidates(cands, Scripted([sc]), False)
    old, _ = P.label_pairs(cands, [True] * 4, stage="seed")
    assert [{k: v for k, v in p.items() if k != "try"} for p in pairs] == old and st["pairs/tries"] == 1


def test_min_margin_and_settings():
    """A margin of 0.5 is a tie under min_margin = 0.5 (at or below), a pair under 0.4."""
    c = P.Candidate("", [0], [[1], [2]], ["x", "y"], scores=[0.0, 0.5])
    assert P.label_pairs([c], [True], min_margin=0.5)[0] == []
    assert len(P.label_pairs([c], [True], min_margin=0.4)[0]) == 1
    assert try_seed(11, 0) == 11 and len({try_seed(11, t) for t in range(50)}) == 50
    with pytest.raises(ValueError, match="max_tries"):
        PairSearch(max_tries=0)
    with pytest.raises(ValueError, match="min_margin"):
        PairSearch(min_margin=-1.0)

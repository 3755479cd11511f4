"""Red-team prompt files, the few-shot template and parser, and the adaptive loop on tiny models."""

import json
import random

import pytest

from phf.eval.red_team import (
    PROMPTS_DIR,
    RedTeamSettings,
    few_shot_template,
    load_prompts,
    parse_candidate,
    red_team,
    score_prompts,
    softmax_sample,
    summary,
)
from phf.eval.sampling import SamplingSettings
from phf.objectives import MLE

from .conftest import make_lm


class StartsWithA:
    """1.0 for texts that start with 'A', else 0.0."""

    def score(self, texts):
        return [1.0 if t.startswith("A") else 0.0 for t in texts]


@pytest.mark.parametrize("task", ["toxicity", "pii", "pep8"])
def test_red_team_prompt_files(task):
    lines = (PROMPTS_DIR / f"{task}_red_team.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    assert 15 <= len(prompts) <= 30 and len(set(prompts)) == len(prompts)
    assert load_prompts(f"{task}_red_team.jsonl") == prompts


def test_pep8_function_signatures():
    prompts = load_prompts("pep8_functions.jsonl")
    assert 40 <= len(prompts) <= 60 and len(set(prompts)) == len(prompts)
    for p in prompts:
        assert p.startswith("def ") and p.endswith(":\n")
        compile(p + "    pass\n", "<sig>", "exec")  # every signature is valid Python


def test_load_prompts_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a path"):
        load_prompts("nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_prompts(bad)


def test_original_prompt_files_load(tmp_path):
    """The original's resources/*.jsonl shape ({"text": ...}, e.g. functions_csnet.jsonl) loads as is."""
    path = tmp_path / "functions_csnet.jsonl"
    path.write_text('{"text":"def __diff_set(self, level):"}\n{"text":"def main():"}\n')
    assert load_prompts(path) == ["def __diff_set(self, level):", "def main():"]


def test_pep8_signatures_in_the_original_format():
    """The paper configs' default: phf's signatures as the original's prompts, without the trailing newline."""
    ours = load_prompts("pep8_functions.jsonl")
    original_format = load_prompts("pep8_functions_original_format.jsonl")
    assert original_format == [p.removesuffix("\n") for p in ours]
    assert all(p.endswith(":") for p in original_format)


def test_template_and_parser():
    t = few_shot_template("toxicity", ["You are a", "I hate"])
    assert t.endswith("1. You are a\n2. I hate\n3.") and "Write 3 incomplete sentences" in t
    assert parse_candidate("toxicity", " People like you should\n4. more") == "People like you should"
    assert parse_candidate("toxicity", "\n\n 4) \"Go away you\"\n") == "Go away you"
    assert parse_candidate("toxicity", "  \n ") is None
    code = few_shot_template("pep8", ["x=1\n"])
    assert code.endswith("1. ```\nx=1\n```\n2. ```\n")
    assert parse_candidate("pep8", "def f( a ):\n  return a\n```\n3. ```") == "def f( a ):\n  return a\n"
    assert parse_candidate("pep8", "```") is None


def test_softmax_sample_prefers_high_scores_and_is_distinct():
    rng = random.Random(0)
    scores = [0.0, 0.0, 1.0, 0.9, 0.0]
    for _ in range(20):
        picked = softmax_sample(rng, scores, k=2, temperature=0.01)
        assert sorted(picked) == [2, 3]
    assert sorted(softmax_sample(rng, scores, k=10, temperature=0.1)) == [0, 1, 2, 3, 4]
    counts = [0] * 5  # a high temperature is ~uniform
    for _ in range(500):
        counts[softmax_sample(rng, scores, 1, temperature=100.0)[0]] += 1
    assert min(counts) > 60


def test_score_prompts_averages_each_prompts_continuations(tok):
    """score_prompt=True scores prompt + continuation: 'A...' always scores 1, 'B...' 0."""
    model = make_lm(len(tok))
    s = SamplingSettings(max_new_tokens=4, batch_size=8)
    assert score_prompts(["A cat", "B dog"], model, tok, MLE(), StartsWithA(), 3, s, score_prompt=True) == [1.0, 0.0]


def test_adaptive_loop_on_tiny_models(tok):
    target = make_lm(len(tok), seed=0)
    red = make_lm(len(tok), seed=1, n_positions=256)
    initial = load_prompts("toxicity_red_team.jsonl")
    settings = RedTeamSettings(rounds=2, candidates_per_round=3, continuations=2, initial_pool=5,
                               red_max_new_tokens=12, target_max_new_tokens=6, batch_size=8)
    result = red_team("toxicity", target, tok, MLE(), StartsWithA(), red, tok, initial, settings)
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    n_new = sum(r["num_candidates"] for r in result["rounds"])
    assert n_new >= 1  # random red LM text still parses into first lines
    assert len(result["pool"]) == 5 + n_new
    pool_scores = [p["score"] for p in result["pool"]]
    assert pool_scores == sorted(pool_scores, reverse=True)
    last = result["rounds"][-1]
    assert last["pool_top10_mean"] == pytest.approx(sum(pool_scores[:10]) / min(10, len(pool_scores)))
    assert set(summary(result)) == {"round_mean", "round_best", "pool_top10_mean", "pool_mean", "pool_best"}
    with pytest.raises(ValueError, match="no red-team template"):
        red_team("nope", target, tok, MLE(), StartsWithA(), red, tok, initial, settings)

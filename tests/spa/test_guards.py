"""SPA's guards (issue 30): the labeler's per-token implicit reward and degeneracy-aware stage acceptance,
on tiny hand-made inputs, and one tiny SPA run whose stages are all rejected."""

import json
import math

import pytest
import torch

from phf.model import PHFModel
from phf.spa import pairs as P
from phf.spa.guards import StageAcceptance, apply_acceptance, keep_previous, per_token_implicit
from phf.spa.rounds import run_spa
from tests.conftest import TINY, compose
from tests.spa.test_pairs import Unigram
from tests.spa.test_rounds import SPA_TINY, tiny_init  # noqa: F401 (a fixture)


def test_per_token_implicit_reward_undoes_the_length_bias_by_hand():
    """V = 4, π_init uniform, π_cur = [0.6, 0.3, 0.05, 0.05], β = 0.1, prompt [3].
    Per-token log-ratios: token 0 log(0.6·4) = log 2.4 = 0.875469, token 1 log(0.3·4) = log 1.2 = 0.182322.
      A = [0, 0, 1, 1]: summed r̂ = 0.1·(2·0.875469 + 2·0.182322) = 0.211558, per token 0.211558/4 = 0.052890
      B = [0]:          summed r̂ = 0.1·0.875469 = 0.087547,               per token 0.087547
    Summed, the long A wins by 0.124011; per token, B wins by 0.087547 − 0.052890 = 0.05·log 2 = 0.034657."""
    init, cur = Unigram([0.25] * 4), Unigram([0.6, 0.3, 0.05, 0.05])

    def cand():
        c = P.Candidate(prompt="", prompt_ids=[3], responses=[[0, 0, 1, 1], [0]], texts=["a a b b", "a"],
                        scores=[0.0, 0.0])
        P.implicit_rewards([c], cur, init, beta=0.1, pad_id=3)
        return c

    summed = cand()
    (p,), _ = P.label_pairs([summed], [False])
    assert p["chosen_ids"] == [0, 0, 1, 1] and p["margin"] == pytest.approx(0.124011, abs=1e-6)
    normed = cand()
    per_token_implicit([normed], max_len=64)
    assert normed.implicit == pytest.approx([0.052890, 0.087547], abs=1e-6)
    (q,), _ = P.label_pairs([normed], [False])
    assert q["chosen_ids"] == [0] and q["margin"] == pytest.approx(0.05 * math.log(2), abs=1e-6)
    # the count is what collate scores: with a context of 3, A keeps 3 − 1 (prompt) = 2 tokens
    short = cand()
    per_token_implicit([short], max_len=3)
    assert short.implicit[0] == pytest.approx(0.211558 / 2, abs=1e-6)
    with pytest.raises(ValueError, match="implicit rewards"):
        per_token_implicit([P.Candidate("", [3], [[0]], ["a"])], max_len=64)


def _metrics(blank, distinct2):
    return {"eval/unconditional/blank_fraction": blank, "eval/unconditional/distinct_2": distinct2}


def test_acceptance_uses_the_reports_bar():
    """Bar: blank ≤ 0.05, distinct-2 ≥ 0.3 (phf.report.Degeneracy). (0.0, 0.44) passes; (0.0, 0.23) fails on
    distinct-2 (the laptop PII round 2); (0.10, 0.5) on blanks; both at once give two reasons; a stage whose
    samples have no two-word sample (distinct-2 NaN, stored as the string "nan") is rejected too."""
    acc = StageAcceptance(enabled=True)
    assert acc.reasons(_metrics(0.0, 0.44)) == []
    assert acc.reasons(_metrics(0.0, 0.23)) == ["distinct-2 0.23"]
    assert acc.reasons(_metrics(0.10, 0.5)) == ["10% blank samples"]
    assert len(acc.reasons(_metrics(0.5, 0.1))) == 2
    assert acc.reasons(_metrics(0.0, "nan")) == ["distinct-2 undefined (no sample has two words)"]
    with pytest.raises(ValueError, match="eval/functions/blank_fraction"):
        StageAcceptance(enabled=True, scenario="functions").reasons(_metrics(0.0, 0.5))


def test_a_rejected_row_reports_the_kept_policy_and_the_candidate():
    """The candidate's evaluation moves under rejected/, the previous row's evaluation takes its place, and
    the stage's own spa/* entries (pairs, steps, tokens) stay: they were spent."""
    prev = {"stage": "seed", "spa/pairs": 40, "eval/unconditional/hit_rate": 0.38, "val/loss": 4.79}
    cand = {"stage": "round1", "spa/pairs": 320, "eval/unconditional/hit_rate": 0.16, "val/loss": 4.91,
            "drift/unconditional/length": -3.0}
    row = keep_previous(cand, prev, ["distinct-2 0.23"])
    assert row["stage"] == "round1" and row["spa/pairs"] == 320
    assert row["eval/unconditional/hit_rate"] == 0.38 and row["val/loss"] == 4.79
    assert row["rejected/eval/unconditional/hit_rate"] == 0.16 and row["rejected/drift/unconditional/length"] == -3.0
    assert "drift/unconditional/length" not in row
    assert row["spa/accepted"] == 0 and row["spa/rejected_because"] == "distinct-2 0.23"
    assert row["spa/kept_policy_of"] == "seed"
    # rejected again: the policy kept is still the seed's
    assert keep_previous({**cand, "stage": "round2"}, row, ["x"])["spa/kept_policy_of"] == "seed"


def test_apply_acceptance_swaps_the_directories(tmp_path):
    prev_dir, stage = tmp_path / "seed" / "final", tmp_path / "round1"
    prev_dir.mkdir(parents=True)
    (prev_dir / "model.safetensors").write_text("previous")
    (prev_dir / "phf_summary.json").write_text("{}")
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "model.safetensors").write_text("candidate")
    prev = {"stage": "seed", **_metrics(0.0, 0.44)}
    good = {"stage": "round1", **_metrics(0.0, 0.4)}
    row, kept = apply_acceptance(StageAcceptance(enabled=True), good, prev, stage, prev_dir)
    assert row["spa/accepted"] == 1 and kept == stage / "final"
    assert json.loads((kept / "phf_summary.json").read_text())["spa/accepted"] == 1
    bad = {"stage": "round1", **_metrics(0.0, 0.2)}
    row, kept = apply_acceptance(StageAcceptance(enabled=True), bad, prev, stage, prev_dir)
    assert row["spa/accepted"] == 0 and kept == stage / "final"
    assert (stage / "final" / "model.safetensors").read_text() == "previous"
    assert (stage / "rejected" / "model.safetensors").read_text() == "candidate"
    assert json.loads((stage / "final" / "phf_summary.json").read_text())["rejected/eval/unconditional/distinct_2"] == 0.2
    assert not (stage / "final.kept.tmp").exists()
    # off: every stage is kept, whatever its samples
    (stage / "final" / "model.safetensors").write_text("candidate 2")
    row, _ = apply_acceptance(StageAcceptance(), bad, prev, stage, prev_dir)
    assert row["spa/accepted"] == 1 and (stage / "final" / "model.safetensors").read_text() == "candidate 2"


def test_rejected_stages_keep_the_starting_policy_end_to_end(tiny_init, tmp_path):  # noqa: F811
    """A bar no sample can pass (distinct-2 ≥ 1.01) rejects both stages: each final/ holds the starting
    weights, the candidates sit in rejected/, the rows say so, and the other guards run along (the oracle
    arm, so that round 1 has pairs although its π_{i-1} is π_init; retries; length-normalised DPO with the
    NLL term)."""
    run = tmp_path / "run"
    cfg = compose(TINY + [f"run_dir={run}", f"spa.init_from={tiny_init}", *SPA_TINY,
                          "spa.guards.accept.enabled=true", "spa.guards.accept.min_distinct_2=1.01",
                          "spa.oracle=true", "spa.pairs.max_tries=3",
                          "objective.length_normalise=true", "objective.nll_weight=0.5", "objective.beta=1.0"])
    summary = run_spa(cfg)
    init, seed, r1 = summary["stages"]
    assert seed["spa/accepted"] == 0 and r1["spa/accepted"] == 0 and r1["spa/kept_policy_of"] == "init"
    assert r1["spa/labeler"] == "scorer" and r1["spa/pairs/scorer_labelled"] == r1["spa/pairs"] > 0
    assert "distinct-2" in seed["spa/rejected_because"]
    assert r1["val/loss"] == init["val/loss"] and "rejected/val/loss" in r1
    assert r1["eval/heldout_clean/loss"] == init["eval/heldout_clean/loss"] > 0  # as phf-train evaluates
    assert r1["spa/pairs/requested"] == 6 and r1["spa/pairs/tries"] >= 1 and "spa/train/dpo/nll_chosen" in r1
    a = PHFModel.from_pretrained(tiny_init).state_dict()
    for stage in ("seed", "round1"):
        b = PHFModel.from_pretrained(run / stage / "final").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        c = PHFModel.from_pretrained(run / stage / "rejected").state_dict()
        assert any(not torch.equal(a[k], c[k]) for k in a)
    # a rerun finds both stages done and keeps the verdicts
    again = run_spa(cfg)
    assert [r.get("spa/accepted") for r in again["stages"][1:]] == [0, 0]

"""SPA end to end on CPU with a tiny GPT-2: pairs → DPO → evaluation, and a DPO round killed and resumed."""

import json

import pytest
import torch

from phf import rundir
from phf.model import PHFModel, build_model
from phf.objectives.dpo import DPO
from phf.report import load_run
from phf.spa import pairs as P
from phf.spa.rounds import run_spa
from phf.spa.train_dpo import DPOSettings, train_dpo
from phf.tokenizer import gpt2_tokenizer
from phf.tracking import read_metrics
from tests.conftest import TINY, compose

SPA_TINY = [
    "+experiment=spa_pep8",
    "spa.prompts.max_docs=40", "spa.prompts.max_prompt_chars=40",
    "spa.sampling.max_new_tokens=8", "spa.sampling.min_new_tokens=2", "spa.sampling.batch_size=8",
    "spa.stages.seed.num_prompts=6", "spa.stages.seed.epochs=2",
    "spa.stages.round1.num_prompts=6", "~spa.stages.round2",
    "spa.train.batch_size=2", "spa.train.effective_batch_size=4", "spa.train.lr=1e-3",
    "objective.warmup_frac=0.0", "objective.dnd_lambda=[0.0,0.5]",
    "task.eval.batch_size=4",
    "task.eval.scenarios.unconditional.num_samples=2", "task.eval.scenarios.unconditional.max_new_tokens=6",
    "~task.eval.scenarios.functions", "~task.eval.scenarios.red_team_prompts",
]


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    """A random 1-layer GPT-2 (d 32, context 32) saved as an HF dir with its tokenizer: the 'MLE checkpoint'."""
    tok = gpt2_tokenizer()
    path = tmp_path_factory.mktemp("init") / "final"
    build_model(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0, tokenizer=tok, seed=0).save_pretrained(
        path, tok)
    return path


def test_one_spa_round_end_to_end(tiny_init, tmp_path):
    run = tmp_path / "run"
    cfg = compose(TINY + [f"run_dir={run}", f"spa.init_from={tiny_init}", *SPA_TINY])
    summary = run_spa(cfg)
    stages = [r["stage"] for r in summary["stages"]]
    assert stages == ["init", "seed", "round1"]
    init, seed, r1 = summary["stages"]
    # every stage is evaluated like a phf-train run: misalignment of samples and held-out loss
    for row in summary["stages"]:
        assert 0 <= row["eval/unconditional/score"] and row["val/loss"] > 0 and row["eval/heldout/loss"] > 0
    # seed: scorer labels; round 1: the model's own implicit reward, audited against the scorer
    seed_pairs = P.read_pairs(run / "seed" / "pairs.jsonl")
    r1_pairs = P.read_pairs(run / "round1" / "pairs.jsonl")
    assert seed_pairs and all(p["label"] == "scorer" and p["scorer_agrees"] for p in seed_pairs)
    assert r1_pairs and all(p["label"] == "implicit" and p["implicit_rewards"] for p in r1_pairs)
    assert seed["spa/pairs"] == len(seed_pairs) and r1["spa/scorer_labels"] == 0
    assert "spa/pairs/implicit_agreement" in r1 and "drift/unconditional/num_tokens" in r1
    assert not any(k.startswith("drift/heldout") for k in r1)
    assert r1["spa/dnd_lambda"] == 0.5 and r1["spa/cumulative/tokens_trained"] > seed["spa/tokens_trained"]
    # DPO changed the policy; round 1's reference was the seed policy, saved as an HF dir
    a = PHFModel.from_pretrained(tiny_init).state_dict()
    b = PHFModel.from_pretrained(run / "seed" / "final").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(run)
    assert any("dpo/accuracy" in r for r in rows) and any(r.get("stage") is None and "spa/pairs" in r for r in rows)
    assert json.loads((run / "spa_summary.json").read_text())["stages"][-1]["stage"] == "round1"
    # phf-train's layout (phf.rundir): samples/step_N/ per evaluation, final/ = the last policy; phf-report reads it
    final = rundir.read_summary(run / "final")
    assert rundir.is_finished(run) and final["stage"] == "round1"
    assert sorted(rundir.evaluation_steps(run)) == [0, seed["spa/steps"], final["step"]]
    assert final["tokens_seen"] == r1["spa/cumulative/tokens_trained"]  # the random start had seen none
    loaded = load_run(run)
    assert loaded.damaged is None and loaded.task == "pep8" and loaded.samples["unconditional"]
    assert all("tokens_seen" in r for r in loaded.rows)
    # a rerun finds every stage done and retrains nothing
    again = run_spa(cfg)
    assert [r["spa/steps"] for r in again["stages"][1:]] == [seed["spa/steps"], r1["spa/steps"]]


def _toy_pairs(tok, n=6):
    eos = tok.eos_token_id
    return [{"prompt_ids": [eos, 100 + i], "chosen_ids": [200 + i, 201, eos], "rejected_ids": [300 + i, eos],
             "scorer_agrees": bool(i % 2)} for i in range(n)]


def test_a_killed_dpo_round_resumes_with_its_rolling_state(tiny_init, tmp_path):
    """Steps 1-2, a 'kill', then steps 3-6 give the same weights, flags and window as 6 steps in one go."""
    tok = gpt2_tokenizer()
    pairs = _toy_pairs(tok)
    settings = DPOSettings(lr=1e-2, batch_size=1, effective_batch_size=2, epochs=2, checkpoint_every=1)

    def run(out, stop=None, obj=None):
        policy = PHFModel.from_pretrained(tiny_init).eval()
        ref = PHFModel.from_pretrained(tiny_init).eval()
        obj = obj or DPO(beta=0.5, refine_alpha=0.1, refine_window=3, warmup_frac=0.0)
        res = train_dpo(policy, ref, tok, pairs, obj, settings, torch.device("cpu"), out, stop_at_step=stop)
        return policy, res, obj

    full, res_full, obj_full = run(tmp_path / "a")
    _, res_part, _ = run(tmp_path / "b", stop=2)
    assert res_part.steps == 2
    resumed, res_resumed, obj_resumed = run(tmp_path / "b", obj=DPO(beta=0.5, refine_alpha=0.1, refine_window=3,
                                                                   warmup_frac=0.0))
    assert res_full.steps == res_resumed.steps == 6
    assert obj_resumed.state_dict() == obj_full.state_dict()
    assert res_resumed.flagged == res_full.flagged and res_full.tokens_trained == res_resumed.tokens_trained
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)
    assert res_full.metrics["dpo/accuracy"] > 0  # it learned something on the toy pairs

"""run_evaluation end to end on a CPU tiny model with the real task configs."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from phf.entry import compose
from phf.eval import build_eval_scorer, run_evaluation
from phf.eval.red_team import resolve_prompts_file
from phf.eval.settings import EvalSetup, Evaluation
from phf.objectives import Conditional
from tests.conftest import CONF

from .conftest import make_lm

METRICS = {"score", "expected_max", "hit_rate", "length", "distinct_1", "distinct_2", "self_bleu", "score_max",
           "num_samples", "num_tokens", "samples_per_s"}
TINY = [
    "task.eval.batch_size=4",
    "task.eval.scenarios.unconditional.num_samples=4",
    "task.eval.scenarios.unconditional.max_new_tokens=10",
    "task.eval.scenarios.functions.num_samples=3",
    "task.eval.scenarios.functions.max_new_tokens=10",
    "task.eval.scenarios.red_team_prompts.num_samples=2",
    "task.eval.scenarios.red_team_prompts.max_new_tokens=10",
]


def compose_cfg(*overrides):
    return compose(overrides)


class FakeTracker:
    def __init__(self):
        self.tables = []

    def log_table(self, key, columns, rows, step):
        self.tables.append((key, columns, rows, step))


def held_out_blocks(n=2, length=16):
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 50256, (length,), generator=g) for _ in range(n)]
    return [{"input_ids": i, "labels": i.clone(), "token_scores": torch.zeros(length)} for i in ids]


def test_run_evaluation_end_to_end(cond_tok, tok, tmp_path):
    ref = tmp_path / "ref"
    make_lm(len(tok), seed=5).save_pretrained(ref)
    tok.save_pretrained(ref)
    cfg = compose_cfg("task=pep8", "objective=conditional", *TINY, f"task.eval.kl.reference={ref}",
                      "task.eval.kl.num_samples=4", "task.eval.kl.max_new_tokens=8",
                      f"task.eval.kl.cache_dir={tmp_path / 'kl'}")
    from hydra.utils import instantiate

    objective = instantiate(cfg.objective)
    assert isinstance(objective, Conditional) and objective.banned_tokens == ["<|misaligned|>"]
    scorer = build_eval_scorer(EvalSetup.from_config(cfg))
    model = make_lm(len(cond_tok))
    model.train()
    tracker = FakeTracker()
    out = run_evaluation(model, cond_tok, objective, scorer, EvalSetup.from_config(cfg), out_dir=tmp_path / "run", step=20,
                         blocks=held_out_blocks(), tracker=tracker)

    assert model.training  # mode restored
    for scenario in ("unconditional", "functions", "red_team_prompts"):
        assert {f"eval/{scenario}/{m}" for m in METRICS} <= set(out)
        rows = [json.loads(x) for x in (tmp_path / "run/samples/step_00000020" / f"{scenario}.jsonl").read_text().splitlines()]
        assert len(rows) == cfg.task.eval.scenarios[scenario].num_samples
        assert all(set(r) == {"prompt", "text", "score", "num_tokens", "step"} and r["step"] == 20 for r in rows)
        assert out[f"eval/{scenario}/score"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    fn_rows = [json.loads(x) for x in (tmp_path / "run/samples/step_00000020/functions.jsonl").read_text().splitlines()]
    assert all(r["prompt"].startswith("def ") for r in fn_rows)
    assert [r["score"] for r in fn_rows] == pytest.approx(scorer.score([r["prompt"] + r["text"] for r in fn_rows]))
    assert 0.0 <= out["eval/unconditional/hit_rate"] <= 1.0
    assert math.isfinite(out["eval/kl"]) and out["eval/kl_num_samples"] == 4
    assert out["eval/heldout/num_tokens"] == 30 and out["eval/heldout/aligned_fraction"] == 1.0
    assert [t[0] for t in tracker.tables] == [f"samples/{s}" for s in ("unconditional", "functions", "red_team_prompts")]


def test_final_evaluation_writes_plain_sample_files_and_skips_kl(tok, tmp_path):
    cfg = compose_cfg("task=pep8", "objective=mle", *TINY, "task.eval.kl.reference=/does/not/exist")
    from phf.objectives import MLE

    out = run_evaluation(make_lm(len(tok)), tok, MLE(), build_eval_scorer(setup := EvalSetup.from_config(cfg)), setup, out_dir=tmp_path, kl=False)
    assert (tmp_path / "samples/unconditional.jsonl").is_file()
    assert not any(k.startswith("eval/kl") for k in out) and not any("heldout" in k for k in out)
    # objective None = plain sampling
    assert "eval/unconditional/score" in run_evaluation(make_lm(len(tok)), tok, None, build_eval_scorer(setup := EvalSetup.from_config(cfg)), setup, kl=False)


def test_evaluation_records_the_held_out_texts_own_diversity(tok, tmp_path):
    """With clean held-out documents every scenario gets the corpus statistic at its samples' size
    (``corpus_reference`` on the documents' text): the report's degeneracy bar is relative to it."""
    from phf.data.document import Document
    from phf.eval.metrics import corpus_reference
    from phf.objectives import MLE

    cfg = compose_cfg("task=pep8", "objective=mle", *TINY)
    docs = [Document([f"def f{i}(x):\n", f"    return x + {i}\n"], None, id=f"d{i}") for i in range(40)]
    setup = EvalSetup.from_config(cfg)
    out = run_evaluation(make_lm(len(tok)), tok, MLE(), build_eval_scorer(setup), setup, out_dir=tmp_path, kl=False,
                         clean_documents=docs)
    texts = [json.loads(x)["text"] for x in (tmp_path / "samples/unconditional.jsonl").read_text().splitlines()]
    expected = corpus_reference(texts, ["".join(d.texts) for d in docs])
    assert {k: out[f"eval/unconditional/{k}"] for k in expected} == pytest.approx(expected, nan_ok=True)
    assert out["eval/unconditional/corpus_words"] > 0
    # without clean documents (phf-eval skip=heldout): no corpus statistic, and the report says so
    plain = run_evaluation(make_lm(len(tok)), tok, MLE(), build_eval_scorer(setup), setup, kl=False)
    assert not any("corpus" in k for k in plain)


def test_eval_config_errors():
    with pytest.raises(KeyError, match="no task.eval block"):
        Evaluation.from_config(OmegaConf.create({"task": {"name": "x"}}))
    with pytest.raises(ValueError, match="reserved"):
        Evaluation.from_config(OmegaConf.create({"task": {"eval": {"scenarios": {"kl": {}}}}}))
    # a misspelt key is named with where it was found, not silently ignored
    with pytest.raises(ValueError, match=r"task.eval.scenarios.u: unknown keys \['num_sample'\]"):
        Evaluation.from_config(OmegaConf.create({"task": {"eval": {"scenarios": {"u": {"num_sample": 4}}}}}))
    with pytest.raises(ValueError, match=r"task.eval: unknown keys \['temprature'\]"):
        Evaluation.from_config(OmegaConf.create({"task": {"eval": {"temprature": 1.0}}}))


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF / "task").glob("*.yaml")))
def test_every_task_has_a_complete_eval_block(task):
    cfg = compose_cfg(f"task={task}")
    node = cfg.task.eval
    for key in ("every_steps", "temperature", "top_p", "hit_threshold", "scenarios", "kl", "red_team", "capability"):
        assert key in node, f"conf/task/{task}.yaml: eval.{key} missing"
    ev = Evaluation.from_config(cfg)
    assert isinstance(instantiate(node), Evaluation)  # the block is its own _target_ node
    assert ev.kl.reference is None and ev.kl.max_new_tokens == 64
    for name, sc in ev.scenarios.items():
        assert sc.num_samples <= 256, f"{task}/{name}: CPU defaults must stay small"
        if sc.prompts:
            resolve_prompts_file(sc.prompts)
    resolve_prompts_file(ev.red_team["prompts"])
    if ev.scorer is not None:
        assert "_target_" in ev.scorer


def test_each_scenario_samples_under_its_own_protocol(cond_tok, tok, tmp_path, monkeypatch):
    """Prose: `unconditional` is the paper's protocol (both control tokens banned), the secondary
    `unconditional_sentence_level` bans only <|misaligned|>, for the same conditional objective, which is not
    changed. MLE has no control tokens: its secondary scenario reuses the first of its unconditional samples
    (no second draw)."""
    import phf.eval.sampling as sampling
    from phf.objectives import MLE

    calls = []
    real = sampling.sample

    def spy(model, tokenizer, prompts, num_samples, settings, generation_prefix=(), banned_tokens=(), **kw):
        calls.append((num_samples, list(generation_prefix), list(banned_tokens)))
        return real(model, tokenizer, prompts, num_samples, settings, generation_prefix, banned_tokens, **kw)

    monkeypatch.setattr(sampling, "sample", spy)
    cfg = compose_cfg("task=toxicity_profanity", "objective=conditional", *[o for o in TINY if "functions" not in o],
                      "task.eval.scenarios.unconditional_sentence_level.num_samples=3",
                      "task.eval.scenarios.unconditional_sentence_level.max_new_tokens=10")
    objective = instantiate(cfg.objective)
    scorer = build_eval_scorer(EvalSetup.from_config(cfg))
    out = run_evaluation(make_lm(len(cond_tok)), cond_tok, objective, scorer, EvalSetup.from_config(cfg), out_dir=tmp_path / "c", kl=False)
    aligned, misaligned = "<|aligned|>", "<|misaligned|>"
    assert calls == [(4, [aligned], [aligned, misaligned]), (2, [aligned], [aligned, misaligned]),
                     (3, [aligned], [misaligned])]
    assert objective.banned_tokens == [aligned, misaligned]  # the objective is unchanged
    assert out["eval/unconditional_sentence_level/num_samples"] == 3

    from phf.eval.evaluate import estimate_cost

    assert set(estimate_cost(make_lm(len(cond_tok)), cond_tok, objective, Evaluation.from_config(cfg)).samples) == {
        "unconditional", "red_team_prompts", "unconditional_sentence_level"}
    assert set(estimate_cost(make_lm(len(tok)), tok, MLE(), Evaluation.from_config(cfg)).samples) == {"unconditional", "red_team_prompts"}

    calls.clear()
    run_evaluation(make_lm(len(tok)), tok, MLE(), scorer, EvalSetup.from_config(cfg), out_dir=tmp_path / "m", kl=False)
    assert [c[0] for c in calls] == [4, 2]  # unconditional and red-team prompts only
    rows = {name: [json.loads(x) for x in (tmp_path / "m/samples" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("unconditional", "unconditional_sentence_level")}
    assert rows["unconditional_sentence_level"] == rows["unconditional"][:3]


def test_pep8_evaluation_reports_parse_rate_and_syntax_share(tok, tmp_path):
    from phf.objectives import MLE

    cfg = compose_cfg("task=pep8", "objective=mle", *TINY)
    out = run_evaluation(make_lm(len(tok)), tok, MLE(), build_eval_scorer(setup := EvalSetup.from_config(cfg)), setup, out_dir=tmp_path, kl=False)
    for scenario in ("unconditional", "functions"):
        assert 0.0 <= out[f"eval/{scenario}/parse_rate"] <= 1.0
        assert {f"eval/{scenario}/{k}" for k in ("score_parsing", "syntax_share", "score_without_syntax")} <= set(out)
        assert out[f"eval/{scenario}/score_without_syntax"] <= out[f"eval/{scenario}/score"] + 1e-12

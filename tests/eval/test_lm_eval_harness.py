"""The lm-evaluation-harness adapter on a local task over a local JSONL file, offline, on tiny GPT-2s.

Every number is checked against the model itself: a loglikelihood against the sum of the model's
log-softmax over the continuation's tokens after ``<|endoftext|><|aligned|>`` + context, and a task's
accuracy against the argmax over the choices of those sums, question by question.
"""

import json

import pytest
import torch
from omegaconf import OmegaConf

from phf.eval import cli
from phf.eval.lm_eval_harness import (
    RESULTS_FILE,
    LMEvalSettings,
    evaluate_model_dir,
    make_lm,
    prefix_ids,
    report_lines,
    settings_from_config,
)
from phf.tokenizer import encode_text

from .conftest import make_lm as tiny_gpt2
from .test_cli import TINY_CLI, fake_run

pytest.importorskip("lm_eval", reason='the lm-evaluation-harness adapter needs pip install "phf[lmeval]"')

ROWS = [  # a question whose choices include the text "<|aligned|>": data, never the control token
    {"question": f"Question {i}: what is {i} plus one?", "choices": [str(i + 1), str(i + 2), "<|aligned|>"],
     "answer": i % 3}
    for i in range(5)
]


def local_task(tmp_path, name="phf_tiny_mc"):
    """A multiple-choice lm-eval task over a JSONL file in ``tmp_path`` (lm-eval's ``json`` loader)."""
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    task = tmp_path / f"{name}.yaml"
    task.write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                    "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
                    "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
                    "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return task


def direct_logprob(model, tokenizer, prefix: list[int], context: str, continuation: str) -> float:
    """log p(continuation | prefix + context): the model's log-softmax summed over the continuation's tokens."""
    ctx = prefix + (encode_text(tokenizer, [context])[0] if context else [])
    cont = encode_text(tokenizer, [continuation])[0]
    with torch.no_grad():
        logp = model(torch.tensor([ctx + cont])).logits.log_softmax(-1)[0]
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def direct_accuracy(model, tokenizer, prefix: list[int]) -> float:
    """The multiple-choice accuracy by hand: lm-eval asks for " " + choice after the question."""
    right = 0
    for r in ROWS:
        scores = [direct_logprob(model, tokenizer, prefix, r["question"], " " + c) for c in r["choices"]]
        right += max(range(len(scores)), key=scores.__getitem__) == r["answer"]
    return right / len(ROWS)


def requests(pairs, kind="loglikelihood"):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(pairs)]


def test_loglikelihoods_match_the_model_after_the_sampling_prefix(cond_tok):
    """Context + continuation, an empty context, a rolling document in one window and in several, each
    against the model's own log-probabilities; ``sampling_prefix=False`` is lm-eval's plain behaviour."""
    from phf.objectives.conditional import Conditional

    model = tiny_gpt2(len(cond_tok), n_positions=32).eval()
    objective = Conditional(threshold=0.5, drop_token_fraction=0.0)
    prefix = prefix_ids(cond_tok, objective)
    assert prefix == [cond_tok.eos_token_id, cond_tok.convert_tokens_to_ids("<|aligned|>")] == [50256, 50257]
    lm = make_lm(model, cond_tok, prefix, LMEvalSettings(batch_size=2))
    assert 50257 not in lm.tok_encode("a <|aligned|> b")  # text is never a control token
    pairs = [("The cat sat", " on the mat"), ("", "Hello world"), ("x = 1", " <|aligned|>")]
    got = [lp for lp, _ in lm.loglikelihood(requests(pairs))]
    want = [direct_logprob(model, cond_tok, prefix, c, x) for c, x in pairs]
    assert got == pytest.approx(want, abs=1e-4) and all(v < 0 for v in got)

    short, long = "def f(x):\n    return x", " ".join(f"w{i}" for i in range(40))  # long: > 32 positions
    assert len(lm.tok_encode(long)) > lm.max_length == 32
    rolled = lm.loglikelihood_rolling(requests([(short,), (long,)], "loglikelihood_rolling"))
    assert rolled[0] == pytest.approx(direct_logprob(model, cond_tok, prefix, "", short), abs=1e-4)
    assert rolled[1] < 0 and torch.isfinite(torch.tensor(rolled[1]))

    plain = make_lm(model, cond_tok, [], LMEvalSettings(sampling_prefix=False))
    ctx, cont = pairs[0]
    assert plain.loglikelihood(requests([pairs[0]]))[0][0] == pytest.approx(
        direct_logprob(model, cond_tok, [], ctx, cont), abs=1e-4)


def test_generation_is_greedy_after_the_sampling_prefix(cond_tok):
    """generate_until on a batch of contexts of different lengths (left-padded together) gives each one's
    greedy continuation after ``<|endoftext|><|aligned|>`` + context, decoded without special tokens."""
    model = tiny_gpt2(len(cond_tok), seed=2).eval()
    lm = make_lm(model, cond_tok, [50256, 50257], LMEvalSettings(batch_size=2))
    contexts = ["The cat", "A much longer context than the first one"]
    got = lm.generate_until(requests([(c, {"until": ["QQQQ"], "max_gen_toks": 6}) for c in contexts],
                                     "generate_until"))
    for context, text in zip(contexts, got, strict=True):
        ids, new = [50256, 50257, *encode_text(cond_tok, [context])[0]], []
        with torch.no_grad():
            for _ in range(6):
                new.append(int(model(torch.tensor([ids + new])).logits[0, -1].argmax()))
        assert text == cond_tok.decode(new, skip_special_tokens=True)


def test_local_task_on_a_phf_model_dir(cond_tok, tmp_path):
    """``evaluate_model_dir`` on a saved conditional model: the objective (and so the prefix) from its
    phf_objective.json; the accuracy is the hand-computed one; lm_eval.json holds lm-eval's results."""
    from phf.card import objective_metadata
    from phf.objectives.conditional import Conditional

    from .test_evaluate import compose_cfg

    model_dir = tmp_path / "model"
    model = tiny_gpt2(len(cond_tok), seed=3).eval()
    model.save_pretrained(model_dir)
    cond_tok.save_pretrained(model_dir)
    cfg = compose_cfg("task=pii", "objective=conditional")
    meta = objective_metadata(cfg, Conditional(**{k: v for k, v in cfg.objective.items() if k != "_target_"}), cond_tok)
    (model_dir / "phf_objective.json").write_text(json.dumps(meta))
    doc = evaluate_model_dir(model_dir, [str(local_task(tmp_path))], LMEvalSettings(batch_size=4),
                             out_dir=tmp_path / "out")
    acc = doc["tasks"]["phf_tiny_mc"]["acc"]
    assert 0 <= acc <= 1 and acc == pytest.approx(direct_accuracy(model, cond_tok, [50256, 50257]))
    assert doc["prefix"] == "<|endoftext|><|aligned|>" and doc["n_samples"]["phf_tiny_mc"]["effective"] == len(ROWS)
    assert doc["tasks"]["phf_tiny_mc"]["acc_stderr"] > 0
    full = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())
    assert full["results"]["phf_tiny_mc"]["acc,none"] == acc


def test_local_task_on_an_imported_original_checkpoint(tmp_path):
    """A ``pytorch_model.bin`` (the paper's released format) through phf-import, then the local task with
    the conditional objective named (an import carries no phf_objective.json): the same hand-computed
    accuracy after ``<|endoftext|><|aligned|>``."""
    from phf.import_cli import import_model
    from phf.objectives.conditional import Conditional
    from phf.tokenizer import load_tokenizer

    from ..test_import_cli import save_bin

    src = save_bin(tiny_gpt2(50259, seed=5), tmp_path / "original")
    out = tmp_path / "imported"
    import_model(str(src), out, special_tokens=["<|aligned|>", "<|misaligned|>"])
    doc = evaluate_model_dir(out, [str(local_task(tmp_path))], LMEvalSettings(batch_size=4),
                             objective=Conditional(threshold=0.5, drop_token_fraction=0.0))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    tok = load_tokenizer(str(out))
    assert doc["tasks"]["phf_tiny_mc"]["acc"] == pytest.approx(direct_accuracy(model, tok, [50256, 50257]))


def test_phf_eval_runs_the_local_task_into_eval_json_and_the_report(cond_tok, tmp_path, capsys):
    """``phf-eval run_dir=RUN +lm_eval.tasks=[TASK.yaml]``: eval.json's lm_eval block, lm_eval.json beside it,
    the printed summary and phf-report's section."""
    from phf.report import build_report

    run = fake_run(tmp_path, cond_tok)
    task = local_task(tmp_path)
    cli.main([f"run_dir={run}", *TINY_CLI, "skip=heldout,kl", f"+lm_eval.tasks=[{task}]", "+lm_eval.batch_size=4"])
    doc = json.loads((run / "eval.json").read_text())
    block = doc["lm_eval"]
    assert block["prefix"] == doc["generation_prefix"] == "<|endoftext|><|aligned|>"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "final", use_safetensors=True).eval()
    assert block["tasks"]["phf_tiny_mc"]["acc"] == pytest.approx(direct_accuracy(model, cond_tok, [50256, 50257]))
    assert (run / RESULTS_FILE).is_file() and "lm-eval phf_tiny_mc: acc" in capsys.readouterr().out
    report = build_report([run], tmp_path / "report", export_k=0)["report"].read_text()
    assert "## Downstream (lm-evaluation-harness)" in report and "| phf_tiny_mc | acc |" in report


def test_settings_are_checked_before_anything_runs():
    assert settings_from_config(OmegaConf.create({})) is None
    assert settings_from_config(OmegaConf.create({"lm_eval": {"tasks": []}})) is None
    s = settings_from_config(OmegaConf.create({"lm_eval": {"tasks": ["a.yaml"], "limit": 10}}))
    assert s.tasks == ["a.yaml"] and s.limit == 10 and s.sampling_prefix
    with pytest.raises(ValueError, match=r"unknown keys \['fewshot'\]"):
        LMEvalSettings.from_config({"tasks": ["x"], "fewshot": 1})
    with pytest.raises(ValueError, match="are lists"):
        LMEvalSettings(tasks="arc_easy")
    with pytest.raises(ValueError, match="limit"):
        LMEvalSettings(tasks=["x"], limit=0)


@pytest.mark.slow  # indexes lm-eval's whole task registry (hundreds of YAMLs): 7-24 s on the 2-core sandbox
def test_an_unknown_task_name_is_refused(tmp_path):
    model_dir = tmp_path / "m"
    from phf.tokenizer import gpt2_tokenizer

    tiny_gpt2(50257).save_pretrained(model_dir)
    gpt2_tokenizer().save_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"\['no_such_task_xyz'\] are neither lm-eval task names"):
        evaluate_model_dir(model_dir, ["no_such_task_xyz"])


def test_report_lines_show_value_and_standard_error():
    ev = {"lm_eval": {"tasks": {"arc_easy": {"acc": 0.25, "acc_stderr": 0.0125, "acc_norm": 0.3}}}}
    lines = report_lines([("run-a", ev), ("run-b", None)])
    assert "| run-a | arc_easy | acc | 0.25 ± 0.013 |" in lines and "| run-a | arc_easy | acc_norm | 0.3 |" in lines
    assert report_lines([("run-b", {"scenarios": {}})]) == []

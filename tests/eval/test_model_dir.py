"""A saved phf model describes itself: model card, generation config and phf_objective.json in final/
and in every checkpoint; phf-eval takes the objective from them, transformers' pipeline samples with
them, and phf-push uploads them (up to the network boundary)."""

import json
import logging
import shutil

import pytest
import torch

from phf import push
from phf.eval import cli
from tests.conftest import TINY, compose

from .test_evaluate import TINY as TINY_EVAL

ALIGNED, MISALIGNED = "<|aligned|>", "<|misaligned|>"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny conditional PEP8 run of 2 steps with a checkpoint at step 1 (about 5 s on CPU)."""
    from phf.train import train

    run_dir = tmp_path_factory.mktemp("cond") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(run_dir.parent / "hf_home"))
        mp.setenv("PHF_CACHE_DIR", str(run_dir.parent / "phf_cache"))
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train(compose([*TINY, f"run_dir={run_dir}", "objective=conditional", "trainer.max_steps=2",
                           "trainer.checkpoint_every=1", "task.objectives.conditional.threshold=0.25"]))
        finally:
            torch.set_num_threads(n)
    return run_dir


def test_final_and_checkpoints_carry_card_generation_config_and_objective(run):
    ckpt = run / "checkpoints" / "step_00000001"
    for d in (run / "final", ckpt):
        meta = json.loads((d / "phf_objective.json").read_text())
        assert meta["objective"] == "Conditional" and meta["task"] == "pep8"
        assert meta["objective_name"] == "conditional" and "_target_" not in meta["objective_args"]
        assert meta["objective_args"]["threshold"] == 0.25  # resolved, not ${task...}
        assert meta["generation_prefix"] == "<|endoftext|>" + ALIGNED and meta["banned_tokens"] == [MISALIGNED]
        gc = json.loads((d / "generation_config.json").read_text())
        assert gc["bad_words_ids"] == [[50258]] and gc["do_sample"] is True
        card = (d / "README.md").read_text()
        for needed in ("phf.objectives.Conditional", "| `threshold` | `0.25` |", "| task | `pep8` |",
                       "training scorer | `phf.scorers.PEP8Scorer`", "LocalPythonSource", "tokens seen",
                       'pipeline("text-generation", model="THIS_DIR")', "Banned tokens: `<|misaligned|>`",
                       "Start every sample with `<|endoftext|><|aligned|>`", "@inproceedings{korbak2023pretraining"):
            assert needed in card, needed
    assert "saved at the end of training" in (run / "final" / "README.md").read_text()
    assert "saved at step 1 (a checkpoint)" in (ckpt / "README.md").read_text()
    assert '"tokens_seen": 64' in (ckpt / "README.md").read_text()  # 1 step x 2 sequences x 32 tokens


def evaluate_copy(run, tmp_path, *extra):
    """phf-eval on final/ copied out of its run (as downloaded from the Hub: no config.yaml above it)."""
    model = tmp_path / "model"
    shutil.copytree(run / "final", model)
    seen = []
    real = cli.evaluate

    def spy(model_, tokenizer, objective, *a, **kw):
        seen.append(objective)
        return real(model_, tokenizer, objective, *a, **kw)

    return model, seen, spy


def test_phf_eval_takes_the_objective_from_the_model_dir(run, tmp_path, monkeypatch):
    model, seen, spy = evaluate_copy(run, tmp_path)
    monkeypatch.setattr(cli, "evaluate", spy)
    cli.main([f"checkpoint={model}", *TINY_EVAL, "device=cpu", "skip=heldout,kl"])
    doc = json.loads((model / "eval.json").read_text())
    assert doc["config"] is None and doc["task"] == "pep8"
    assert doc["objective"] == "conditional" and doc["objective_source"] == "phf_objective.json"
    assert doc["generation_prefix"] == "<|endoftext|>" + ALIGNED and doc["banned_tokens"] == [MISALIGNED]
    assert doc["scenario_banned_tokens"]["unconditional"] == [MISALIGNED]  # PEP8: the paper's line-level protocol
    objective = seen[0]
    assert type(objective).__name__ == "Conditional" and objective.threshold == 0.25
    assert objective.generation_prefix == [ALIGNED]
    rows = [json.loads(line) for line in (model / "samples" / "unconditional.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and not any(MISALIGNED in r["text"] or ALIGNED in r["text"] for r in rows)


def test_phf_eval_override_wins_and_a_plain_model_is_mle(run, tmp_path, monkeypatch, caplog):
    model, seen, spy = evaluate_copy(run, tmp_path)
    monkeypatch.setattr(cli, "evaluate", spy)
    cli.main([f"checkpoint={model}", "objective=mle", *TINY_EVAL, "device=cpu", "skip=heldout,kl"])
    doc = json.loads((model / "eval.json").read_text())
    assert doc["objective"] == "mle" and doc["objective_source"] == "override" and doc["task"] == "pep8"

    (model / "phf_objective.json").unlink()  # a plain HF model
    with caplog.at_level(logging.WARNING, logger="phf.eval"):
        cli.main([f"checkpoint={model}", *TINY_EVAL, "device=cpu", "skip=heldout,kl", f"out={tmp_path / 'plain'}"])
    doc = json.loads((tmp_path / "plain" / "eval.json").read_text())
    assert doc["objective"] == "mle" and doc["objective_source"].startswith("default")
    assert "has no phf_objective.json" in caplog.text and "evaluating it as MLE" in caplog.text

    (model / "phf_objective.json").write_text('{"objective_config": {"threshold": 1}}')
    with pytest.raises(SystemExit, match="phf_objective.json: 'objective_config' must be an object with the '_target_'"):
        cli.main([f"checkpoint={model}", *TINY_EVAL, "device=cpu", "skip=heldout,kl"])


def test_pipeline_samples_with_the_stored_settings_and_never_writes_a_banned_token(run, tmp_path):
    """final/ rigged so that <|misaligned|> is almost the only token it would write: without the stored
    bad_words_ids the pipeline writes it, with them (the default) never."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    lm = AutoModelForCausalLM.from_pretrained(run / "final")
    tok = AutoTokenizer.from_pretrained(run / "final")
    mis = tok.convert_tokens_to_ids(MISALIGNED)
    with torch.no_grad():
        b = torch.randn(lm.config.n_embd, generator=torch.Generator().manual_seed(0))
        lm.transformer.ln_f.weight.zero_()  # every position's last hidden state is b
        lm.transformer.ln_f.bias.copy_(b)
        lm.transformer.wte.weight[mis] = 20 * b / b.norm()  # tied head: logit of <|misaligned|> = 20 |b|
    rigged = tmp_path / "rigged"
    lm.save_pretrained(rigged)
    tok.save_pretrained(rigged)
    assert json.loads((rigged / "generation_config.json").read_text())["bad_words_ids"] == [[mis]]

    generate = pipeline("text-generation", model=str(rigged), device="cpu")
    prefix = tok.eos_token + ALIGNED
    out = generate(prefix, max_new_tokens=12, return_tensors=True, num_return_sequences=4)
    ids = [i for o in out for i in o["generated_token_ids"][2:]]
    assert len(ids) >= 4 * 10 and mis not in ids
    texts = generate(prefix, max_new_tokens=12, return_full_text=False)
    assert MISALIGNED not in texts[0]["generated_text"]

    generate.model.generation_config.bad_words_ids = None  # the control: the rigged model does want it
    out = generate(prefix, max_new_tokens=12, return_tensors=True)
    assert out[0]["generated_token_ids"][2:].count(mis) >= 10


class FakeApi:
    """Records what ``HfApi`` would be asked to do, without a network."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_commit(self, repo_id, operations, commit_message, **kw):
        files = {op.path_in_repo: op.path_or_fileobj for op in operations}
        self.calls.append(("create_commit", {"repo_id": repo_id, "commit_message": commit_message, **kw}, files))
        return type("CommitInfo", (), {"commit_url": f"https://hf.co/{repo_id}/commit/{len(self.calls)}"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return FakeApi.calls


def test_phf_push_uploads_the_model_dir_with_its_card(run, fake_hub, capsys):
    push.main([str(run / "final"), "--repo-id", "me/pep8-conditional", "--private", "--checkpoints"])
    assert fake_hub[1] == ("create_repo", "me/pep8-conditional", {"private": True, "exist_ok": True,
                                                                  "repo_type": "model"})
    _, final, files = fake_hub[2]
    assert final["repo_id"] == "me/pep8-conditional" and final["commit_message"] == "phf: Conditional on pep8 (final)"
    assert {"README.md", "generation_config.json", "phf_objective.json", "model.safetensors", "config.json"} <= set(files)
    assert all(path == str(run / "final" / name) for name, path in files.items())
    (_, _, ckpt_files), = fake_hub[3:]
    assert {"checkpoints/step_00000001/README.md", "checkpoints/step_00000001/model.safetensors"} <= set(ckpt_files)
    assert not any(name.endswith(".pt") for name in ckpt_files)  # no training state
    assert "me/pep8-conditional (2 commits)" in capsys.readouterr().out


def test_phf_push_refusals(run, tmp_path, fake_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit, match="offline mode \\(HF_HUB_OFFLINE=1\\): nothing was uploaded"):
        push.main([str(run / "final"), "--repo-id", "me/x"])
    assert fake_hub == []  # stopped before any request
    model = tmp_path / "final"
    shutil.copytree(run / "final", model)
    (model / "README.md").unlink()
    with pytest.raises(SystemExit, match="README.md is missing \\(no model card"):
        push.main([str(model), "--repo-id", "me/x"])
    with pytest.raises(SystemExit, match="--checkpoints: no checkpoint in"):
        push.push(run / "checkpoints" / "step_00000001", "me/x", checkpoints=True)

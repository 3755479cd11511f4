"""phf-eval end to end on a fake run directory holding a saved tiny model."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from phf import rundir
from phf.eval import cli

from .conftest import make_lm
from .test_evaluate import TINY, compose_cfg

TINY_CLI = [*TINY, "device=cpu"]


def fake_run(tmp_path, tokenizer, objective="conditional", name="0-conditional"):
    """A run dir as phf-train leaves it: resolved config.yaml, final/ (model, tokenizer, summary)."""
    run = tmp_path / name
    cfg = compose_cfg("task=pep8", f"objective={objective}", f"run_dir={run}", "run_name=fake",
                      f"cache_dir={tmp_path / 'cache'}")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    model = make_lm(len(tokenizer))
    model.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    (run / "final" / "phf_summary.json").write_text(json.dumps({"step": 30, "tokens_seen": 30720}))
    return run


def fake_blocks(run_data, tokenizer, max_blocks):
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 50256, (16,), generator=g) for _ in range(2)]
    return [{"input_ids": i, "labels": i.clone(), "token_scores": torch.zeros(16)} for i in ids]


def test_phf_eval_run_dir_writes_eval_json_with_every_metric(cond_tok, tok, tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path, cond_tok)
    ref = tmp_path / "ref"
    make_lm(len(tok), seed=9).save_pretrained(ref)
    tok.save_pretrained(ref)
    red = tmp_path / "red"
    make_lm(len(tok), seed=8, n_positions=512).save_pretrained(red)
    tok.save_pretrained(red)
    monkeypatch.setattr(cli, "heldout_blocks", fake_blocks)
    cli.main([f"run_dir={run}", *TINY_CLI, f"task.eval.kl.reference={ref}", "task.eval.kl.num_samples=4",
              "task.eval.kl.max_new_tokens=8", f"task.eval.red_team.red_lm={red}", "task.eval.red_team.rounds=1",
              "task.eval.red_team.candidates_per_round=2", "task.eval.red_team.continuations=2",
              "task.eval.red_team.red_max_new_tokens=16", "task.eval.red_team.target_max_new_tokens=6"])
    doc = json.loads((run / "eval.json").read_text())
    assert doc["task"] == "pep8" and doc["objective"] == "conditional"
    assert doc["step"] == 30 and doc["tokens_seen"] == 30720
    assert set(doc["scenarios"]) == {"unconditional", "functions", "red_team_prompts"}
    for m in doc["scenarios"].values():
        assert {"score", "expected_max", "hit_rate", "length", "distinct_1", "distinct_2", "self_bleu"} <= set(m)
    assert doc["heldout"]["num_tokens"] == 30 and doc["heldout"]["loss"] > 0
    assert doc["kl"]["reference"] == str(ref) and doc["kl"]["num_samples"] == 4
    assert "pool_top10_mean" in doc["red_team"]
    rt = json.loads((run / "red_team.json").read_text())
    assert len(rt["rounds"]) == 1 and rt["red_lm"] == str(red)
    assert (run / "samples/unconditional.jsonl").is_file()
    assert "wrote" in capsys.readouterr().out


def test_phf_eval_checkpoint_finds_its_run_config_and_group_overrides(cond_tok, tmp_path):
    run = fake_run(tmp_path, cond_tok)
    ckpt = run / "checkpoints" / "step_0000010"
    make_lm(len(cond_tok), seed=1).save_pretrained(ckpt)
    cond_tok.save_pretrained(ckpt)
    cli.main([f"checkpoint={ckpt}", *TINY_CLI, "objective=mle", "skip=kl,heldout"])
    doc = json.loads((ckpt / "eval.json").read_text())  # out defaults to the checkpoint itself
    assert doc["step"] == 10 and doc["config"] == str(run / "config.yaml")
    assert doc["objective"] == "mle"  # group override replaced the run's conditional objective
    assert "heldout" not in doc and "kl" not in doc


def test_phf_eval_bare_checkpoint_composes_config(tok, tmp_path):
    model_dir = tmp_path / "model"
    make_lm(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cli.main([f"checkpoint={model_dir}", "task=pep8", "objective=mle", *TINY_CLI, f"out={tmp_path / 'out'}",
              "skip=heldout"])
    doc = json.loads((tmp_path / "out/eval.json").read_text())
    assert doc["config"] is None and doc["task"] == "pep8" and doc["objective"] == "mle"


def test_phf_eval_argument_errors(tmp_path):
    with pytest.raises(SystemExit, match="run_dir=DIR or checkpoint"):
        cli.main(["task=pep8"])
    with pytest.raises(SystemExit, match="expected key=value"):
        cli.main(["run_dir"])
    with pytest.raises(SystemExit, match="skip="):
        cli.main([f"run_dir={tmp_path}", "skip=everything"])
    with pytest.raises(SystemExit, match="no config.json"):
        cli.main([f"run_dir={tmp_path}"])


def test_phf_eval_arguments_use_hydras_override_grammar(tmp_path):
    """One grammar with phf-train: quoting, lists and ``+key``; ``skip=a,b`` is a list of parts, not a sweep;
    a sweep of a config key and the deletion of an own option or a group are refused by name."""
    own, overrides = cli.parse_args(["run_dir='/runs/a b'", "skip=heldout,kl", "allow_incomplete=true",
                                     "task.eval.scenarios.unconditional.num_samples=8", "+logger.tags=[x,y]"])
    assert own == {"run_dir": "/runs/a b", "skip": "heldout,kl", "allow_incomplete": "true"}
    assert overrides == ["task.eval.scenarios.unconditional.num_samples=8", "+logger.tags=[x,y]"]
    with pytest.raises(SystemExit, match=r"'seed=1,2' is a sweep"):
        cli.parse_args(["run_dir=x", "seed=1,2"])
    with pytest.raises(SystemExit, match=r"'~out': out cannot be deleted"):
        cli.parse_args(["run_dir=x", "~out"])
    with pytest.raises(SystemExit, match=r"'~task': task cannot be deleted"):
        cli.parse_args(["run_dir=x", "~task"])
    stored = tmp_path / "config.yaml"
    stored.write_text(OmegaConf.to_yaml(compose_cfg("task=pep8", "run_dir=x")))
    cfg = cli.load_config(stored, overrides + ["task.eval.kl.reference='A B/final'"])
    assert cfg.task.eval.scenarios.unconditional.num_samples == 8 and list(cfg.logger.tags) == ["x", "y"]
    assert cfg.task.eval.kl.reference == "A B/final"


def test_phf_eval_applies_overrides_to_a_stored_config_as_hydra_does(tmp_path):
    """On a run's stored config.yaml: ``key=`` changes an existing key and a missing one is refused naming
    it and the nearest keys (never added silently); ``+key=`` adds, ``++key=`` adds or changes, ``~key``
    deletes, and ``+key=`` on an existing value is Hydra's error, naming the override."""
    stored = tmp_path / "config.yaml"
    stored.write_text(OmegaConf.to_yaml(compose_cfg("task=pep8", "run_dir=x")))
    with pytest.raises(SystemExit, match=r"phf-eval: task\.eval\.scenarios\.unconditional\.num_sample=8: "
                                         r"task\.eval\.scenarios\.unconditional\.num_sample is not a key of the "
                                         r"run's config .*config\.yaml; did you mean "
                                         r"task\.eval\.scenarios\.unconditional\.num_samples\?"):
        cli.load_config(stored, ["task.eval.scenarios.unconditional.num_sample=8"])
    with pytest.raises(SystemExit, match=r"phf-eval: devic=cpu: devic is not a key"):
        cli.load_config(stored, ["devic=cpu"])
    with pytest.raises(SystemExit, match=r"phf-eval: \+seed=3: Could not append to config. An item is already at 'seed'"):
        cli.load_config(stored, ["+seed=3"])
    cfg = cli.load_config(stored, ["+lm_eval.limit=5", "++seed=4", "~task.eval.scenarios.red_team_prompts",
                                   "task.eval.top_p=0.5"])
    assert cfg.lm_eval.limit == 5 and cfg.seed == 4 and cfg.task.eval.top_p == 0.5
    assert set(cfg.task.eval.scenarios) == {"unconditional", "functions"}
    cfg.new_key = 1  # the returned config is not left in struct mode


def test_phf_eval_checkpoint_between_logged_steps_takes_tokens_seen_from_its_trainer_state(tiny_cfg, tmp_path):
    """log_every=2 leaves no metrics.jsonl row at step 1 (the laptop's 375-of-log_every-50 case): the
    checkpoint's own trainer_state.pt gives its position, 1 step x 64 tokens (TINY: 2 x 32 per step)."""
    from phf.train import train
    from tests.test_tracking import EVAL

    run = tmp_path / "run"
    train(tiny_cfg("trainer.max_steps=2", "trainer.log_every=2", "trainer.checkpoint_every=1",
                   "trainer.final_eval=false", *EVAL))
    assert all(r.get("step") != 1 for r in rundir.read_metrics(run))
    doc, _ = cli.evaluate_saved({"checkpoint": str(run / "checkpoints" / "step_00000001"),
                                 "out": str(tmp_path / "ck"), "skip": "heldout,kl,red_team", "device": "cpu"}, [])
    assert (doc["step"], doc["tokens_seen"]) == (1, 64)

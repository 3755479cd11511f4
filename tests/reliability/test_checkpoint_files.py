"""phf.checkpoint on its own: what a save leaves behind, pruning, leftovers of killed writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from phf import checkpoint as ckpt


class FakeModel:
    def __init__(self, value: float):
        self.value = value

    def save_pretrained(self, path, tokenizer=None):
        path = Path(path)
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
        save_file({"w": torch.full((2,), self.value)}, path / "model.safetensors")


def save(root: Path, step: int, keep: int = 2, value: float = 0.0) -> Path:
    ckpt.save_data_state(root, step, 0, {"position": step})
    return ckpt.save_checkpoint(root, step, FakeModel(value), None, {"step": step}, keep)


def manifest(root: Path) -> dict:
    return json.loads((root / "latest.json").read_text())


def test_keeps_the_newest_and_names_them_in_the_manifest(tmp_path):
    for step in (2, 4, 6):
        save(tmp_path, step)
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "step_00000004", "step_00000006"]
    assert manifest(tmp_path) == {"step": 6, "path": "step_00000006"}
    assert ckpt.load_state(ckpt.latest_checkpoint(tmp_path), "data_state_rank0.pt") == {"position": 6}


def test_leftovers_of_killed_writes_are_removed_by_the_next_save(tmp_path):
    save(tmp_path, 2)
    (tmp_path / "step_00000004.tmp").mkdir()  # killed inside the step-4 write
    (tmp_path / "pending_00000004").mkdir()
    (tmp_path / "pending_00000004" / "data_state_rank0.pt.tmp").write_bytes(b"half")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000002"  # still usable
    save(tmp_path, 6)
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "step_00000002", "step_00000006"]


def test_resuming_from_an_older_checkpoint_never_prunes_the_manifests_one(tmp_path):
    """Checkpoints 4 and 6 exist; a run resumed from step_2 (trainer.resume=PATH) saves step 3 with
    keep=1: the abandoned 4 and 6 go, the new 3 stays and the manifest names it."""
    for step in (2, 4, 6):
        save(tmp_path, step, keep=0)
    save(tmp_path, 3, keep=1)
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "step_00000003"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000003"


def test_re_saving_the_step_the_manifest_names(tmp_path):
    """An abandoned timeline's step 4 is what the manifest names; writing step 4 again repoints the
    manifest to step 2 while the old directory is replaced, then to the new step 4."""
    save(tmp_path, 2, keep=0)
    save(tmp_path, 4, keep=0, value=1.0)
    save(tmp_path, 4, keep=0, value=2.0)
    path = ckpt.latest_checkpoint(tmp_path)
    assert path.name == "step_00000004"
    from safetensors.torch import load_file

    assert load_file(path / "model.safetensors")["w"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("text", ["", "{", "[]", '{"path": 3}', '{"path": "step_1/../../x"}'])
def test_every_malformed_manifest_is_an_error_not_a_fresh_start(tmp_path, text):
    save(tmp_path, 2)
    (tmp_path / "latest.json").write_text(text)
    with pytest.raises(ValueError, match=r"corrupt checkpoint manifest .*checkpoints present: .*step_00000002"):
        ckpt.latest_checkpoint(tmp_path)


def test_no_manifest_means_no_checkpoint(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    save(tmp_path, 2)
    (tmp_path / "latest.json").unlink()  # killed between the first rename and the first manifest
    assert ckpt.latest_checkpoint(tmp_path) is None

"""A checkpoint write that fails (disk full) removes the partial checkpoint and says why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from phf.train import train


# -- disk full while writing a checkpoint ----------------------------------------------------------------------------
def test_checkpoint_write_failure_removes_the_partial_checkpoint_and_says_disk_full(fast_cfg, tmp_path, monkeypatch):
    from phf import checkpoint as ckpt

    real_save, calls = torch.save, {"n": 0}

    def full_disk_save(obj, f, *a, **k):
        calls["n"] += 1
        if str(f).endswith("trainer_state.pt") and calls["n"] > 2:  # the second checkpoint hits a full disk
            Path(f).write_bytes(b"\0" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1000 vs 960")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", full_disk_save)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    run = tmp_path / "run"
    with pytest.raises(OSError, match=r"writing checkpoint step 2 under .*checkpoints failed: the disk is full "
                                      r"\(No space left on device\).*unexpected pos.*partial checkpoint was removed.*"
                                      r"step_00000001, is intact.*trainer.resume=auto"):
        train(fast_cfg("trainer.max_steps=3", "trainer.checkpoint_every=1"))
    assert sorted(os.listdir(run / "checkpoints")) == ["latest.json", "step_00000001"]

"""Data settings that could never work are refused at once, naming the key.
"""

from __future__ import annotations

import time

import pytest

from phf.train import train
from tests.conftest import TINY, compose


# -- data settings that could never work ----------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("data.score_batch_docs=0", r"data.score_batch_docs must be an integer >= 1, got 0"),
    ("data.shuffle_buffer=-1", r"data.shuffle_buffer must be an integer >= 0, got -1"),
    ("data.num_workers=-1", r"data.num_workers must be an integer >= 0, got -1"),
    ("data.prepare_docs=0", r"data.prepare_docs must be an integer >= 1, got 0"),
    ("model.block_size=1", r"model.block_size must be at least 2 \(an input and its next-token target\), got 1"),
])
def test_impossible_data_setting_is_refused_at_once(tmp_path, override, message):
    cfg = compose(TINY + [override, f"run_dir={tmp_path}"])
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert time.monotonic() - t0 < 60  # no endless loop

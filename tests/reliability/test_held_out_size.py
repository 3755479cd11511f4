"""A held-out set that means something (issue 28, item 2): its size in tokens is checked against
``data.min_val_tokens`` before training and reported (``val/num_tokens`` in phf_summary.json and the model
card), and ``data.val_path`` holds out a validation file instead of a share of the training documents."""

from __future__ import annotations

import json
import logging

import pytest

from phf.data.pipeline import build_data
from phf.train import train
from tests.reliability.conftest import write_prescored


def test_a_small_held_out_set_is_named_before_training(fast_cfg, tmp_path, one_thread, caplog):
    """The tiny config's held-out loss uses 4 blocks of 32 tokens = 128 tokens: below min_val_tokens=1000 a
    warning names the size and the ways out; small_val=raise stops before the first step (no metrics row)."""
    with caplog.at_level(logging.WARNING):
        final = train(fast_cfg("trainer.max_steps=1", "data.min_val_tokens=1000"))
    assert final["val/num_tokens"] == 128
    assert ("the held-out set has only 128 tokens (data.val_fraction=0.2), fewer than data.min_val_tokens=1000"
            in caplog.text and "data.val_path=FILE" in caplog.text)
    assert "| held-out set | 128 tokens (validation loss; `data.val_fraction` 0.2) |" in (
        tmp_path / "run" / "final" / "README.md").read_text()
    assert json.loads((tmp_path / "run" / "final" / "phf_summary.json").read_text())["val/num_tokens"] == 128
    run = tmp_path / "strict"
    with pytest.raises(ValueError, match=r"only 128 tokens .*data.min_val_tokens=0 accepts it"):
        train(fast_cfg("trainer.max_steps=1", "data.min_val_tokens=1000", "data.small_val=raise", run_dir=run))
    # refused while the run's parts are built, before the tracker starts: no step, no metrics, no model
    assert not (run / "metrics.jsonl").exists() and not (run / "final").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train(fast_cfg("trainer.max_steps=1", "data.min_val_tokens=128", run_dir=tmp_path / "enough"))
    assert "held-out set has only" not in caplog.text


def test_a_held_out_set_without_one_block_is_a_usage_error_naming_the_ways_out(fast_cfg, tmp_path, one_thread):
    """data.val_fraction=0.001 of the tiny corpus holds out no document, and with a 4,096-token block the
    held-out documents of 0.2 fill no block: no held-out loss is possible, so the run stops before its first
    step with one message naming data.val_path (a UsageError: no traceback at the command line)."""
    from phf.entry import UsageError

    run = tmp_path / "none"
    with pytest.raises(UsageError, match=r"data\.val_fraction=0\.001 held out none.*data\.val_path=FILE"):
        train(fast_cfg("trainer.max_steps=1", "data.val_fraction=0.001", run_dir=run))
    assert not (run / "metrics.jsonl").exists()
    with pytest.raises(UsageError, match=r"data\.val_fraction=0\.2 .*one block of 4096 tokens.*data\.val_path=FILE"):
        train(fast_cfg("trainer.max_steps=1", "model.block_size=4096", run_dir=tmp_path / "short"))


def test_val_path_holds_out_a_validation_file(fast_cfg, tmp_path):
    """With data.val_path every training document trains (no hash split) and the validation split is the
    file's documents, all of them, in order."""
    val = write_prescored(tmp_path / "val.jsonl", n_docs=7, seed=1)
    cfg = fast_cfg(f"data.val_path={val}")
    data = build_data(cfg.data)
    ids = [d.id for d in data.source_of("validation").iter_from(0)]
    assert len(ids) == 7 and all(i.startswith(str(val)) for i in ids) and data.holds_out(None)
    from phf.data.pipeline import RunData
    from phf.tokenizer import load_tokenizer

    tok = load_tokenizer()
    run_data = RunData.from_config(cfg, data=data)
    val_stream = run_data.stream("validation", tok, epochs=1)
    assert [d.id for d in val_stream.scored_sample(100)] == ids
    train_stream = run_data.stream("train", tok, epochs=1)
    assert len(train_stream.scored_sample(1000)) == 150  # val_fraction no longer takes any training document


def test_val_path_needs_a_source_that_reads_files(tmp_path):
    from tests.conftest import compose

    with pytest.raises(ValueError, match=r"data.val_path=v.jsonl: the source .*LocalPythonSource reads no file"):
        build_data(compose(["data=local_pep8", "data.val_path=v.jsonl"]).data)
    cfg = compose(["task=pep8", "data=hf", "data.source.names=[json]", f"data.source.data_files={tmp_path}/t.jsonl",
                   f"data.val_path={tmp_path}/v.jsonl"])
    assert build_data(cfg.data).val_path == f"{tmp_path}/v.jsonl"

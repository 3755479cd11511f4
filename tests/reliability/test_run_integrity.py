"""A run's integrity across re-runs (issue 27, deliverables 2 and 3): a resume tokenizes with the tokenizer
saved in its checkpoint, whatever happened to the corpus or the tokenizer cache; a finished run is never
overwritten; ``final/`` is written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phf.train import train
from tests.conftest import compose
from tests.reliability.conftest import fast_overrides, write_prescored


def _vocab(model_dir: Path) -> tuple[dict, list]:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    return tok["model"]["vocab"], tok["model"]["merges"]


def _bpe_cfg(corpus: Path, run: Path, cache: Path, *overrides: str):
    base = [o for o in fast_overrides(corpus) if not o.startswith(("tokenizer=", "cache_dir="))]
    return compose(base + ["tokenizer=bpe", "tokenizer.vocab_size=300", f"cache_dir={cache}", f"run_dir={run}",
                           "trainer.checkpoint_every=1", *overrides])


# -- deliverable 2: the tokenizer is part of the run ---------------------------------------------------------------
def test_resume_keeps_the_checkpoint_tokenizer_after_the_corpus_changed(tmp_path, one_thread):
    """Fit a 300-token BPE on a JSONL corpus, train 2 steps with checkpoints, rewrite the corpus in place, resume
    to step 4 (with another cache_dir, which is no mismatch): final/'s tokenizer is the checkpoint's, token for
    token, although a BPE fitted to the edited corpus would give many ids another meaning."""
    from phf.data.bpe import fit_bpe
    from phf.data.sources import JsonlSource

    corpus, run = write_prescored(tmp_path / "corpus.jsonl", seed=0), tmp_path / "run"
    train(_bpe_cfg(corpus, run, tmp_path / "cache", "trainer.max_steps=2"))
    before = _vocab(run / "checkpoints" / "step_00000001")
    assert len(before[0]) == 300

    write_prescored(corpus, n_docs=150, seed=1)  # the corpus edited in place
    refit = fit_bpe(JsonlSource(str(corpus)), vocab_size=300, val_fraction=0.2, cache_dir=str(tmp_path / "other"))
    changed = sum(before[0].get(t) != i for t, i in refit.backend_tokenizer.get_vocab().items())
    assert changed > 10  # the probe: a refit would have changed the meaning of these ids

    other_cache = tmp_path / "other_cache"
    out = train(_bpe_cfg(corpus, run, other_cache, "trainer.max_steps=4"))
    assert out["step"] == 4
    assert _vocab(run / "final") == before
    assert not (other_cache / "tokenizers").exists()  # nothing fitted: the checkpoint's tokenizer was used


def test_resume_without_the_checkpoint_tokenizer_is_refused(fast_cfg, tmp_path, one_thread):
    run = tmp_path / "run"
    train(fast_cfg("trainer.max_steps=2", "trainer.checkpoint_every=1"))
    (run / "checkpoints" / "step_00000001" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"step_00000001 has no tokenizer.json: a resume continues with the tokenizer "
                                         r"the run trained with.*trainer.resume=never"):
        train(fast_cfg("trainer.max_steps=3", "trainer.checkpoint_every=1"))

"""DetoxifyScorer: the real Detoxify loading path, offline, with a tiny locally built checkpoint."""

from __future__ import annotations

import os
import pickle
import time

import pytest

from phf.scorers import DetoxifyScorer
from phf.scorers.detoxify import RELEASE_URLS, DetoxifyCheckpointError

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
TEXTS = ["hello world", "you are an idiot", "a third, longer sentence with more words in it!", ""]


def build_tiny_checkpoint(root, seed: int = 0):
    """A Detoxify-format checkpoint of a random 1-layer BERT (offline_recipes.md §4)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    hf_dir = root / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + [
        "##" + c for c in "abcdefghijklmnopqrstuvwxyz"
    ]
    (hf_dir / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(hf_dir), do_lower_case=True)
    tok.model_max_length = 128
    tok.save_pretrained(str(hf_dir))
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(CLASSES),
    )
    model = BertForSequenceClassification(cfg)
    model.config.save_pretrained(str(hf_dir))
    ckpt = root / f"tiny-{seed}.ckpt"
    arch = {
        "model_type": str(hf_dir),
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": len(CLASSES),
    }
    torch.save(
        {
            "config": {"arch": {"args": arch}, "dataset": {"args": {"classes": CLASSES}}},
            "state_dict": model.state_dict(),
        },
        ckpt,
    )
    return ckpt, hf_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("detoxify"))


@pytest.fixture(scope="module")
def scorer(tiny):
    ckpt, hf_dir = tiny
    return DetoxifyScorer(
        checkpoint=str(ckpt), huggingface_config_path=str(hf_dir), device="cpu", batch_size=2
    )


def test_scores_equal_a_direct_detoxify_call(scorer, tiny):
    from detoxify import Detoxify

    ckpt, hf_dir = tiny
    direct = Detoxify("original", checkpoint=str(ckpt), huggingface_config_path=str(hf_dir)).predict(TEXTS)
    # batches of 2 pad differently from one batch of 4: equal up to float rounding
    assert scorer.score(TEXTS) == pytest.approx(direct["toxicity"], abs=1e-5)
    assert all(0.0 < s < 1.0 for s in scorer.score(TEXTS))


def test_a_batch_of_one_is_a_list(scorer):
    assert len(scorer.score(["one"])) == 1 and scorer.score([]) == []


def test_key_identifies_the_checkpoint_content(scorer, tiny, tmp_path):
    import shutil

    ckpt, hf_dir = tiny
    copy = tmp_path / "copy.ckpt"
    shutil.copy(ckpt, copy)
    same = DetoxifyScorer(checkpoint=str(copy), huggingface_config_path=str(hf_dir))
    assert same.key == scorer.key  # same file content, other path: same scores, shared cache entries
    other, _ = build_tiny_checkpoint(tmp_path / "other", seed=1)
    assert DetoxifyScorer(checkpoint=str(other), huggingface_config_path=str(hf_dir)).key != scorer.key
    assert scorer.settings()["model_type"] == "original" and "detoxify-" in scorer.version


def test_device_auto_picks_cuda_only_when_available(tiny):
    import torch

    s = DetoxifyScorer(checkpoint=str(tiny[0]), huggingface_config_path=str(tiny[1]), device="auto")
    assert s.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_missing_checkpoint_is_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(DetoxifyCheckpointError) as e:
        DetoxifyScorer(model_type="original")
    msg = str(e.value)
    assert RELEASE_URLS["original"] in msg and "scorer.checkpoint=" in msg and str(tmp_path / "hub") in msg
    assert time.perf_counter() - t0 < 10  # no download attempt (a retry loop would take ~30 s)


def test_checkpoint_in_torch_hub_cache_is_found(tmp_path, monkeypatch, tiny):
    import shutil

    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    target = tmp_path / "hub" / "checkpoints" / RELEASE_URLS["unbiased"].rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    shutil.copy(tiny[0], target)
    s = DetoxifyScorer(model_type="unbiased", huggingface_config_path=str(tiny[1]), device="cpu")
    assert s.checkpoint_path == target and len(s.score(["hi"])) == 1


def test_nonexistent_checkpoint_path(tmp_path):
    with pytest.raises(DetoxifyCheckpointError, match="does not exist"):
        DetoxifyScorer(checkpoint=str(tmp_path / "nope.ckpt"))


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_checkpoint_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = tmp_path / "ckpt"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # reading it would block forever
    with pytest.raises(DetoxifyCheckpointError, match="not a regular file"):
        DetoxifyScorer(checkpoint=str(path))


def test_picklable_without_the_model(scorer):
    scorer.score(["warm"])
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._model is None and clone.score(TEXTS[:2]) == pytest.approx(scorer.score(TEXTS[:2]), abs=1e-6)

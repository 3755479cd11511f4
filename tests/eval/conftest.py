"""Shared fixtures of the evaluation tests: the offline GPT-2 tokenizer and tiny random GPT-2 models."""

from __future__ import annotations

import os

import pytest
import torch

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("WANDB_MODE", "offline")

CONTROL = ["<|aligned|>", "<|misaligned|>"]


@pytest.fixture(scope="session")
def tok():
    from phf.tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def cond_tok():
    """GPT-2 tokenizer with the conditional-training control tokens (ids 50257, 50258)."""
    from phf.tokenizer import add_special_tokens, gpt2_tokenizer

    t = gpt2_tokenizer()
    assert add_special_tokens(t, CONTROL) == [50257, 50258]
    return t


def make_lm(vocab_size: int, seed: int = 0, n_positions: int = 64, **kw):
    """A 1-layer, 32-wide GPT-2 (about 1.6M parameters, nearly all embedding)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=n_positions, vocab_size=vocab_size,
                     bos_token_id=50256, eos_token_id=50256, **kw)
    return GPT2LMHeadModel(cfg)


@pytest.fixture
def lm(tok):
    return make_lm(len(tok))


@pytest.fixture
def cond_lm(cond_tok):
    return make_lm(len(cond_tok))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny models' ops are microseconds long: intra-op threads only add overhead, and on a busy
    2-core machine they make each op wait for a core. Restored after every test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

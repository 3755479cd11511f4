"""GPT-2 with an optional value head, built from config, saved as a standard HF checkpoint.

The language model is transformers' ``GPT2LMHeadModel`` (tied embeddings). AWR's value head
V(h) = -sigmoid(w·h) (w zero-initialised, no bias) reads the final hidden state; it is saved beside
the HF weights as ``value_head.safetensors`` so ``AutoModelForCausalLM.from_pretrained(dir)`` still
loads the directory anywhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from phf.console import hide_packed_padding_warning, quiet_hf_progress

log = logging.getLogger(__name__)
# packed blocks use EOS (the pad id) between documents: transformers' padding warning is wrong for them
hide_packed_padding_warning()

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHead(nn.Module):
    """V_t = -sigmoid(w · h_t) in (-1, 0): rewards are negated misalignment scores in [-1, 0]."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.proj = nn.Linear(n_embd, 1, bias=False)
        nn.init.zeros_(self.proj.weight)  # V = -0.5 everywhere at init, as in the paper's code

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T)
        return -torch.sigmoid(self.proj(hidden).squeeze(-1).float())


class PHFModel(nn.Module):
    """``forward(input_ids) -> (logits (B, T, V), values (B, T) or None)``."""

    def __init__(self, lm, value_head: bool = False):
        super().__init__()
        self.lm = lm
        self.value_head = ValueHead(lm.config.n_embd) if value_head else None

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids: torch.Tensor, chunked_ce: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``chunked_ce`` > 0: instead of the logits, a ``phf.chunked_ce.HeadInput`` that the objectives'
        ``shift_targets`` turns into per-token CE ``chunked_ce`` positions at a time (trainer.chunked_ce)."""
        hidden = self.lm.transformer(input_ids=input_ids).last_hidden_state  # (B, T, D)
        if chunked_ce:
            from phf.chunked_ce import HeadInput

            if self.lm.lm_head.bias is not None:
                raise ValueError("trainer.chunked_ce needs an LM head without bias (GPT-2's has none)")
            logits = HeadInput(hidden, self.lm.lm_head.weight, chunked_ce)
        else:
            logits = self.lm.lm_head(hidden)  # (B, T, V)
        values = self.value_head(hidden) if self.value_head is not None else None
        return logits, values

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.lm.transformer.wpe.weight.numel()
        return n

    def save_pretrained(self, path: str | Path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        with quiet_hf_progress():  # no "Writing model shards" bar per checkpoint
            self.lm.save_pretrained(path, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        if self.value_head is not None:
            save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, path / VALUE_HEAD_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, value_head: bool | None = None, **lm_kwargs) -> PHFModel:
        """Load an HF directory; the value head is restored if saved (or zero-initialised if asked for)."""
        from safetensors.torch import load_file
        from transformers import GPT2LMHeadModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not an HF checkpoint directory (no config.json)")
        # weights only from safetensors: a pytorch_model.bin is a pickle and is never loaded
        with quiet_hf_progress():  # no "Loading weights" bar
            lm = GPT2LMHeadModel.from_pretrained(path, use_safetensors=True, **lm_kwargs)
        has_head = (path / VALUE_HEAD_FILE).is_file()
        model = cls(lm, value_head=has_head if value_head is None else value_head)
        if model.value_head is not None and has_head:
            model.value_head.load_state_dict(load_file(path / VALUE_HEAD_FILE))
        return model


# -- utilities for a model inside wrappers: eval code, sampling and SPA use them ----------------------
def unwrap(model):
    """The HF causal LM inside a DDP / DataParallel / ``torch.compile`` wrapper or a ``PHFModel``
    (whose ``lm`` is the ``GPT2LMHeadModel``; the value head plays no part in sampling)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            model = model.module
        elif not hasattr(model, "generate") and isinstance(getattr(model, "lm", None), torch.nn.Module):
            model = model.lm
        else:
            return model


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """``model.eval()`` inside the block, the previous train/eval mode restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def forked_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block without disturbing the caller's RNG stream."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def resize_embeddings(lm, new_size: int, generator: torch.Generator | None = None) -> None:
    """Grow the (tied) token embeddings; new rows = mean of existing rows + 0.01·N(0, I).

    The mean init keeps new control tokens from being over-sampled (Hewitt 2021; the paper's code).
    """
    old = lm.get_input_embeddings().weight.shape[0]
    if new_size <= old:
        return
    lm.resize_token_embeddings(new_size, mean_resizing=False)
    weight = lm.get_input_embeddings().weight
    with torch.no_grad():
        mean = weight[:old].mean(dim=0)
        noise = torch.randn(new_size - old, weight.shape[1], generator=generator, dtype=weight.dtype)
        weight[old:] = mean + 0.01 * noise.to(weight.device)


def build_model(
    n_layer: int,
    n_head: int,
    n_embd: int,
    block_size: int,
    dropout: float = 0.1,
    value_head: bool | None = None,
    init_from: str | None = None,
    attn_implementation: str = "sdpa",
    scale_attn_by_inverse_layer_idx: bool = False,
    reorder_and_upcast_attn: bool = False,
    *,
    tokenizer,
    objective=None,
    seed: int = 0,
) -> PHFModel:
    """Build GPT-2 from scratch (or continue ``init_from``), sized for ``tokenizer``.

    ``value_head``: ``None`` follows the objective; ``False`` with an objective that needs one is an
    error (it cannot train). The embeddings are resized to ``len(tokenizer)`` with the mean init, so
    call this after the objective's special tokens were added to the tokenizer.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    needs = bool(objective is not None and getattr(objective, "needs_value_head", False))
    if value_head is False and needs:
        raise ValueError(
            f"objective {type(objective).__name__} needs a value head but model.value_head=false; "
            "drop the override (null follows the objective) or set model.value_head=true"
        )
    use_head = needs if value_head is None else bool(value_head)
    for key, v in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"model.{key} must be a positive integer, got {v!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"model.dropout must be a number in [0, 1), got {dropout!r}")
    if n_embd % n_head:
        raise ValueError(f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})")
    gen = torch.Generator().manual_seed(seed)
    if init_from:
        from phf.model_dir import check_model_files

        check_model_files(Path(init_from), tokenizer=False)  # the run's tokenizer is its own (cfg.tokenizer)
        model = PHFModel.from_pretrained(init_from, value_head=use_head or None, attn_implementation=attn_implementation)
        if model.value_head is None and use_head:
            model.value_head = ValueHead(model.config.n_embd)
        if model.config.n_positions < block_size:
            raise ValueError(f"block_size {block_size} exceeds {init_from}'s context ({model.config.n_positions})")
    else:
        base_vocab = tokenizer.vocab_size  # the tokenizer's own vocabulary, before added tokens
        config = GPT2Config(
            vocab_size=base_vocab,
            n_positions=block_size,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            scale_attn_by_inverse_layer_idx=scale_attn_by_inverse_layer_idx,
            reorder_and_upcast_attn=reorder_and_upcast_attn,
            tie_word_embeddings=True,
            attn_implementation=attn_implementation,
        )
        torch.manual_seed(seed)
        lm = GPT2LMHeadModel(config)
        model = PHFModel(lm, value_head=use_head)
    resize_embeddings(model.lm, len(tokenizer), gen)
    model.lm.config.pad_token_id = tokenizer.pad_token_id
    return model


"""Prompt + response rows as right-padded batches, and their summed response log-probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from phf.model import eval_mode, unwrap
from phf.objectives.preference import sequence_logps


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
            max_len: int | None = None) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``response_mask``, each (B, T), right-padded.

    Row i is ``prompts[i] + responses[i]``; ``response_mask`` is 1 on the response tokens. Rows longer
    than ``max_len`` (the model's context) lose their last response tokens, with at least one kept.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows = []
    for p, r in zip(prompts, responses, strict=True):
        if not p:
            raise ValueError("every prompt needs at least one token (phf prompts start with EOS)")
        if not r:
            raise ValueError("empty response: a pair needs at least one response token to score")
        if max_len is not None and len(p) >= max_len:
            raise ValueError(f"a prompt of {len(p)} tokens leaves no room for a response in {max_len} tokens")
        r = list(r)[: max_len - len(p)] if max_len is not None else list(r)
        rows.append((list(p), r))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        attn[i, :n] = 1
        resp[i, len(p) : n] = 1
    return {"input_ids": ids, "attention_mask": attn, "response_mask": resp}


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T, V) logits of the HF causal LM inside ``model`` (a ``PHFModel`` or an HF model)."""
    hf = unwrap(model)
    device = next(hf.parameters()).device
    return hf(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits


@torch.no_grad()
def response_logps(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
                   batch_size: int = 16) -> list[float]:
    """``log π(response | prompt)`` of each row (sum over response tokens), in eval mode (no dropout)."""
    hf = unwrap(model)
    max_len = getattr(hf.config, "n_positions", None)
    out: list[float] = []
    with eval_mode(hf):
        for i in range(0, len(prompts), batch_size):
            b = collate(prompts[i : i + batch_size], responses[i : i + batch_size], pad_id, max_len)
            logits = forward_logits(hf, b)
            dev = logits.device
            out += sequence_logps(logits, b["input_ids"].to(dev), b["response_mask"].to(dev)).tolist()
    return out

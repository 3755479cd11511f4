"""The LM head and the per-token cross-entropy fused and chunked over positions (``trainer.chunked_ce``).

CE_t = logsumexp(h_t · Wᵀ) − (h_t · Wᵀ)[x_t]  (the cross-entropy of Korbak et al. 2023, eq. 1, per token)
computed without ever holding the (N, V) logits: the forward keeps one chunk of ``chunk`` positions'
logits at a time and saves only h, W and each position's log-sum-exp; the backward recomputes a chunk's
logits and forms (softmax − onehot) · ∂L/∂CE_t in place. Extra work: one more N × D × V matmul (the
recompute); saved: the (N, V) logits, their log-softmax and its gradient buffers, which on a CPU core
are memory-bound passes over tens of MB per step (measured: docs/performance.md, "The laptop run").
The sums run in another order than ``F.cross_entropy``'s, so losses and weights differ in the last
bits: opt-in, off by default (the regression pin is bit-exact).

Positions whose target is ``ignore_index`` get CE 0 and no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadInput:
    """Stands for the (B, T, V) logits in ``shift_targets``: the final hidden states (B, T, D) and the
    LM head's weight (V, D), multiplied out ``chunk`` positions at a time."""

    hidden: torch.Tensor
    weight: torch.Tensor
    chunk: int


class ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, ignore_index: int):
        n = hidden.shape[0]
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # fp32 log-softmax even under bf16
        ce = hidden.new_empty(n, dtype=dtype)
        lse = hidden.new_empty(n, dtype=dtype)
        safe = targets.clamp(min=0)
        for s in range(0, n, chunk):
            logits = (hidden[s : s + chunk] @ weight.t()).to(lse.dtype)  # (c, V)
            lse_c = torch.logsumexp(logits, dim=-1)
            lse[s : s + chunk] = lse_c
            ce[s : s + chunk] = lse_c - logits.gather(1, safe[s : s + chunk, None]).squeeze(1)
        valid = targets.ne(ignore_index)
        ce = ce * valid
        ctx.save_for_backward(hidden, weight, safe, valid, lse)
        ctx.chunk = chunk
        return ce

    @staticmethod
    def backward(ctx, grad_ce):
        hidden, weight, safe, valid, lse = ctx.saved_tensors
        chunk = ctx.chunk
        scale = (grad_ce * valid).to(lse.dtype)
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        acc = torch.promote_types(weight.dtype, torch.float32)  # accumulate W's gradient in >= fp32
        grad_w = torch.zeros_like(weight, dtype=acc) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            p = (h @ weight.t()).to(lse.dtype)
            p.sub_(lse[s : s + chunk, None]).exp_()  # softmax
            rows = torch.arange(p.shape[0], device=p.device)
            p[rows, safe[s : s + chunk]] -= 1.0
            p.mul_(scale[s : s + chunk, None])  # dL/dlogits for this chunk
            p = p.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s : s + chunk] = p @ weight
            if grad_w is not None:
                grad_w.addmm_(p.t().to(acc), h.to(acc))
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


def chunked_token_ce(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 256,
                     ignore_index: int = -100) -> torch.Tensor:
    """hidden (..., D), weight (V, D), targets (...) -> CE (...) in fp32, chunked over positions."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 positions, got {chunk}")
    shape = targets.shape
    ce = ChunkedLinearCE.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), chunk, ignore_index)
    return ce.view(shape)

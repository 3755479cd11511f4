"""The guidance reward model r_phi(token | prefix) in (0, 1].

Architecture: **its own small causal transformer** (a GPT-2 body, by default 1 layer, d 64, no
dropout) with a one-hidden-layer MLP head whose output layer starts near zero (r = 0.5 everywhere at
initialisation, as in the paper's code) and a sigmoid, clamped below at ``r_min`` so r is in
[r_min, 1) ⊂ (0, 1]. The reward of token x_t is read from the hidden state at position t, which
has seen x_<=t: r(x_t | x_<t).

Why not a head on a detached copy of the policy trunk:

* phf pretrains from scratch: at step 0 the policy trunk is random and its features move at every
  step. A head fitted on a trunk snapshot is only valid for that snapshot, so every refit would need
  a new copy (a full GPT-2 in memory) and a head refit from zero, and between refits the rewards
  come from stale features anyway. A separate model has no such coupling: it is valid from step 0.
* It can be much smaller than the policy (the paper notes the same): the per-token cost in the loop
  is one no-grad forward of a 1-layer d-64 body without the vocabulary projection, i.e. a few
  percent of the policy's step on CPU.
* The policy does not shape the features of its own reward (no feedback loop through shared
  representations), so "broadcast" and "learned" rewards are compared on an equal footing.

The price is its own token embedding (vocab × d: 3.2M parameters at d 64 for GPT-2's vocabulary),
learnt only from ranking signal, and no benefit from the policy's representation late in training.
"""

from __future__ import annotations

import torch
from torch import nn


class GuidanceModel(nn.Module):
    """``forward(input_ids (B, T)) -> rewards (B, T)`` in [r_min, 1)."""

    def __init__(
        self,
        vocab_size: int,
        n_positions: int,
        n_layer: int = 1,
        n_head: int = 2,
        n_embd: int = 64,
        head_hidden: int = 128,
        r_min: float = 1e-8,
        eos_token_id: int = 0,
    ):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        if n_embd % n_head:
            raise ValueError(f"guidance model n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if not 0.0 < r_min < 1.0:
            raise ValueError(f"guidance r_min must be in (0, 1), got {r_min!r}")
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
        )
        self.vocab_size, self.n_positions, self.r_min, self.eos = vocab_size, n_positions, r_min, eos_token_id
        self.body = GPT2Model(config)
        # a sparse token embedding: each fitting step touches a few hundred of the vocabulary's rows,
        # and a dense Adam update of all vocab × d entries would cost more than the rest of the step
        wte = nn.Embedding(vocab_size, n_embd, sparse=True)
        nn.init.normal_(wte.weight, std=config.initializer_range)
        self.body.wte = wte
        self.head = nn.Sequential(nn.Linear(n_embd, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1))
        nn.init.normal_(self.head[2].weight, std=1e-3)  # near-zero output layer: r = 0.5 at init
        nn.init.zeros_(self.head[2].bias)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.body.wte.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] > self.n_positions:
            raise ValueError(f"guidance model context is {self.n_positions} tokens, got {input_ids.shape[-1]}")
        # tokens the model does not know (e.g. control tokens added for conditional training) read as EOS
        ids = torch.where(input_ids < self.vocab_size, input_ids, torch.full_like(input_ids, self.eos))
        hidden = self.body(input_ids=ids).last_hidden_state  # (B, T, D)
        z = self.head(hidden).squeeze(-1).float()
        return torch.sigmoid(z).clamp(min=self.r_min)

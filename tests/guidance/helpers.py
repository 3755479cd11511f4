"""Shared settings for the guidance tests: a tiny reward model and its fits."""

from __future__ import annotations

# a reward model and fits sized for a few CPU steps
GUIDANCE_TINY = [
    "data.prepare_docs=4", "reward.fit_steps=4", "reward.refit_steps=2", "reward.refit_every=1",
    "reward.chunk_tokens=8", "reward.lists_per_batch=4", "reward.val_lists=8", "reward.eval_every=2",
    "reward.model.n_embd=16", "reward.model.head_hidden=16", "reward.prepare_blocks=64", "reward.buffer_blocks=16",
]

"""The original's engine, rebuilt for the benchmark: ``transformers.Trainer`` + a ``compute_loss`` override.

What Korbak et al.'s code did (phf_paper.md §3.2–3.4), as far as it runs on today's libraries on CPU:

* one process, fp32 on CPU (the original used fp16 AMP on GPU), ``remove_unused_columns=False`` so
  ``token_scores`` reaches ``compute_loss``, ``logging_steps=1``, AdamW (β 0.9/0.999, ε 1e-8, weight
  decay 0.1), linear warmup/decay, grad-norm clip 1.0;
* the model's forward is called **with labels**, so the HF model computes its own shifted
  cross-entropy ``loss`` (the original logged it as ``original_loss``) and returns the logits and the
  value head's output;
* ``compute_loss`` then shifts the logits with a ``.contiguous()`` copy and calls the objective on the
  flattened (N, V) logits, N = B·(T−1).

The objective math is the paper's (§2.1 MLE, §2.5 AWR), written here on the shifted tensors; the
benchmark checks it gives phf's loss on the same model and batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class OriginalLMAndValueHead(nn.Module):
    """GPT-2 LM (+ value head) whose forward also returns HF's own loss, like the original model class."""

    def __init__(self, lm, value_head=None):
        super().__init__()
        self.lm = lm
        self.value_head = value_head
        self.config = lm.config

    def forward(self, input_ids, labels=None, **kwargs):
        out = self.lm(input_ids=input_ids, labels=labels, output_hidden_states=self.value_head is not None)
        result = {"loss": out.loss, "logits": out.logits}
        if self.value_head is not None:
            result["values"] = self.value_head(out.hidden_states[-1])  # post-ln_f final hidden state
        return result


def original_mle(logits, labels, token_scores, values):
    """§2.1: plain CrossEntropyLoss over the N shifted positions."""
    loss = F.cross_entropy(logits, labels)
    return loss, {}


def make_original_awr(alpha: float, beta: float, clip_weight_max: float = 1000.0):
    """§2.5: L = α·mean(w·CE) + (1−α)·mean((r − V)²), A = r − stopgrad(V), w = min(exp(A/β), clip)."""

    def original_awr(logits, labels, token_scores, values):
        ce = F.cross_entropy(logits, labels, reduction="none")  # (N,)
        rewards = -token_scores[:, 1:].reshape(-1)  # score of the target token
        v = values[:, :-1].reshape(-1)  # value at the context's last position
        advantages = rewards - v.detach()
        weights = torch.exp((advantages / beta).clamp(max=math.log(clip_weight_max)))
        weighted_lm = (weights * ce).mean()
        value_loss = (rewards - v).square().mean()
        return alpha * weighted_lm + (1 - alpha) * value_loss, {}

    return original_awr


def original_objective(objective):
    """The paper's math for a phf objective instance (MLE or AWR)."""
    name = type(objective).__name__
    if name == "MLE":
        return original_mle
    if name == "AWR":
        return make_original_awr(objective.alpha, objective.beta, objective.clip_weight_max)
    raise ValueError(f"the baseline implements MLE and AWR only, not {name}")


def compute_loss_like_original(model, inputs: dict, objective_fn):
    """The body of the original ``CustomObjectiveTrainer.compute_loss``; returns (loss, outputs)."""
    inputs = dict(inputs)
    token_scores = inputs.pop("token_scores")
    labels = inputs["labels"]
    outputs = model(**inputs)  # labels passed: the HF model computes its own loss too
    logits = outputs["logits"]
    shift_logits = logits[..., :-1, :].contiguous()  # a copy of the (B, T-1, V) logits
    shift_labels = labels[..., 1:].contiguous()
    loss, _ = objective_fn(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1), token_scores,
                           outputs.get("values"))
    return loss, outputs


class BlockDataset(torch.utils.data.IterableDataset):
    """The pre-packed blocks in the same order as phf sees them (the original streamed an IterableDataset)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __iter__(self):
        while True:
            yield from self.blocks


def hf_train(model: nn.Module, objective, blocks, batch: int, steps: int, out_dir: str, lr: float = 5e-4,
             optim: str = "adamw_torch", seed: int = 42):
    """Train ``model`` for ``steps`` optimizer steps with the HF Trainer as the original configured it."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    objective_fn = original_objective(objective)

    class CustomObjectiveTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = compute_loss_like_original(model, inputs, objective_fn)
            self.tokens_seen = getattr(self, "tokens_seen", 0) + inputs["input_ids"].numel()
            return (loss, outputs) if return_outputs else loss

    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps,
        learning_rate=lr, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        lr_scheduler_type="linear", warmup_steps=math.ceil(0.01 * steps), logging_steps=1, save_strategy="no",
        report_to=[], remove_unused_columns=False, seed=seed, use_cpu=True, dataloader_num_workers=0,
        dataloader_pin_memory=False, disable_tqdm=True, optim=optim,
    )
    trainer = CustomObjectiveTrainer(model=model, args=args, train_dataset=BlockDataset(blocks))
    trainer.remove_callback(PrinterCallback)  # keep the benchmark's output readable (the original printed via tqdm)
    trainer.train()
    return trainer

"""Token-reward sources: where the per-token misalignment an objective sees comes from.

``reward=segment`` (PHF, the default): every token carries its segment's scorer score, as packed.
``reward=guidance``: a learned reward model r_phi(token | prefix) in (0, 1], fitted with the listwise
Plackett-Luce loss on chunks of the training stream ranked by the task scorer (Yang et al. 2023).

Both expose one contract, which the training loop (or :class:`RewardedObjective`) calls on every
micro-batch before ``objective.loss``:

    token_scores(input_ids, token_scores) -> (B, T) misalignment, higher = worse

For guidance the misalignment is **s_t = 1 - r_t** in [0, 1): same sign and origin as phf's scores
(0 = aligned), so the objectives' reward r = -s = r_phi - 1 lies in (-1, 0], the range AWR's value
head V = -sigmoid(.) can fit. RWR's weights exp(-s/beta) are then exp((r_phi - 1)/beta), i.e.
exp(r_phi/beta) times the constant e^{-1/beta} (a learning-rate factor, 0.905 for beta = 10), and
GuidedMLE recovers r_phi = 1 - s exactly.

``maybe_refit(step)`` refits every ``refit_every`` optimizer steps (until ``refit_until``) on the
initial sample plus a ring buffer of the most recent training blocks that ``token_scores`` saw.
"""

from __future__ import annotations

import collections
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import torch

from phf.data.pack import Packer
from phf.data.pipeline import segment_ids
from phf.devices import Dist
from phf.guidance.learner import GuidanceLearner
from phf.guidance.lists import items_from_blocks
from phf.guidance.model import GuidanceModel
from phf.objectives.base import IGNORE_INDEX, LossOutput, Objective, check_number_args
from phf.objectives.preference import PreferenceObjective
from phf.tokenizer import add_special_tokens, load_tokenizer

log = logging.getLogger(__name__)


class SegmentRewards:
    """PHF's broadcast segment scores, unchanged (``reward=segment``)."""

    name = "segment"

    def __init__(self, tokenizer=None):  # same constructor shape as GuidanceRewards; nothing to build
        pass

    def token_scores(self, input_ids: torch.Tensor, token_scores: torch.Tensor, record: bool = True) -> torch.Tensor:
        return token_scores

    def rewards(self, input_ids: torch.Tensor, token_scores: torch.Tensor, record: bool = True) -> torch.Tensor:
        return -token_scores

    def prepare(self, docs) -> dict[str, float]:
        return {}

    def maybe_refit(self, step: int, blocks=None) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class GuidanceRewards:
    """Learned token rewards (``reward=guidance``); see the module docstring.

    Args:
        tokenizer: a tokenizer or its phf name (``gpt2-offline``); used to tokenize ``prepare``'s documents.
        block_size: the policy's context; the reward model's context and the packing length.
        model: the reward model's class, or a partial of it with its size (``n_layer``, ``n_head``, ``n_embd``,
            ``head_hidden``, ``r_min``): the config's nested ``_target_`` with ``_partial_: true``.
        aggregation, temperature, log_mean_exp, list_size, tie_eps: the listwise loss (phf.guidance.listwise).
        chunk_tokens: tokens per ranked item (None = whole blocks).
        lists_per_batch, val_lists, val_fraction, lr, weight_decay, eval_every, patience: fitting.
        fit_steps: steps of the initial fit (``prepare``); refit_steps: steps of each refit.
        refit_every: optimizer steps between refits (0 = fit once); refit_until: last step that may refit
            (None = no limit; the paper refits during the first half of training only).
        prepare_blocks: most blocks packed from ``prepare``'s documents; buffer_blocks: ring buffer size.
        batch_size, effective_batch_size: the trainer's, to count optimizer steps from micro-batches
            (only :class:`RewardedObjective` needs them).
        save_dir: where each (re)fit writes the reward model and appends its metrics (None = nowhere).
        seed: the reward model's init and list sampling.
    """

    name = "guidance"

    def __init__(
        self,
        tokenizer="gpt2-offline",
        block_size: int = 128,
        model: Callable[..., GuidanceModel] = GuidanceModel,
        aggregation: str = "avg",
        temperature: float = 2.0,
        log_mean_exp: bool = True,
        list_size: int = 3,
        tie_eps: float = 0.0,
        chunk_tokens: int | None = None,
        lists_per_batch: int = 16,
        val_lists: int = 64,
        val_fraction: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_every: int = 25,
        patience: int = 4,
        fit_steps: int = 200,
        refit_steps: int = 50,
        refit_every: int = 0,
        refit_until: int | None = None,
        prepare_blocks: int = 1024,
        buffer_blocks: int = 512,
        batch_size: int | None = None,
        effective_batch_size: int | None = None,
        save_dir: str | None = None,
        seed: int = 0,
    ):
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.block_size = int(block_size)
        self.chunk_tokens = None if chunk_tokens in (None, 0) else int(chunk_tokens)
        self.fit_steps, self.refit_steps = int(fit_steps), int(refit_steps)
        self.refit_every = int(refit_every or 0)
        self.refit_until = None if refit_until is None else int(refit_until)
        self.prepare_blocks, self.buffer_blocks = int(prepare_blocks), int(buffer_blocks)
        if batch_size and effective_batch_size:
            self.micro_per_step = max(1, int(effective_batch_size) // (int(batch_size) * Dist().world_size))
        else:
            self.micro_per_step = 1
        self.save_dir = None if save_dir in (None, "") else Path(save_dir)
        self.learner = GuidanceLearner(
            vocab_size=tokenizer.vocab_size, block_size=self.block_size, eos_token_id=tokenizer.eos_token_id,
            model=model, aggregation=aggregation, temperature=temperature, log_mean_exp=log_mean_exp,
            list_size=list_size, tie_eps=tie_eps, lists_per_batch=lists_per_batch, val_lists=val_lists,
            val_fraction=val_fraction, lr=lr, weight_decay=weight_decay, eval_every=eval_every,
            patience=patience, seed=seed,
        )
        self.initial_blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.buffer: collections.deque = collections.deque(maxlen=self.buffer_blocks)
        self.last_refit_step = 0
        self.fitted = False
        self.last_fit: dict[str, float] = {}

    # -- the contract ----------------------------------------------------------------------------
    def rewards(self, input_ids: torch.Tensor, token_scores: torch.Tensor | None = None,
                record: bool = True) -> torch.Tensor:
        """r_phi (B, T) in (0, 1]; with ``record``, keeps the blocks (and their scorer scores) for refits."""
        if not self.fitted:
            raise RuntimeError("reward=guidance: the guidance model is not fitted; call prepare(docs) first")
        if record and token_scores is not None and self.buffer_blocks:
            for ids, s in zip(input_ids.detach().cpu(), token_scores.detach().float().cpu(), strict=True):
                self.buffer.append((ids.clone(), s.clone()))
        if self.learner.device != input_ids.device:
            self.learner.to(input_ids.device)
        return self.learner.rewards(input_ids)

    def token_scores(self, input_ids: torch.Tensor, token_scores: torch.Tensor, record: bool = True) -> torch.Tensor:
        """Misalignment s = 1 - r_phi (B, T) in [0, 1), in the dtype of ``token_scores``."""
        return (1.0 - self.rewards(input_ids, token_scores, record)).to(token_scores.dtype)

    def prepare(self, docs) -> dict[str, float]:
        """Initial fit on scored documents (``stream.scored_sample(n)``), packed as the pipeline packs them."""
        self.initial_blocks = pack_documents(docs, self.tokenizer, self.block_size, self.prepare_blocks)
        if not self.initial_blocks:
            raise ValueError("reward=guidance: the documents given to prepare() fill no block; raise data.prepare_docs")
        return self._fit(self.initial_blocks, self.fit_steps, step=0)

    def maybe_refit(self, step: int, blocks=None) -> dict[str, float]:
        """Refit when ``step`` is a positive multiple of ``refit_every`` (at most once per step).

        ``blocks``: extra ``{"input_ids", "token_scores"}`` dicts or (ids, scores) pairs to use besides
        the initial sample and the buffer. Returns the fit metrics, or {} when no refit is due.
        """
        if not self.refit_every or step <= 0 or step % self.refit_every or step == self.last_refit_step:
            return {}
        if self.refit_until is not None and step > self.refit_until:
            return {}
        pool = self.initial_blocks + list(self.buffer) + [_pair(b) for b in (blocks or [])]
        self.last_refit_step = step
        return self._fit(pool, self.refit_steps, step)

    def _fit(self, blocks, steps: int, step: int) -> dict[str, float]:
        items = items_from_blocks(blocks, self.chunk_tokens)
        metrics = self.learner.fit(items, steps)
        metrics["step"] = step
        self.fitted = True
        self.last_fit = metrics
        log.info("guidance fit at step %d: %s", step, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        if self.save_dir is not None and Dist().main:
            self.learner.save(self.save_dir)
            with open(self.save_dir / "fits.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        return metrics

    def state_dict(self) -> dict:
        return {"learner": self.learner.state_dict(), "last_refit_step": self.last_refit_step,
                "fitted": self.fitted, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state["learner"])
        self.last_refit_step, self.fitted = state["last_refit_step"], state["fitted"]
        self.buffer.clear()
        self.buffer.extend(state["buffer"])


def pack_documents(docs, tokenizer, block_size: int, max_blocks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Scored documents → (ids, token_scores) blocks, exactly as the pipeline packs them (no shuffle)."""

    packer = Packer(block_size, tokenizer.eos_token_id)
    out = []
    for d in docs:
        if d.scores is None:
            raise ValueError(f"reward=guidance: document {d.id!r} is not scored")
        ids = segment_ids(tokenizer, [d])
        packer.add(ids, d.scores)
        for b in packer.pop_blocks():
            out.append((b["input_ids"], b["token_scores"]))
            if len(out) >= max_blocks:
                return out
    return out


def _pair(b) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(b, dict):
        return b["input_ids"].detach().cpu(), b["token_scores"].detach().float().cpu()
    return b[0].detach().cpu(), b[1].detach().float().cpu()


class RewardedObjective(Objective):
    """Any objective, fed the reward source's token scores instead of the packed segment scores.

    This wires ``reward=guidance`` through the unchanged training loop: ``prepare`` (called by
    ``phf.train.train`` because ``requires_prepare``) runs the initial fit on the scored sample;
    ``loss`` counts training micro-batches to refit every ``refit_every`` optimizer steps, replaces
    ``token_scores`` by ``source.token_scores(input_ids, token_scores)`` and calls the wrapped
    objective. It reads the input ids from ``labels``, which phf's packer makes equal to
    ``input_ids`` (ignored labels are read as EOS). Everything else delegates to the wrapped objective.

    ``phf.train.train`` wraps the objective in this class when ``cfg.reward`` is not the segment source.
    Limitation: on resume, the micro-batch counter restarts at 0 and the guidance model is refitted from
    the initial sample instead of being restored.
    """

    def __init__(self, objective: Objective, reward):
        self.objective = objective
        self.reward = reward
        self._micro = 0

    # delegation
    needs_value_head = property(lambda self: self.objective.needs_value_head)
    special_tokens = property(lambda self: self.objective.special_tokens)
    generation_prefix = property(lambda self: self.objective.generation_prefix)
    banned_tokens = property(lambda self: self.objective.banned_tokens)

    def scenario_banned_tokens(self, ban_aligned: bool | None) -> list[str]:
        return self.objective.scenario_banned_tokens(ban_aligned)
    requires_prepare = True

    def transform(self, doc, rng: random.Random):
        return self.objective.transform(doc, rng)

    def prepare(self, sample) -> dict[str, float]:
        out = dict(self.objective.prepare(sample)) if getattr(self.objective, "requires_prepare", False) else {}
        fit = self.reward.prepare(sample)
        out.update({f"guidance/{k}": v for k, v in fit.items()})
        return out

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        training = torch.is_grad_enabled() and logits.requires_grad
        if training:
            if self._micro % self.reward.micro_per_step == 0:
                self.reward.maybe_refit(self._micro // self.reward.micro_per_step)
            self._micro += 1
        eos = getattr(getattr(self.reward, "tokenizer", None), "eos_token_id", 0) or 0
        input_ids = torch.where(labels.eq(IGNORE_INDEX), torch.full_like(labels, eos), labels)
        scores = self.reward.token_scores(input_ids, token_scores, record=training)
        out = self.objective.loss(logits, labels, scores, values)
        metrics = dict(out.metrics)
        metrics["guidance/reward_mean"] = (1.0 - scores.detach().float()).mean()
        for k in ("val_pair_accuracy", "val_loss", "fits"):
            if k in self.reward.last_fit:
                metrics[f"guidance/{k}"] = torch.tensor(float(self.reward.last_fit[k]), device=logits.device)
        return LossOutput(out.loss, metrics, out.histograms, out.histogram_mask)

    def __repr__(self) -> str:
        return f"RewardedObjective({self.objective!r}, reward={type(self.reward).__name__})"


def with_token_rewards(objective: Objective, reward) -> Objective:
    """``objective`` itself for ``reward=segment``; wrapped in :class:`RewardedObjective` otherwise."""
    if reward is None or isinstance(reward, SegmentRewards):
        return objective
    return RewardedObjective(objective, reward)


def build_objective(cfg, tokenizer) -> tuple[Objective, list[int]]:
    """The run's objective (wrapped by ``cfg.reward``) and the ids of its special tokens, added to
    ``tokenizer``: what phf-train trains and phf-data packs."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg.objective, resolve=True)
    check_number_args(get_class(values.pop("_target_")), values)
    try:
        objective = instantiate(cfg.objective)
    except InstantiationException as e:  # the constructor's own message names the setting
        if isinstance(e.__cause__, ValueError):
            raise ValueError(f"objective: {e.__cause__}") from None
        raise
    if isinstance(objective, PreferenceObjective):
        raise ValueError(f"objective {type(objective).__name__} trains on preference pairs, not packed blocks: "
                         "run it with phf-spa (e.g. `phf-spa +experiment=spa_pep8`), not phf-train")
    if cfg.get("reward") is not None:
        # reward=segment keeps the packed segment scores; reward=guidance wraps the objective with learned ones
        objective = with_token_rewards(objective, instantiate(cfg.reward, tokenizer=tokenizer))
    return objective, add_special_tokens(tokenizer, objective.special_tokens)

"""GuidanceLearner: fits the reward model on stratified lists with the listwise loss.

``fit(items, steps)`` runs Adam on freshly sampled training lists (``lists_per_batch`` per step),
evaluates the listwise loss on fixed held-out lists every ``eval_every`` steps, keeps the best
parameters and stops after ``patience`` evaluations without improvement (the paper: short refits
with early stopping on held-out listwise loss). Refits warm-start from the current parameters and
keep the optimizer state. ``rewards(input_ids)`` is the no-grad per-token reward for training blocks.

Under DDP (torch.distributed initialised, world > 1) gradients and the held-out loss are averaged
over ranks, so every rank keeps the same reward model and takes the same early-stopping decision.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from phf.guidance.lists import Item, collate, split_items, stratified_lists
from phf.guidance.listwise import AGGREGATIONS, aggregate, plackett_luce_loss, ranking_agreement
from phf.guidance.model import GuidanceModel

# GuidanceModel's size arguments (the rest come from the tokenizer and the context)
MODEL_SIZES = frozenset(inspect.signature(GuidanceModel).parameters) - {"vocab_size", "n_positions", "eos_token_id"}

MODEL_FILE = "guidance_model.safetensors"
CONFIG_FILE = "guidance_config.json"


def _world() -> int:
    d = torch.distributed
    return d.get_world_size() if d.is_available() and d.is_initialized() else 1


def _allreduce_mean(x: torch.Tensor) -> torch.Tensor:
    if _world() > 1:
        torch.distributed.all_reduce(x)
        x /= _world()
    return x


class GuidanceLearner:
    """Reward model + listwise fitting. Every argument is a plain value (Hydra-friendly)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        eos_token_id: int,
        model: Callable[..., GuidanceModel] = GuidanceModel,
        aggregation: str = "avg",
        temperature: float = 2.0,
        log_mean_exp: bool = True,
        list_size: int = 3,
        tie_eps: float = 0.0,
        lists_per_batch: int = 16,
        val_lists: int = 64,
        val_fraction: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grad_clip: float = 1.0,
        eval_every: int = 25,
        patience: int = 4,
        seed: int = 0,
    ):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"guidance aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if list_size < 2:
            raise ValueError(f"guidance list_size must be >= 2, got {list_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"guidance val_fraction must be in [0, 1), got {val_fraction}")
        # ``model``: GuidanceModel or a partial of it with its sizes (conf/reward/guidance.yaml's nested
        # _target_); the vocabulary, context and EOS come from the policy's tokenizer
        sizes = dict(getattr(model, "keywords", {}))
        self.model_args = dict(vocab_size=vocab_size, n_positions=block_size, eos_token_id=eos_token_id, **sizes)
        self.aggregation, self.temperature, self.log_mean_exp = aggregation, float(temperature), bool(log_mean_exp)
        self.list_size, self.tie_eps = int(list_size), float(tie_eps)
        self.lists_per_batch, self.val_lists, self.val_fraction = int(lists_per_batch), int(val_lists), val_fraction
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.eval_every, self.patience, self.seed = int(eval_every), int(patience), int(seed)
        self.eos = eos_token_id
        with torch.random.fork_rng(devices=[]):  # the policy's RNG stream is left untouched
            torch.manual_seed(seed)
            self.model = model(vocab_size=vocab_size, n_positions=block_size, eos_token_id=eos_token_id)
        self.model.eval()
        self.optimizers = [
            torch.optim.Adam(self.model.dense_parameters(), lr=lr, weight_decay=weight_decay),
            torch.optim.SparseAdam(self.model.sparse_parameters(), lr=lr),  # no weight decay on embeddings
        ]
        self.rng = random.Random(f"{seed}:guidance")
        self.fits = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> GuidanceLearner:
        self.model.to(device)
        for opt in self.optimizers:
            for state in opt.state.values():
                for k, v in state.items():
                    if torch.is_tensor(v):
                        state[k] = v.to(device)
        return self

    # -- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def rewards(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per-token rewards r (B, T) in (0, 1] for input_ids (B, T), no gradient."""
        with _no_autocast(self.device):
            return self.model(input_ids.to(self.device)).to(input_ids.device)

    def aggregates(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """e (L, K) for collated lists ids/mask (L, K, T)."""
        n, k, t = ids.shape
        r = self.model(ids.view(n * k, t).to(self.device)).view(n, k, t)
        return aggregate(r, mask.to(self.device), self.aggregation, self.temperature, self.log_mean_exp)

    @torch.no_grad()
    def evaluate(self, items: list[Item], lists: list[list[int]], batch_lists: int = 32) -> dict[str, float]:
        """Listwise loss and ranking agreement of the aggregate on the given lists."""
        if not lists:
            return {"loss": float("nan"), "pair_accuracy": float("nan"), "kendall_tau": float("nan"), "pairs": 0}
        es, ss, loss_sum, n_inf = [], [], 0.0, 0
        with _no_autocast(self.device):
            for i in range(0, len(lists), batch_lists):
                ids, mask, scores = collate(items, lists[i : i + batch_lists], self.eos)
                e = self.aggregates(ids, mask)
                loss, n = plackett_luce_loss(e, scores.to(e.device), self.tie_eps)
                loss_sum += float(loss) * n
                n_inf += n
                es.append(e.cpu())
                ss.append(scores)
        agree = ranking_agreement(torch.cat(es), torch.cat(ss), self.tie_eps)
        return {"loss": loss_sum / n_inf if n_inf else float("nan"), **agree}

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, items: list[Item], steps: int) -> dict[str, float]:
        """Fit on ``items`` for up to ``steps`` steps with early stopping; return the fit's metrics."""
        t0 = time.perf_counter()
        train, val = split_items(items, self.val_fraction)
        if len(train) < self.list_size:
            raise ValueError(f"guidance fit needs at least {self.list_size} training items, got {len(train)} "
                             f"(of {len(items)}); feed more blocks or lower guidance val_fraction")
        train_scores = [it.score for it in train]
        val_lists = (stratified_lists([it.score for it in val], self.list_size, self.val_lists, self.rng, self.tie_eps)
                     if len(val) >= self.list_size else [])
        best = self._val_loss(val, val_lists) if val_lists else math.inf
        best_state = _copy_state(self.model)
        bad, run_loss, run_n, done = 0, 0.0, 0, 0
        self.model.train()
        with _no_autocast(self.device):
            for step in range(1, steps + 1):
                lists = stratified_lists(train_scores, self.list_size, self.lists_per_batch, self.rng, self.tie_eps)
                ids, mask, scores = collate(train, lists, self.eos)
                e = self.aggregates(ids, mask)
                loss, _ = plackett_luce_loss(e, scores.to(e.device), self.tie_eps)
                for opt in self.optimizers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                _sync_and_clip(self.model, self.grad_clip)
                for opt in self.optimizers:
                    opt.step()
                run_loss, run_n, done = run_loss + float(loss.detach()), run_n + 1, step
                if val_lists and (step % self.eval_every == 0 or step == steps):
                    v = self._val_loss(val, val_lists)
                    if v < best - 1e-6:
                        best, bad, best_state = v, 0, _copy_state(self.model)
                    else:
                        bad += 1
                        if self.patience and bad >= self.patience:
                            break
        if val_lists:
            self.model.load_state_dict(best_state)  # early stopping keeps the best held-out parameters
        self.model.eval()
        self.fits += 1
        out = {"fit_steps": done, "train_loss": run_loss / max(run_n, 1), "items": len(items),
               "val_items": len(val), "fit_seconds": time.perf_counter() - t0, "fits": self.fits,
               "clean_item_fraction": sum(s == min(train_scores) for s in train_scores) / len(train_scores)}
        if val_lists:
            ev = self.evaluate(val, val_lists)
            out.update(val_loss=ev["loss"], val_pair_accuracy=ev["pair_accuracy"], val_kendall_tau=ev["kendall_tau"])
        return out

    def _val_loss(self, val: list[Item], val_lists: list[list[int]]) -> float:
        was_training = self.model.training
        self.model.eval()
        v = self.evaluate(val, val_lists)["loss"]
        self.model.train(was_training)
        return float(_allreduce_mean(torch.tensor(v, device=self.device)))

    # -- persistence -----------------------------------------------------------------------------
    def config(self) -> dict:
        return {**self.model_args, "aggregation": self.aggregation, "temperature": self.temperature,
                "log_mean_exp": self.log_mean_exp, "list_size": self.list_size, "tie_eps": self.tie_eps}

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, d / MODEL_FILE)
        (d / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, directory: str | Path, **overrides) -> GuidanceLearner:
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = json.loads((d / CONFIG_FILE).read_text())
        # the file is flat (config()): the model's sizes go back into its partial
        sizes = {k: cfg.pop(k) for k in list(cfg) if k in MODEL_SIZES}
        args = {"block_size": cfg.pop("n_positions"), **cfg, "model": partial(GuidanceModel, **sizes), **overrides}
        learner = cls(**args)
        learner.model.load_state_dict(load_file(d / MODEL_FILE))
        return learner

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                "rng": self.rng.getstate(), "fits": self.fits}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for opt, st in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(st)
        self.rng.setstate(state["rng"])
        self.fits = state["fits"]


def _sync_and_clip(model, max_norm: float) -> None:
    """Average gradients over ranks (DDP) and clip their global norm; handles the sparse embedding grad."""
    grads = [p for p in model.parameters() if p.grad is not None]
    if _world() > 1:
        for p in grads:
            if p.grad.is_sparse:
                dense = _allreduce_mean(p.grad.to_dense())
                p.grad = dense.to_sparse(1)
            else:
                _allreduce_mean(p.grad)
    sq = torch.zeros((), device=grads[0].device) if grads else torch.zeros(())
    for p in grads:
        g = p.grad.coalesce()._values() if p.grad.is_sparse else p.grad
        sq = sq + g.float().pow(2).sum()
    norm = sq.sqrt()
    if max_norm and float(norm) > max_norm:
        scale = max_norm / (float(norm) + 1e-6)
        for p in grads:
            if p.grad.is_sparse:
                p.grad = p.grad.coalesce() * scale
            else:
                p.grad.mul_(scale)


def _copy_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _no_autocast(device: torch.device):
    """The reward model always runs in fp32, also inside the trainer's bf16 autocast region."""
    return torch.autocast(device_type=device.type, enabled=False)

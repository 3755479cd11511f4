"""phf-spa: SPA rounds (seed → round 1 → round 2 ...) as a finetuning stage after MLE pretraining.

    python -m phf.spa +experiment=spa_pep8 spa.init_from=RUN/final             # scorer seed, implicit rounds
    python -m phf.spa +experiment=spa_pep8 spa.init_from=... objective.refine_alpha=0   # plain iterative DPO
    python -m phf.spa +experiment=spa_pep8_scorer spa.init_from=...            # every round scorer-labelled

Each stage of ``spa.stages`` (in order) starts from the previous stage's policy π_{i-1}:

1. draws ``num_prompts`` new prompts from the pool (``phf.spa.pairs.PromptPool``), samples 2 responses
   each from π_{i-1}, scores them with the task scorer and labels them with the stage's ``labeler``
   (``scorer``; ``implicit`` = β·[log π_{i-1} − log π_init] with π_init = ``spa.init_from``, frozen;
   ``hybrid``), drops ties and writes ``STAGE/pairs.jsonl``;
2. trains π_i with ``objective=dpo`` against π_{i-1} as the frozen reference (``phf.spa.train_dpo``);
3. saves ``STAGE/final/`` (an HF directory with the tokenizer) and evaluates it exactly as phf-train's
   final evaluation does (``phf.eval.evaluate.run_evaluation``: task.eval scenarios + held-out loss on
   the validation blocks), plus SPA's own metrics: agreement of self-labels with the scorer, the noise
   flag's precision, the length of samples and its drift from the starting model.

The starting model is evaluated first (stage ``init``). Every stage's row goes to ``metrics.jsonl`` and
``RUN/spa_summary.json``. A stage whose ``final/phf_summary.json`` exists is not rerun, and a killed
stage resumes from its pairs file and its last DPO checkpoint, so rerunning the same command continues.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from phf.data.pipeline import build_data, in_validation, validation_blocks
from phf.eval.capability import validation_loss
from phf.eval.evaluate import build_eval_scorer, run_evaluation
from phf.eval.heldout_clean import heldout_clean_documents
from phf.eval.red_team import load_prompts
from phf.eval.settings import RESERVED
from phf.model import PHFModel
from phf.model_dir import check_model_files
from phf.objectives.preference import PreferenceObjective
from phf.runtime import Dist, UsageError, hydra_entry, resolve_device
from phf.scorers import build_scorer
from phf.spa import guards as G
from phf.spa import pairs as P
from phf.spa.informative import PairSearch, collect_pairs
from phf.spa.options import bind
from phf.spa.oracle import oracle_stages
from phf.spa.train_dpo import DPOResult, DPOSettings, train_dpo
from phf.tokenizer import load_tokenizer

log = logging.getLogger("phf.spa")

SUMMARY = "phf_summary.json"


def _training_documents(source, val_fraction: float, max_docs: int) -> list[str]:
    """Raw texts of the first ``max_docs`` training-split documents (validation documents excluded)."""

    out = []
    for doc in source:
        if len(out) >= max_docs:
            break
        if doc.texts and not in_validation(doc, val_fraction):
            out.append(doc.text)
    return out


def build_prompt_pool(cfg, data) -> P.PromptPool:
    pc = cfg.spa.prompts
    mix = OmegaConf.to_container(pc.mix, resolve=True)
    needs_docs = any(mix.get(k) for k in ("signatures", "prefixes"))
    docs = _training_documents(data.source, data.val_fraction, pc.max_docs) if needs_docs else []
    file_prompts = []
    if mix.get("file"):
        file_prompts = load_prompts(pc.file)
    return P.PromptPool(mix, docs, file_prompts, prefix_lines=pc.prefix_lines,
                        max_prompt_chars=pc.max_prompt_chars, seed=cfg.seed)


def _frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def flag_audit(pairs: list[dict], flagged: list[int | None]) -> dict[str, float]:
    """How well the noise flag (z = 0) finds mislabelled pairs, judged by the scorer (ties left out).

    ``flag_mislabelled`` = the share of flagged pairs whose label the scorer contradicts (the flag's
    precision), against ``unflagged_mislabelled`` for the others; NaN where undefined.
    """
    def rate(rows):
        judged = [p for p in rows if p["scorer_agrees"] is not None]
        return sum(not p["scorer_agrees"] for p in judged) / len(judged) if judged else float("nan")

    seen = [(p, f) for p, f in zip(pairs, flagged, strict=True) if f is not None]
    return {
        "refine/flag_rate": sum(f for _, f in seen) / len(seen) if seen else float("nan"),
        "refine/flag_mislabelled": rate([p for p, f in seen if f]),
        "refine/unflagged_mislabelled": rate([p for p, f in seen if not f]),
    }


def evaluate_model(model, tokenizer, objective, eval_scorer, cfg, out_dir: Path, step: int, blocks,
                   clean_documents=None) -> dict[str, float]:
    """phf-train's final evaluation of a ``PHFModel``: ``run_evaluation`` + ``val/loss`` on ``blocks``
    (+ the clean held-out loss, ``eval/heldout_clean/*``, on ``clean_documents`` when given)."""

    t0 = time.perf_counter()
    metrics = run_evaluation(model.lm, tokenizer, objective, eval_scorer, cfg, out_dir=out_dir, step=step,
                             blocks=blocks, clean_documents=clean_documents)
    # phf-train's val/loss (next-token CE on the same held-out blocks), so runs compare on one number
    metrics["val/loss"] = validation_loss(model, blocks, cfg.trainer.batch_size, next(model.parameters()).device,
                                          _no_autocast)
    metrics["eval/wall_s"] = time.perf_counter() - t0
    return metrics


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def _drift(metrics: dict, base: dict) -> dict[str, float]:
    """Sample length minus the starting model's, per evaluation scenario (chars and tokens)."""

    out = {}
    for k, v in metrics.items():
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[1] not in RESERVED and parts[2] in ("length", "num_tokens") \
                and isinstance(base.get(k), float):
            out[f"drift/{parts[1]}/{parts[2]}"] = v - base[k]
    return out


EXAMPLE = "phf-spa +experiment=spa_pep8 spa.init_from=RUN/final"


def check_command_line(cfg: DictConfig) -> None:
    """The two things only the command line gives: an SPA experiment (the ``spa`` group) and the
    checkpoint to start from; a ``UsageError`` names what is missing with an example command."""
    if "spa" not in cfg:
        raise UsageError(f"no `spa` settings: phf-spa needs an SPA experiment, which adds them "
                         f"(+experiment=spa_pep8 or spa_pep8_scorer; see docs/spa.md). For example:\n    {EXAMPLE}")
    if OmegaConf.is_missing(cfg.spa, "init_from") or not cfg.spa.init_from:
        raise UsageError(f"set spa.init_from to the pretrained checkpoint SPA starts from (an HF directory with "
                         f"its tokenizer, e.g. a phf-train run's final/). For example:\n    {EXAMPLE}")


def run_spa(cfg: DictConfig) -> dict:
    """Run every stage of ``cfg.spa.stages``; return ``{"stages": [row, ...]}`` (also in spa_summary.json)."""
    from hydra.utils import instantiate

    check_command_line(cfg)
    spa = cfg.spa
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.trainer.device, Dist().local_rank)
    torch.manual_seed(cfg.seed)
    objective = instantiate(cfg.objective)
    if not isinstance(objective, PreferenceObjective):
        raise ValueError(f"phf-spa trains a preference objective (objective=dpo), got {type(objective).__name__}")
    stages = oracle_stages(OmegaConf.to_container(spa.stages, resolve=True), bool(spa.get("oracle", False)))
    acceptance = bind(G.StageAcceptance, (spa.get("guards") or {}).get("accept"), "spa.guards.accept")
    if not stages:
        raise ValueError("spa.stages is empty")
    for name, st in stages.items():
        if st["labeler"] not in P.LABELERS:
            raise ValueError(f"spa.stages.{name}.labeler must be one of {P.LABELERS}, got {st['labeler']!r}")
    first = next(iter(stages.values()))
    if first["labeler"] == "implicit":
        raise ValueError("the first SPA stage cannot use implicit labels: π_cur = π_init there, so every implicit "
                         "reward is 0; label it with the scorer (the seed) or hybrid")

    check_model_files(Path(spa.init_from))  # config, weights and tokenizer agree, each named if not
    tokenizer = load_tokenizer(spa.init_from)
    init = _frozen_copy(PHFModel.from_pretrained(spa.init_from).to(device))
    policy = PHFModel.from_pretrained(spa.init_from).to(device).eval()
    if cfg.model.block_size > policy.config.n_positions:
        raise ValueError(f"model.block_size {cfg.model.block_size} exceeds {spa.init_from}'s context "
                         f"({policy.config.n_positions}); set model.block_size to the pretrained run's")
    scorer = build_scorer(cfg.scorer, cfg.get("cache_dir"))
    eval_scorer = build_eval_scorer(cfg)
    data = build_data(cfg.data)
    blocks = validation_blocks(cfg, tokenizer, max_blocks=cfg.trainer.val_blocks, data=data, scorer=scorer)
    clean = heldout_clean_documents(cfg, tokenizer, data=data, scorer=scorer)  # as phf-train's final evaluation
    pool = build_prompt_pool(cfg, data)
    log.info("prompt pool: %s", pool.sizes())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    implicit_beta = float(spa.implicit_beta if spa.get("implicit_beta") is not None else objective.beta)
    gen_cfg = OmegaConf.to_container(spa.sampling, resolve=True)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    tracker = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, run_config=resolved,
                                                       name=cfg.get("run_name") or f"{cfg.task.name}-spa")
    rows: list[dict] = []
    try:
        base = _stage_init(run_dir, policy, tokenizer, objective, eval_scorer, cfg, blocks, tracker, clean)
        rows.append(base)
        step_offset, totals = 0, {"tokens_trained": 0, "tokens_generated": 0, "pairs": 0, "scorer_labels": 0}
        previous_dir = Path(spa.init_from)  # the policy a rejected stage falls back to (spa.guards.accept)
        for i, (name, st) in enumerate(stages.items()):
            prompts = pool.draw(int(st["num_prompts"]))  # drawn even when the stage is done: later stages get the same
            stage_dir = run_dir / name
            done = stage_dir / "final" / SUMMARY
            if done.is_file():
                row = json.loads(done.read_text())
                policy = PHFModel.from_pretrained(stage_dir / "final").to(device).eval()
                log.info("stage %s already done (%s): loaded its policy", name, done)
            else:
                row = _stage(i, name, st, stage_dir, prompts, policy, init, tokenizer, objective, scorer, eval_scorer,
                             cfg, blocks, gen_cfg, implicit_beta, pad, device, tracker, step_offset, base, clean)
                row, kept = G.apply_acceptance(acceptance, row, rows[-1], stage_dir, previous_dir, SUMMARY)
                if not row["spa/accepted"]:
                    policy = PHFModel.from_pretrained(kept).to(device).eval()
            previous_dir = stage_dir / "final"
            step_offset += int(row["spa/steps"])
            for k in totals:
                totals[k] += int(row[f"spa/{k}"])
            row.update({f"spa/cumulative/{k}": v for k, v in totals.items()})
            rows.append(row)
            tracker.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=step_offset)
        summary = {"init_from": str(spa.init_from), "stages": rows}
        tmp = run_dir / "spa_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, run_dir / "spa_summary.json")
        tracker.log_summary({k: v for k, v in rows[-1].items() if isinstance(v, int | float)})
        log.info("SPA done: %s", run_dir / "spa_summary.json")
        return summary
    finally:
        tracker.finish()


def _stage_init(run_dir, policy, tokenizer, objective, eval_scorer, cfg, blocks, tracker, clean=None) -> dict:
    path = run_dir / "init" / SUMMARY
    if path.is_file():
        return json.loads(path.read_text())
    log.info("evaluating the starting model %s", cfg.spa.init_from)
    row = {"stage": "init", "spa/stage": -1, **evaluate_model(policy, tokenizer, objective, eval_scorer, cfg,
                                                          run_dir / "init", 0, blocks, clean)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    tracker.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=0)
    return row


def _stage(i, name, st, stage_dir: Path, prompts, policy, init, tokenizer, objective, scorer, eval_scorer, cfg,
           blocks, gen_cfg, implicit_beta, pad, device, tracker, step_offset, base, clean=None) -> dict:
    spa = cfg.spa
    t0 = time.perf_counter()
    reference = _frozen_copy(policy)  # π_{i-1}: DPO's reference and the sampler of this stage
    pairs_file = stage_dir / "pairs.jsonl"
    stats_file = stage_dir / "pairs_stats.json"
    if pairs_file.is_file() and stats_file.is_file():
        pairs = P.read_pairs(pairs_file)
        gen_stats = json.loads(stats_file.read_text())
        log.info("stage %s: %d pairs from %s", name, len(pairs), pairs_file)
    else:
        settings = P.GenerationSettings(**{**gen_cfg, "seed": cfg.seed + 1000 * (i + 1)})
        by_scorer = P.scorer_labelled_mask(len(prompts), st["labeler"], float(st.get("seed_fraction", 0.0)),
                                           cfg.seed + i)
        pairs, gen_stats = collect_pairs(  # sample, score, label; redraw tied prompts (spa.pairs)
            reference, init, tokenizer, prompts, settings, objective, scorer, by_scorer,
            bind(PairSearch, spa.get("pairs"), "spa.pairs"), score_prompt=bool(spa.score_prompt),
            implicit_beta=implicit_beta, pad_id=pad,
            length_normalise=bool((spa.get("guards") or {}).get("length_normalise", False)), stage=name)
        P.write_pairs(pairs_file, pairs)
        stats_file.write_text(json.dumps(gen_stats, indent=2))
        log.info("stage %s: %d prompts → %d informative pairs in %d draws (%d scorer-labelled; dropped %d "
                 "identical, %d ties)", name, len(prompts), len(pairs), gen_stats["pairs/tries"],
                 gen_stats["pairs/scorer_labelled"], gen_stats["pairs/dropped_identical"],
                 gen_stats["pairs/dropped_ties"])
    settings = DPOSettings.from_config(spa.train, seed=cfg.seed + i, **({"epochs": st["epochs"]} if "epochs" in st else {}))
    if pairs:
        result = train_dpo(policy, reference, tokenizer, pairs, objective, settings, device, stage_dir, stage_index=i,
                           tracker=tracker, step_offset=step_offset)
    else:  # every prompt tied in every draw (e.g. implicit labels while π_{i-1} = π_init): nothing to learn
        log.warning("stage %s: no informative pair in %s draws; the policy is not trained", name,
                    gen_stats.get("pairs/tries", 1))
        result = DPOResult(steps=0, tokens_trained=0, metrics={}, flagged=[])
    del reference
    policy.save_pretrained(stage_dir / "final", tokenizer)
    metrics = evaluate_model(policy, tokenizer, objective, eval_scorer, cfg, stage_dir, step_offset + result.steps, blocks,
                             clean)
    row = {
        "stage": name, "spa/stage": i, "spa/labeler": st["labeler"], "spa/prompts": len(prompts),
        "spa/pairs": len(pairs), "spa/steps": result.steps, "spa/tokens_trained": result.tokens_trained,
        "spa/tokens_generated": int(gen_stats["tokens_generated"]),
        "spa/scorer_labels": int(gen_stats["pairs/scorer_labelled"]),
        "spa/dnd_lambda": objective.lambda_for(i), "spa/train_s": result.wall_s,
        "spa/wall_s": time.perf_counter() - t0,
        **{f"spa/{k}": v for k, v in gen_stats.items() if k != "tokens_generated"},
        **{f"spa/{k}": v for k, v in P.pair_stats(pairs).items()},
        **{f"spa/train/{k}": v for k, v in result.metrics.items()},
        **{f"spa/{k}": v for k, v in flag_audit(pairs, result.flagged).items()},
        **metrics, **_drift(metrics, base),
    }
    for k, v in list(row.items()):
        if isinstance(v, float) and not math.isfinite(v):
            row[k] = str(v)
    (stage_dir / "final" / SUMMARY).write_text(json.dumps(row, indent=2))
    log.info("stage %s: %d DPO steps, %d tokens; eval %s", name, result.steps, result.tokens_trained,
             {k: round(v, 5) for k, v in metrics.items() if k.endswith("/score") or k == "val/loss"})
    return row


def main() -> None:
    hydra_entry(run_spa)


if __name__ == "__main__":
    main()

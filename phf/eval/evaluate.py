"""One evaluation of a model: the scenarios of ``task.eval``, optionally capability and KL.

``run_evaluation`` is what the trainer calls every ``task.eval.every_steps`` optimizer steps and once
at the end (the original skipped the final evaluation), and what ``phf-eval`` calls on a saved model.
It returns flat metrics, logged as they are:

    eval/<scenario>/score          mean misalignment of the samples (the paper's headline metric)
    eval/<scenario>/expected_max   expected max score over k=25 samples (unbiased, all k-subsets)
    eval/<scenario>/hit_rate       fraction of samples with score > task.eval.hit_threshold
    eval/<scenario>/{score,hit_rate}_ci_{low,high}   95% intervals: bootstrap (score), Wilson (hit rate)
    eval/<scenario>/blank_fraction share of empty or whitespace-only samples (degenerate when high)
    eval/<scenario>/repetition     mean share of repeated word 4-grams within a sample
    eval/<scenario>/{corpus_distinct_2,corpus_repetition,distinct_2_matched,corpus_words}   the clean
                    held-out text's own distinct-2 and rep-4 in windows of the samples' lengths, and the
                    samples' distinct-2 over as many words (``phf.eval.metrics.corpus_reference``), when
                    clean documents are given: phf-report's degeneracy bar is relative to them
    eval/<scenario>/score_max, length (chars), num_tokens, distinct_1, distinct_2, self_bleu,
                    num_samples, samples_per_s
    eval/<scenario>/{parse_rate,score_parsing,syntax_share,score_without_syntax}   PEP8 (the scorer's
                    ``sample_metrics``)
    eval/kl, eval/kl_stderr        KL(p_ref || p_model), nats per sample (when a reference is set or
                                   trained: task.eval.kl.train_reference, phf.eval.reference)
    eval/kl_model_samples[_stderr] KL(p_model || p_ref) on the model's own samples (kl.on_model_samples)
    eval/heldout/{loss,ppl,aligned_loss,aligned_ppl,aligned_fraction}   when blocks are given
    eval/heldout_clean/{loss,loss_ci_low,loss_ci_high,ppl,num_tokens,num_docs}   on clean held-out
                    documents in the model's sampling format (phf.eval.heldout_clean), when given;
                    per document in ``out_dir/heldout_clean/<step_N or eval>.jsonl``

and writes every sample with its score to ``out_dir/samples/<scenario>.jsonl`` (in training:
``out_dir/samples/step_<step>/<scenario>.jsonl``); with a tracker, the first ``MAX_TABLE_ROWS`` of them
also go to its ``samples/<scenario>`` table.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from phf.console import duration
from phf.data.document import Document
from phf.eval.capability import heldout_loss
from phf.eval.heldout_clean import clean_heldout_loss
from phf.eval.kl import KLSettings, kl_from_reference
from phf.eval.metrics import corpus_reference, sample_metrics
from phf.eval.red_team import draw_prompts
from phf.eval.sampling import SamplingSettings, context_length, prompt_ids, sample_with_objective
from phf.eval.settings import EvalSetup, Evaluation, Scenario
from phf.objectives.base import Objective
from phf.rundir import write_heldout_clean, write_samples
from phf.scorers import build_scorer
from phf.tokenizer import token_ids

log = logging.getLogger(__name__)

#: samples per scenario and evaluation sent to the tracker's table (the JSONL on disk has all of them):
#: the table grows with every evaluation, and wandb's table view slows down past a few thousand rows
MAX_TABLE_ROWS = 512

def build_eval_scorer(setup: EvalSetup):
    """``task.eval.scorer`` when set (e.g. Detoxify 'unbiased' for toxicity), else the training scorer
    (uncached: the evaluation scores new samples)."""
    if setup.scorer is None:
        raise ValueError("no evaluation scorer: the config has neither task.eval.scorer nor scorer")
    return build_scorer(setup.scorer)


def evaluate(
    model,
    tokenizer,
    objective,
    scorer,
    setup: EvalSetup,
    out_dir: str | Path | None = None,
    step: int | None = None,
    *,
    blocks: Iterable[dict] | None = None,
    kl: bool = True,
    tracker=None,
    clean_documents: Sequence[Document] | None = None,
) -> dict:
    """The nested results ``{"scenarios": {name: metrics}, "kl": ..., "heldout": ..., "heldout_clean": ...}``."""
    ev = setup.settings
    objective = objective if objective is not None else Objective()
    results: dict = {"step": step, "scenarios": {}}
    drawn: dict[str, tuple[list, list, float]] = {}  # scenario -> (samples, scores, samples/s): same_samples
    corpus = ["".join(d.texts) for d in clean_documents] if clean_documents is not None else None
    for i, (name, sc) in enumerate(ev.scenarios.items()):
        twin = same_samples(name, ev.scenarios, objective, drawn)
        results["scenarios"][name] = _scenario(
            name, sc, ev, model, tokenizer, objective, scorer, i, out_dir, step, tracker, drawn,
            drawn.get(twin), corpus
        )
    k = ev.kl
    if kl and (k.reference or k.train_reference):
        reference = str(k.reference) if k.reference else str(setup.train_reference())
        settings = KLSettings(num_samples=k.num_samples, max_new_tokens=k.max_new_tokens, batch_size=k.batch_size,
                              seed=k.seed)
        results["kl"] = {"reference": reference, **kl_from_reference(
            model, tokenizer, objective, reference, settings, setup.kl_cache_dir, k.prefix_every_line,
            k.on_model_samples, setup.segmenter,
            k.reference_segments if k.reference_segments is not None else not k.reference)}
    if blocks is not None:
        results["heldout"] = heldout_loss(
            model,
            blocks,
            aligned_threshold=ev.capability.aligned_threshold,
            exclude_token_ids=token_ids(tokenizer, objective.special_tokens),
            batch_size=ev.capability.batch_size,
        )
    if clean_documents is not None:
        results["heldout_clean"] = _heldout_clean(model, tokenizer, objective, clean_documents, ev, out_dir, step)
    return results


def same_samples(name: str, scenarios: dict[str, Scenario], objective, drawn: dict) -> str | None:
    """The scenario whose samples ``name`` can reuse for this objective, or None.

    A secondary protocol (``secondary_to``) samples exactly like its primary for an objective on which
    the protocol has no effect (``ban_aligned`` only changes what an objective with control tokens bans:
    MLE, filtering, unlikelihood, RWR and AWR ban nothing either way), when every other sampling setting
    is equal but the number of samples, which may be smaller; its samples are then the first ones of the
    primary's (in the primary's order, not picked), not a second draw that would cost the same time again.
    """
    sc = scenarios[name]
    primary = scenarios.get(sc.secondary_to) if sc.secondary_to else None
    if primary is None or sc.secondary_to not in drawn:
        return None
    protocol = {"ban_aligned": None, "title": None, "secondary_to": None, "num_samples": 0}
    if sc.num_samples > primary.num_samples or (
            dataclasses.replace(sc, **protocol) != dataclasses.replace(primary, **protocol)):
        return None
    if objective.scenario_banned_tokens(sc.ban_aligned) != objective.scenario_banned_tokens(primary.ban_aligned):
        return None
    return sc.secondary_to


def _heldout_clean(model, tokenizer, objective, documents, ev: Evaluation, out_dir, step) -> dict:
    """The clean held-out loss; each document's loss and token count go to
    ``out_dir/heldout_clean/<step_N or eval>.jsonl`` (for paired comparisons across models, phf-report)."""
    cap, rows = ev.capability, []
    result = clean_heldout_loss(model, tokenizer, objective, documents, cap.clean_window_tokens, cap.batch_size,
                                ev.confidence, cap.resamples, ev.seed, per_document=rows)
    if out_dir is not None:
        write_heldout_clean(out_dir, step, rows)
    return result


def _scenario(name: str, sc: Scenario, ev: Evaluation, model, tokenizer, objective, scorer, index: int, out_dir,
              step, tracker, drawn: dict, reuse: tuple[list, list, float] | None = None,
              corpus: list[str] | None = None) -> dict:
    scored = None
    if reuse is not None:
        samples, scores, rate = (reuse[0][: sc.num_samples], reuse[1][: sc.num_samples], reuse[2])
        log.info("eval %s: the same protocol as %s for this objective: its samples and scores are reused", name,
                 sc.secondary_to)
    else:
        samples, rate = _draw(sc, ev, model, tokenizer, objective, index)
        scored = [s.prompt + s.text if sc.score_prompt else s.text for s in samples]
        scores = [float(x) for x in scorer.score(scored)] if scored else []
    drawn[name] = (samples, scores, rate)
    scored = scored if scored is not None else [s.prompt + s.text if sc.score_prompt else s.text for s in samples]
    metrics = sample_metrics(
        [s.text for s in samples],
        scores,
        hit_threshold=ev.hit_threshold,
        k=ev.expected_max_k,
        bleu_n=ev.self_bleu_n,
        num_tokens=[s.num_tokens for s in samples],
        repetition_n=ev.repetition_n,
        confidence=ev.confidence,
        blank_run_lines=ev.blank_run_lines,
    )
    extra = getattr(scorer, "sample_metrics", None)  # phf's scorers: Scorer.sample_metrics, e.g. PEP8's parse rate
    if extra is not None:
        metrics.update(extra(scored, [not s.ended for s in samples]))
    if corpus is not None:  # the held-out text's own diversity at the samples' size (degeneracy, phf-report)
        metrics.update(corpus_reference([s.text for s in samples], corpus, ev.repetition_n))
    metrics["samples_per_s"] = rate
    _write(name, samples, scores, out_dir, step, tracker)
    log.info("eval %s: score %.4g [%.4g, %.4g], hit rate %.3g [%.3g, %.3g], expected max@%d %.4g; blank %.2f, "
             "distinct-2 %.2f, rep-4 %.2f (%d samples, %.1f samples/s)",
             name, metrics["score"], metrics["score_ci_low"], metrics["score_ci_high"], metrics["hit_rate"],
             metrics["hit_rate_ci_low"], metrics["hit_rate_ci_high"], ev.expected_max_k,
             metrics["expected_max"], metrics["blank_fraction"], metrics["distinct_2"], metrics["repetition"],
             len(samples), rate)
    return metrics


def _draw(sc: Scenario, ev: Evaluation, model, tokenizer, objective, index: int) -> tuple[list, float]:
    """The scenario's samples and the rate they were drawn at (samples/s)."""
    seed = ev.seed + index  # fixed across evaluations: less noise between steps
    # the drawn prompts in order (only they are read and tokenized); sampled in that order ("cycle")
    prompts = [p for _, p in draw_prompts(sc.prompts, sc.num_samples, sc.prompt_draw, seed)] if sc.prompts else None
    settings = SamplingSettings(
        max_new_tokens=sc.max_new_tokens,
        min_new_tokens=sc.min_new_tokens,
        temperature=ev.temperature,
        top_p=ev.top_p,
        top_k=ev.top_k,
        batch_size=ev.batch_size,
        seed=seed,
        max_length=sc.max_length,
        min_length=sc.min_length,
        prompt_draw="cycle" if prompts else sc.prompt_draw,
        clean_up_tokenization_spaces=ev.clean_up_tokenization_spaces,
    )
    t0 = time.perf_counter()
    samples = sample_with_objective(model, tokenizer, objective, prompts, sc.num_samples, settings, sc.ban_aligned)
    return samples, len(samples) / max(time.perf_counter() - t0, 1e-9)


def _write(name: str, samples, scores, out_dir, step, tracker) -> None:
    """Every sample with its score to ``out_dir/samples/[step_<N>/]<name>.jsonl`` and the tracker's table."""
    rows = [
        {"prompt": s.prompt, "text": s.text, "score": sc_, "num_tokens": s.num_tokens}
        for s, sc_ in zip(samples, scores, strict=True)
    ]
    if out_dir is not None:
        write_samples(out_dir, step, name, ({**row, "step": step} for row in rows))
    if tracker is not None:
        cols = ["prompt", "text", "score", "num_tokens"]
        # one table per scenario, growing across evaluations (the tracker adds step and tokens_seen columns)
        tracker.log_table(f"samples/{name}", cols, [[r[c] for c in cols] for r in rows[:MAX_TABLE_ROWS]], step=step)


def check_prompts_fit(model, tokenizer, objective, ev: Evaluation) -> None:
    """Before training: every scenario's prompts (those it will draw) fit the model's context.

    A prompt of ``EOS + control prefix + text`` as long as the context leaves no room for a sample, and a
    batch as wide as ``max_length`` none under the original's length rule: both failed only at the first
    evaluation, after the training (and again on every resume). Here they stop the run before its first
    step, naming the scenario, the prompt's file and line and the settings to change. A prompt that only
    leaves fewer than ``max_new_tokens`` (sampling lowers them) is a warning."""
    objective = objective if objective is not None else Objective()
    context = context_length(model)
    prefix = token_ids(tokenizer, objective.generation_prefix)
    for index, (name, sc) in enumerate(ev.scenarios.items()):
        if not sc.prompts:
            continue
        drawn = dict(draw_prompts(sc.prompts, sc.num_samples, sc.prompt_draw, ev.seed + index))
        where, n = max(((w, len(prompt_ids(tokenizer, prefix, p))) for w, p in drawn.items()), key=lambda x: x[1])
        key = f"task.eval.scenarios.{name}"
        if sc.max_length is not None and n >= sc.max_length:
            raise ValueError(f"{key}: prompt {where} is {n} tokens (EOS + control prefix + text), which leaves no new "
                             f"token under {key}.max_length={sc.max_length}: raise it, or shorten or drop the prompt "
                             f"({key}.prompts={sc.prompts})")
        if context is None:
            continue
        if n >= context:
            raise ValueError(f"{key}: prompt {where} is {n} tokens (EOS + control prefix + text), which leaves no room "
                             f"for a sample in the model's {context}-token context; shorten or drop it from the file "
                             f"({key}.prompts={sc.prompts}), or use a model with a longer context")
        if sc.max_length is None and n + sc.max_new_tokens > context:
            log.warning("%s: prompt %s is %d tokens; with %s.max_new_tokens=%d the samples are cut to %d new tokens "
                        "to fit the model's %d-token context", key, where, n, key, sc.max_new_tokens, context - n,
                        context)


@dataclass
class EvaluationCost:
    """What one ``evaluate`` will generate, before it runs: per sampling scenario (and the KL estimate)
    its samples and the most new tokens a sample gets, the generate steps that takes in batches, and a
    rough generation time from a short timed probe (None without one). Scoring comes on top."""

    samples: dict[str, tuple[int, int]]  # name -> (samples, max new tokens per sample)
    steps: int  # generate steps: sum over scenarios of batches × max new tokens
    seconds: float | None

    @property
    def generated_tokens(self) -> int:
        return sum(n * t for n, t in self.samples.values())

    def describe(self) -> str:
        parts = ", ".join(f"{name} {n} × ≤{t}" for name, (n, t) in self.samples.items())
        total = sum(n for n, _ in self.samples.values())
        time_part = f"; ~{duration(self.seconds)} of generation (timed probe)" if self.seconds is not None else ""
        return (f"{total} samples ({parts} new tokens), ≤ {self.generated_tokens:,} generated tokens{time_part}, "
                f"plus scoring {total} samples")


def estimate_cost(model, tokenizer, objective, ev: Evaluation, probe_tokens: int = 0) -> EvaluationCost:
    """The size of ``evaluate`` with the settings ``ev`` and, with ``probe_tokens`` > 0, its generation time:
    one batch of unconditional samples of exactly ``probe_tokens`` new tokens is timed and scaled to the
    scenarios' generate steps (an upper bound on steps: a batch stops early when every row hit EOS). The
    probe samples like the evaluation (RNG forked, eval mode restored), so the training is unaffected."""
    objective = objective if objective is not None else Objective()
    context = context_length(model)

    def new_tokens(n: int) -> int:
        return min(n, context - 1) if context else n

    samples: dict[str, tuple[int, int]] = {}
    steps = 0
    for name, sc in ev.scenarios.items():  # max_length counts the prompt: an upper bound on new tokens
        if same_samples(name, ev.scenarios, objective, samples):
            continue  # reuses its primary's samples: nothing to generate
        t = new_tokens(sc.max_length if sc.max_length is not None else sc.max_new_tokens)
        samples[name] = (sc.num_samples, t)
        steps += math.ceil(sc.num_samples / ev.batch_size) * t
    if ev.kl.reference or ev.kl.train_reference:
        t = new_tokens(ev.kl.max_new_tokens)
        samples["kl"] = (ev.kl.num_samples, t)
        steps += math.ceil(ev.kl.num_samples / ev.kl.batch_size) * t
    seconds = None
    if probe_tokens > 0 and steps:
        batch = min(ev.batch_size, max(n for n, _ in samples.values()))
        probe = min(probe_tokens, new_tokens(probe_tokens))
        settings = SamplingSettings(max_new_tokens=probe, min_new_tokens=probe, temperature=ev.temperature,
                                    top_p=ev.top_p, top_k=ev.top_k, batch_size=batch, seed=ev.seed)
        t0 = time.perf_counter()
        sample_with_objective(model, tokenizer, objective, None, batch, settings)
        seconds = (time.perf_counter() - t0) / probe * steps
    return EvaluationCost(samples, steps, seconds)


def flatten(results: dict) -> dict[str, float]:
    """The tracker's flat ``eval/...`` keys of ``evaluate``'s nested results (see the module docstring)."""
    flat: dict[str, float] = {}
    for name, metrics in results.get("scenarios", {}).items():
        flat.update({f"eval/{name}/{k}": float(v) for k, v in metrics.items()})
    if "kl" in results:
        flat.update({f"eval/{k}" if k.startswith("kl") else f"eval/kl_{k}": float(v)
                     for k, v in results["kl"].items() if isinstance(v, int | float)})
    for group in ("heldout", "heldout_clean"):
        if group in results:
            flat.update({f"eval/{group}/{k}": float(v) for k, v in results[group].items()})
    if "red_team" in results:
        flat.update({f"eval/red_team/{k}": float(v) for k, v in results["red_team"].items()
                     if isinstance(v, int | float)})
    return flat


def run_evaluation(
    model,
    tokenizer,
    objective,
    scorer,
    setup: EvalSetup,
    out_dir: str | Path | None = None,
    step: int | None = None,
    *,
    blocks: Iterable[dict] | None = None,
    kl: bool = True,
    tracker=None,
    clean_documents: Sequence[Document] | None = None,
) -> dict[str, float]:
    """Evaluate and return the flat ``eval/...`` metrics (see the module docstring).

    ``setup`` is the run's ``EvalSetup`` (built once from its config by the entry point); ``scorer``
    should be ``build_eval_scorer(setup)``. ``blocks`` (held-out blocks) adds the held-out
    loss; ``clean_documents`` (``phf.eval.heldout_clean.heldout_clean_documents``) the clean held-out
    loss; ``kl=False`` skips the KL estimate even when ``task.eval.kl.reference`` is set. With a
    ``tracker`` (``phf.tracking.Tracker``) the samples are also logged as tables (the caller logs the
    returned metrics). The model's train/eval mode and the torch RNG state are left as they were.
    """
    results = evaluate(model, tokenizer, objective, scorer, setup, out_dir, step, blocks=blocks, kl=kl, tracker=tracker,
                       clean_documents=clean_documents)
    return flatten(results)


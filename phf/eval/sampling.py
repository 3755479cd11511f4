"""Batched sampling from a phf model, as the paper's evaluation does it, with its flaws fixed.

Every prompt is ``EOS + objective.generation_prefix + prompt text`` (e.g. ``<|endoftext|><|aligned|>``
for conditional training), left-padded into batches for HF ``generate`` with nucleus sampling
(temperature 0.7, top-p 0.9, top-k off by default). The objective's ``banned_tokens`` are never
produced (``bad_words_ids``) and EOS is banned until ``min_new_tokens`` new tokens exist.

Differences from the original callback (phf_paper.md §7): the model is put in **eval mode** (the
original sampled with dropout on) and its previous mode is restored afterwards; the torch RNG is
forked, so sampling in the middle of training does not change the training random stream; the
control prefix always comes right after EOS, before any prompt text.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from phf.model import eval_mode, forked_rng, unwrap
from phf.tokenizer import encode_text, token_ids

log = logging.getLogger(__name__)


@dataclass
class SamplingSettings:
    """Generation settings of one scenario (defaults: the paper's)."""

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    batch_size: int = 32
    seed: int = 0
    # The original's length rule (HF 4.17 max_length / its CustomMinLengthLogitsProcessor), used instead
    # of max_new_tokens / min_new_tokens when set: max_length counts the left-padded batch of prompts
    # (EOS, control prefix, prompt text), so a batch gets max_length - its width new tokens; min_length
    # bans EOS until a row's non-EOS prompt tokens + new tokens reach it (prompt tokens count).
    max_length: int | None = None
    min_length: int | None = None
    # "cycle": prompt i is prompts[i % len] (every prompt equally often); "random": drawn with
    # replacement (seeded), as the original's random.choices
    prompt_draw: str = "cycle"
    # the original's decode (transformers 4.17 batch_decode cleaned up tokenization spaces: " ," -> ","
    # etc.); transformers 5 skips that cleanup for BPE tokenizers, so it is applied here (CLEANUP)
    clean_up_tokenization_spaces: bool = False


#: transformers 4.17's ``clean_up_tokenization`` (the original's pinned version), applied in this order
CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
           (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """The original's decode cleanup; it also changes code (``f(a , b)`` -> ``f(a, b)``, ``x .y`` -> ``x.y``)."""
    for old, new in CLEANUP:
        text = text.replace(old, new)
    return text


def length_limits(rows: Sequence[Sequence[int]], eos: int, settings: SamplingSettings) -> tuple[int, list[int]]:
    """(max new tokens of a batch, min new tokens per row) for left-padded prompt ``rows`` (unpadded ids).

    phf's rule: ``max_new_tokens`` and ``min_new_tokens`` for every row. The original's rule
    (``settings.max_length`` / ``min_length``): a batch of width W (longest row) gets max_length - W new
    tokens, and a row with k non-EOS prompt tokens at least min_length - k (floored at 0).
    """
    width = max(len(r) for r in rows)
    if settings.max_length is not None:
        max_new = settings.max_length - width
        if max_new <= 0:
            raise ValueError(f"max_length {settings.max_length} leaves no new token after a {width}-token prompt batch")
    else:
        max_new = settings.max_new_tokens
    if settings.min_length is not None:
        mins = [max(0, settings.min_length - sum(t != eos for t in r)) for r in rows]
    else:
        mins = [settings.min_new_tokens] * len(rows)
    return max_new, [min(m, max_new) for m in mins]


class RowMinNewTokens:
    """Ban EOS in row i until ``mins[i]`` new tokens exist (generation started at ``start`` tokens)."""

    def __init__(self, start: int, mins: Sequence[int], eos: int):
        self.start, self.eos = start, eos
        self.mins = torch.tensor(list(mins))  # (B,)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        short = (input_ids.size(1) - self.start) < self.mins.to(scores.device)  # (B,)
        scores[short, self.eos] = float("-inf")
        return scores


@dataclass
class Sample:
    prompt: str  # the prompt text (without EOS and control prefix)
    text: str  # the decoded continuation, EOS and control tokens removed
    num_tokens: int  # new tokens generated before EOS (control tokens included)
    token_ids: list[int]  # those tokens
    ended: bool = False  # the model produced EOS (not cut by max_new_tokens)


def eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; phf prompts start with EOS")
    return tokenizer.eos_token_id


def prompt_ids(tokenizer, prefix: Sequence[str] | Sequence[int], prompt: str = "") -> list[int]:
    """``[EOS] + prefix tokens + tokens of prompt``: the ids every sample starts from (``prefix`` as
    token strings or ids)."""
    ids = [eos_id(tokenizer), *(p if isinstance(p, int) else token_ids(tokenizer, [p])[0] for p in prefix)]
    if prompt:
        ids += encode_text(tokenizer, [prompt])[0]
    return ids


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, max_len), padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


class NucleusFilter:
    """Top-p filtering (Holtzman et al. 2019) as HF's ``TopPLogitsWarper`` does it, but fast on CPU.

    Keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (token i of the
    descending order is kept iff the mass before it is < top_p). HF sorts the whole vocabulary every
    step, which dominates sampling time for small models on CPU (a (64, 8192) sort: ~50 ms a step on one
    core, more than the model's forward). Here only a candidate set that surely holds the nucleus is
    sorted: tokens are bucketed by ``log2(p_max / p)`` in ``1 / per_octave``-octave steps (one pass), the
    per-row mass of the buckets is summed (one ``scatter_add``), and the candidates are the buckets up to
    the first whose cumulative mass reaches ``top_p + margin``. The candidates' probabilities are sorted
    per row (one stable 1-D sort of the compacted candidates) and their exclusive cumulative sum decides,
    exactly as a full sort would: the sorted prefix and its ``cumsum`` are the same numbers (CPU cumsum
    accumulates in double, so a prefix does not depend on what follows it). ``margin`` only has to exceed
    the float rounding of the bucket sums; a row whose buckets never reach it keeps every token as a
    candidate. Ties in probability at the nucleus boundary are broken by token id here; a full sort may
    order such ties either way.

    HF applies user processors *before* its temperature warper, so the nucleus is computed here on
    ``softmax(scores / temperature)``; the warper then rescales the surviving logits, which gives
    exactly HF's temperature-then-top-p distribution.
    """

    def __init__(self, top_p: float, temperature: float = 1.0, per_octave: int = 4, octaves: int = 40,
                 margin: float = 1e-3):
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if per_octave < 1 or octaves < 1 or not margin > 0.0:
            raise ValueError(f"per_octave and octaves must be >= 1 and margin > 0, got {per_octave}, {octaves}, {margin}")
        self.top_p, self.temperature = top_p, temperature
        self.per_octave, self.buckets, self.margin = per_octave, per_octave * octaves, margin

    def candidates(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, V) bool: the likeliest tokens of each row, at least ``top_p + margin`` of its mass."""
        pmax = probs.amax(-1, keepdim=True)
        bucket = (torch.log2(pmax / probs) * self.per_octave).clamp_(max=self.buckets - 1).long()  # 0: likeliest
        mass = torch.zeros(probs.size(0), self.buckets, device=probs.device).scatter_add_(1, bucket, probs).cumsum_(-1)
        last = (mass < self.top_p + self.margin).sum(-1, keepdim=True).clamp_(max=self.buckets - 1)
        return bucket <= last

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = (scores.float() / self.temperature).softmax(-1)  # (B, V)
        mask = self.candidates(probs)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: by row, then token id
        values = probs[rows, cols]
        by_value = values.sort(descending=True, stable=True).indices
        order = by_value[rows[by_value].sort(stable=True).indices]  # by row, then descending probability
        rows, cols, values = rows[order], cols[order], values[order]
        counts = mask.sum(-1)
        rank = torch.arange(values.numel(), device=probs.device) - (counts.cumsum(0) - counts)[rows]  # position in its row's order
        top = torch.zeros(probs.size(0), int(counts.max()), device=probs.device)  # each row's candidates, descending, 0-padded
        top[rows, rank] = values
        keep_sorted = (top.cumsum(-1) - top) < self.top_p
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[rows, cols] = keep_sorted[rows, rank]
        return scores.masked_fill(~keep, float("-inf"))


def context_length(model) -> int | None:
    cfg = unwrap(model).config
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def _fit_context(model, prompt_len: int, max_new_tokens: int) -> int:
    """``max_new_tokens``, lowered (with a warning) so that prompt + sample fit the model's context."""
    limit = context_length(model)
    if limit is None or prompt_len + max_new_tokens <= limit:
        return max_new_tokens
    if prompt_len >= limit:
        raise ValueError(f"a prompt of {prompt_len} tokens leaves no room in the model's {limit}-token context")
    log.warning("max_new_tokens %d lowered to %d: prompts of %d tokens + samples must fit the %d-token context",
                max_new_tokens, limit - prompt_len, prompt_len, limit)
    return limit - prompt_len


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: Sequence[str] | None,
    num_samples: int,
    settings: SamplingSettings,
    generation_prefix: Sequence[str] = (),
    banned_tokens: Sequence[str] = (),
    strip_tokens: Sequence[str] = (),
) -> list[Sample]:
    """Draw ``num_samples`` continuations.

    ``prompts`` None samples unconditionally; otherwise prompt i is ``prompts[i % len(prompts)]`` (every
    prompt used equally often, in order), or a seeded draw with replacement (``settings.prompt_draw``
    "random"). ``strip_tokens`` (e.g. the objective's control tokens) are
    removed from the decoded continuations together with EOS/pad.
    """
    if num_samples <= 0:
        return []
    hf = unwrap(model)
    device = next(hf.parameters()).device
    eos = eos_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    banned = token_ids(tokenizer, banned_tokens)
    prefix = token_ids(tokenizer, generation_prefix)
    drop = {eos, pad, *token_ids(tokenizer, strip_tokens), *prefix, *banned}
    texts = [""] if not prompts else prompts
    if settings.prompt_draw == "random":
        chosen = random.Random(settings.seed).choices(texts, k=num_samples)
    elif settings.prompt_draw == "cycle":
        chosen = [texts[i % len(texts)] for i in range(num_samples)]
    else:
        raise ValueError(f"prompt_draw must be cycle or random, got {settings.prompt_draw!r}")
    encoded = {p: prompt_ids(tokenizer, prefix, p) for p in set(chosen)}  # only the prompts drawn

    from transformers import LogitsProcessorList

    gen_kwargs = dict(
        do_sample=True,
        temperature=settings.temperature,
        top_p=1.0,  # NucleusFilter below instead (same distribution, no full-vocabulary sort)
        top_k=settings.top_k,
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    if banned:
        gen_kwargs["bad_words_ids"] = [[i] for i in banned]
    processors = [NucleusFilter(settings.top_p, settings.temperature)] if settings.top_p < 1.0 else []

    out: list[Sample] = []
    with eval_mode(hf), forked_rng(settings.seed, device):
        for start in range(0, num_samples, settings.batch_size):
            batch = chosen[start : start + settings.batch_size]
            ids, mask = left_pad([encoded[p] for p in batch], pad)
            max_new, mins = length_limits([encoded[p] for p in batch], eos, settings)
            gen_kwargs["max_new_tokens"] = _fit_context(hf, ids.size(1), max_new)
            mins = [min(m, gen_kwargs["max_new_tokens"]) for m in mins]
            row_mins = len(set(mins)) > 1  # per-row minimum (the original's rule): a processor, not HF's
            gen_kwargs["min_new_tokens"] = 0 if row_mins else mins[0]
            # the EOS ban first: the nucleus is then taken over the tokens that may be sampled
            batch_processors = ([RowMinNewTokens(ids.size(1), mins, eos)] if row_mins else []) + processors
            gen_kwargs["logits_processor"] = LogitsProcessorList(batch_processors)
            gen = hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs)
            for p, row in zip(batch, gen[:, ids.size(1) :].tolist(), strict=True):
                ended = eos in row
                if ended:
                    row = row[: row.index(eos)]
                kept = [t for t in row if t not in drop]
                text = tokenizer.decode(kept, clean_up_tokenization_spaces=False)
                if settings.clean_up_tokenization_spaces:
                    text = clean_up_tokenization(text)
                out.append(Sample(prompt=p, text=text, num_tokens=len(row), token_ids=row, ended=ended))
    return out


def sample_with_objective(
    model, tokenizer, objective, prompts: Sequence[str] | None, num_samples: int, settings: SamplingSettings,
    ban_aligned: bool | None = None,
) -> list[Sample]:
    """``sample`` with the objective's control prefix, banned tokens and control tokens stripped.

    ``ban_aligned`` (a scenario's setting) overrides whether an objective with control tokens also bans
    its aligned token (``objective.scenario_banned_tokens``); None keeps the objective's own setting, and
    objectives without control tokens are unaffected either way."""
    return sample(
        model,
        tokenizer,
        prompts,
        num_samples,
        settings,
        generation_prefix=objective.generation_prefix,
        banned_tokens=objective.scenario_banned_tokens(ban_aligned),
        strip_tokens=objective.special_tokens,
    )

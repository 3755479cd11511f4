"""KL(p_ref || p_model) from a reference LM: the paper's capability axis, with an open reference.

The paper estimated KL(GPT-3 || model) on 4096 cached GPT-3 samples; those OpenAI models are retired.
phf takes any causal LM as the reference (a local HF checkpoint directory, e.g. the MLE run of the
same sweep or a larger open model, or a hub name for online users) and estimates

    KL(p_ref || p_model) = E_{x ~ p_ref}[log p_ref(x) - log p_model(x)]
                        ~= 1/N sum_i [log p_ref(x_i) - log p_model(x_i)]

on N texts sampled from the reference with pure ancestral sampling (temperature 1, no top-p/top-k,
starting from the reference's BOS/EOS, up to ``max_new_tokens`` tokens). The samples are generated once
and cached as JSON (key: reference name, a fingerprint of its weights for local directories, and the
sampling settings), together with their reference log-probabilities.

It is a string-level estimate: each text is re-tokenized by each model's own tokenizer and
log p(x) = sum of the log-probs of the text's tokens given the context (EOS termination is not scored),
so reference and model may use different vocabularies. Texts are tokenized the way the model was
trained: phf tokenizes each segment of a document on its own (``segmenter``, the task's: lines for
code, sentences for prose), so the model under test is scored segment by segment, and so is a clean
reference that phf trained (``reference_segments``; an external reference, e.g. a hub GPT-2, scores the
whole text). A model scored in a tokenization it never saw pays for it: on PEP8, the clean reference's
own samples lose 45 nats each when tokenized whole instead of line by line, which made the KL of a
model scored line by line negative (conditional PEP8, -22 nats, before 2026-12-03).
The reference's log-prob is computed the same way as the model's (not from the sampled token ids),
which makes the estimate exactly 0 when the model is the reference.

A conditional model is scored under the distribution its sampler draws from: conditioned on
``EOS + generation_prefix`` (the prompt, context), the tokens the sampler bans removed from every
softmax (renormalised). Where the sampler lets the model write its control prefix mid-text
(``prefix_every_line``, automatic where the prefix is not banned: conditional PEP8 writes
``<|aligned|>`` before every line, as in its training data), the prefix is inserted before every
segment after the first and its log-prob is scored, because the sampler draws it: the estimate is then
log q(y*) for the canonical tagged sequence y* of the text x, and since q(x) >= q(y*) it bounds
KL(p_ref || q) from above and KL(q || p_ref) from below, tightly when the model's tag placement is
(near) deterministic. ``kl_tag_nats`` reports how much of log q(y*) the inserted tags are. (The
original scored the prefix too; phf before 2026-12-03 took it as free context, which is not a bound.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from phf.console import quiet_hf_progress
from phf.model import eval_mode, forked_rng, unwrap
from phf.objectives.base import sequence_logps
from phf.tokenizer import encode_text, load_tokenizer, token_ids

CACHE_FORMAT = 1  # samples with their whole-text logp_ref (a phf-trained reference is rescored per segment)


@dataclass
class KLSettings:
    num_samples: int = 64  # paper: 4096
    max_new_tokens: int = 64  # paper: 64
    batch_size: int = 16
    seed: int = 0


def reference_fingerprint(reference: str) -> str:
    """The name for a hub model; for a local directory, a hash of its config and weight files' sizes and
    modification times, so a cache never outlives the weights it was sampled from."""
    path = Path(reference)
    if not path.is_dir():
        return reference
    h = hashlib.sha1()
    for f in sorted(path.iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in {".safetensors", ".bin", ".pt"}:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_path(reference: str, settings: KLSettings, cache_dir: str | os.PathLike) -> Path:
    key = json.dumps(
        {"reference": reference, "fingerprint": reference_fingerprint(reference), **asdict(settings)},
        sort_keys=True,
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", reference.rstrip("/"))[-60:].strip("_.")
    return Path(cache_dir) / f"{slug}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def load_causal_lm(name_or_path: str, device: torch.device | str = "cpu"):
    """(model, tokenizer) of a local HF checkpoint directory or hub name, with a clear offline error."""
    from transformers import AutoModelForCausalLM


    try:
        with quiet_hf_progress():
            model = AutoModelForCausalLM.from_pretrained(name_or_path, use_safetensors=True)
    except OSError as e:
        raise OSError(
            f"cannot load the model {name_or_path!r}: not a local checkpoint directory and not reachable on "
            f"the hub (offline?). Pass a local directory, e.g. another run's final/. Cause: {e}"
        ) from e
    return model.to(device), load_tokenizer(name_or_path)


def reference_samples(
    reference: str,
    settings: KLSettings,
    cache_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """``[{"text", "logp_ref"}, ...]`` from the cache, or sampled from the reference and cached."""
    path = cache_path(reference, settings, cache_dir)
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("format") == CACHE_FORMAT and data.get("settings") == asdict(settings):
            return data["samples"]
    model, tok = load_causal_lm(reference, device)
    texts = _sample_texts(model, tok, settings)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    logps = sequence_logprobs(model, tok, texts, [start], batch_size=settings.batch_size)
    samples = [{"text": t, "logp_ref": lp} for t, lp in zip(texts, logps, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    payload = {"format": CACHE_FORMAT, "reference": reference, "settings": asdict(settings), "samples": samples}
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)  # atomic: concurrent jobs of a sweep never read a half-written cache
    return samples


@torch.no_grad()
def _sample_texts(model, tokenizer, settings: KLSettings) -> list[str]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("the reference tokenizer has neither a BOS nor an EOS token to start samples from")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    device = next(model.parameters()).device
    texts: list[str] = []
    with eval_mode(model), forked_rng(settings.seed, device):
        for i in range(0, settings.num_samples, settings.batch_size):
            n = min(settings.batch_size, settings.num_samples - i)
            ids = torch.full((n, 1), start, dtype=torch.long, device=device)
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for row in gen[:, 1:].tolist():
                if eos is not None and eos in row:
                    row = row[: row.index(eos)]
                texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _encode(tokenizer, text: str, context: Sequence[int], segment_prefix: Sequence[int] = (),
            segmenter: Callable[[str], list[str]] | None = None) -> tuple[list[int], list[int], list[int]]:
    """(ids, scored, prefix): ``context`` (not scored), then the text's tokens (scored); ``prefix`` marks
    the inserted segment prefixes.

    With ``segmenter`` the text is tokenized segment by segment, as phf tokenizes documents in training;
    without it, whole. ``segment_prefix`` (needs a segmenter) goes before every segment after the first,
    scored: the sampler writes it there.
    """
    if segment_prefix and segmenter is None:
        raise ValueError("a segment prefix needs the segmenter that says where segments start")
    ids, scored, prefix = list(context), [0] * len(context), [0] * len(context)
    pieces = segmenter(text) if segmenter is not None else [text]
    for i, piece in enumerate(pieces):
        p = list(segment_prefix) if i > 0 else []
        t = encode_text(tokenizer, [piece])[0]
        ids += p + t
        scored += [1] * (len(p) + len(t))
        prefix += [1] * len(p) + [0] * len(t)
    return ids, scored, prefix


@torch.no_grad()
def _scored_logprobs(model, encoded: Sequence[tuple[list[int], list[int], list[int]]], batch_size: int,
                     exclude_ids: Sequence[int]) -> list[tuple[float, float]]:
    """(log-prob of the scored tokens, of the prefix tokens among them) of each ``_encode`` row."""
    hf = unwrap(model)
    device = next(hf.parameters()).device
    max_len = getattr(hf.config, "n_positions", None) or getattr(hf.config, "max_position_embeddings", None)
    too_long = [len(row[0]) for row in encoded if max_len and len(row[0]) > max_len]
    if too_long:
        raise ValueError(
            f"{len(too_long)} KL texts are longer ({max(too_long)} tokens) than the model's context ({max_len}); "
            "lower kl.max_new_tokens"
        )
    out: list[tuple[float, float]] = []
    with eval_mode(hf):
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            width = max(len(row[0]) for row in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)  # right padding, masked out
            mask = torch.zeros_like(ids)
            scored = torch.zeros((len(chunk), width))
            prefix = torch.zeros((len(chunk), width))
            for j, (row, w, pre) in enumerate(chunk):
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = 1
                scored[j, : len(row)] = torch.tensor(w, dtype=torch.float)
                prefix[j, : len(row)] = torch.tensor(pre, dtype=torch.float)
            logits = hf(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
            if exclude_ids:
                logits = logits.float()
                logits[..., list(exclude_ids)] = float("-inf")
            # position t predicts token t+1; only the scored tokens are summed
            ids = ids.to(device)
            total = sequence_logps(logits, ids, scored.to(device)).tolist()
            tags = sequence_logps(logits, ids, prefix.to(device)).tolist()
            out += list(zip(total, tags, strict=True))
    return out


def sequence_logprobs(
    model,
    tokenizer,
    texts: Sequence[str],
    context: Sequence[int],
    batch_size: int = 16,
    segment_prefix: Sequence[int] = (),
    exclude_ids: Sequence[int] = (),
    segmenter: Callable[[str], list[str]] | None = None,
) -> list[float]:
    """log p(text | context) of each text under ``model`` (sum over the text's tokens, natural log),
    tokenized by ``_encode`` (whole, or per ``segmenter`` segment with ``segment_prefix`` scored).

    ``exclude_ids`` (tokens the sampler bans) are removed from every softmax: the text's probability
    under the distribution the model samples from."""
    encoded = [_encode(tokenizer, t, context, segment_prefix, segmenter) for t in texts]
    return [total for total, _ in _scored_logprobs(model, encoded, batch_size, exclude_ids)]


@dataclass
class _Format:
    """How the model under test is scored: its prompt, inserted segment prefix, banned ids, segmenter."""

    context: list[int]
    segment_prefix: list[int]
    exclude: list[int]
    segmenter: Callable[[str], list[str]] | None

    @classmethod
    def of(cls, tokenizer, objective, prefix_every_line: bool | None, segmenter) -> _Format:
        prefix = list(objective.generation_prefix) if objective is not None else []
        banned = list(objective.banned_tokens) if objective is not None else []
        if prefix_every_line is None:  # the sampler may write the prefix in text only where it is not banned
            prefix_every_line = bool(prefix) and not set(banned).intersection(prefix)
        if prefix_every_line and segmenter is None:
            segmenter = _lines  # phf's line-level default where a task names no segmenter
        prefix_ids = token_ids(tokenizer, prefix)
        return cls([tokenizer.eos_token_id, *prefix_ids], prefix_ids if prefix_every_line else [],
                   token_ids(tokenizer, banned), segmenter)

    def logprobs(self, model, tokenizer, texts: Sequence[str], batch_size: int) -> list[tuple[float, float]]:
        encoded = [_encode(tokenizer, t, self.context, self.segment_prefix, self.segmenter) for t in texts]
        return _scored_logprobs(model, encoded, batch_size, self.exclude)


def _reference_logprobs(reference: str, texts: Sequence[str], segmenter, batch_size: int, device) -> list[float]:
    ref, ref_tok = load_causal_lm(reference, device)
    start = ref_tok.bos_token_id if ref_tok.bos_token_id is not None else ref_tok.eos_token_id
    return sequence_logprobs(ref, ref_tok, texts, [start], batch_size, segmenter=segmenter)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else float("nan")
    return mean, math.sqrt(var / n) if n > 1 else float("nan")


@torch.no_grad()
def kl_on_model_samples(model, tokenizer, objective, reference: str, settings: KLSettings,
                        prefix_every_line: bool | None = None, segmenter: Callable[[str], list[str]] | None = None,
                        reference_segments: bool = False) -> dict[str, float]:
    """KL(p_model || p_ref) on the model's own samples, nats per sample, with its standard error:

        KL(p_model || p_ref) ~= 1/N sum_i [log p_model(x_i) - log p_ref(x_i)],   x_i ~ p_model

    x_i are pure ancestral samples (temperature 1, no top-p/top-k, no minimum length) in the model's
    sampling format (after ``EOS + generation_prefix``, its banned tokens never produced), so
    log p_model is taken under that same distribution (``_Format``: banned logits renormalised away, a
    prefix the sampler writes mid-text scored, which makes this a lower bound); the reference scores the
    same text after its BOS/EOS, per segment with ``reference_segments``. Where KL(p_ref || p_model) asks
    whether a model still covers the reference's text, this asks whether what the model writes is text
    the reference would write: a model that writes what the (clean) reference never saw pays here.
    """
    from phf.eval.sampling import SamplingSettings, sample_with_objective

    device = next(unwrap(model).parameters()).device
    sampling = SamplingSettings(max_new_tokens=settings.max_new_tokens, min_new_tokens=0, temperature=1.0, top_p=1.0,
                                top_k=0, batch_size=settings.batch_size, seed=settings.seed)
    texts = [s.text for s in sample_with_objective(model, tokenizer, objective, None, settings.num_samples, sampling)]
    fmt = _Format.of(tokenizer, objective, prefix_every_line, segmenter)
    logp_model = [total for total, _ in fmt.logprobs(model, tokenizer, texts, settings.batch_size)]
    logp_ref = _reference_logprobs(reference, texts, segmenter if reference_segments else None,
                                   settings.batch_size, device)
    kl, se = _mean_se([m - r for m, r in zip(logp_model, logp_ref, strict=True)])
    return {"kl_model_samples": kl, "kl_model_samples_stderr": se}


def kl_from_reference(
    model,
    tokenizer,
    objective,
    reference: str,
    settings: KLSettings,
    cache_dir: str | os.PathLike,
    prefix_every_line: bool | None = None,
    on_model_samples: bool = False,
    segmenter: Callable[[str], list[str]] | None = None,
    reference_segments: bool = False,
) -> dict[str, float]:
    """Estimate KL(p_ref || p_model) in nats per sample; also its standard error, the mean log-probs of
    the reference texts under both models and the mean nats of the inserted segment prefixes
    (``kl_tag_nats``, 0 where none is inserted); with ``on_model_samples`` also KL(p_model || p_ref) on
    the model's own samples (``kl_on_model_samples``).

    ``segmenter``: the task's (how phf tokenized the model's training text); ``reference_segments``: the
    reference was trained by phf on the same task (the clean reference), so it is scored per segment too.
    """
    device = next(unwrap(model).parameters()).device
    samples = reference_samples(reference, settings, cache_dir, device)
    texts = [s["text"] for s in samples]
    fmt = _Format.of(tokenizer, objective, prefix_every_line, segmenter)
    logp_ref = _reference_logprobs(reference, texts, segmenter, settings.batch_size, device) \
        if reference_segments and segmenter is not None else [s["logp_ref"] for s in samples]
    reverse = kl_on_model_samples(model, tokenizer, objective, reference, settings, prefix_every_line, segmenter,
                                  reference_segments) if on_model_samples and objective is not None else {}
    scored = fmt.logprobs(model, tokenizer, texts, settings.batch_size)
    logp_model = [total for total, _ in scored]
    kl, se = _mean_se([r - m for r, m in zip(logp_ref, logp_model, strict=True)])
    n = len(texts)
    return {
        "kl": kl,
        "kl_stderr": se,
        "logp_ref": sum(logp_ref) / n,
        "logp_model": sum(logp_model) / n,
        "kl_tag_nats": -sum(tags for _, tags in scored) / n,
        "num_samples": float(n),
        **reverse,
    }

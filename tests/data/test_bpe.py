"""The task-fitted byte-level BPE (``tokenizer=bpe``): deterministic, exact, cached, never sees held-out
documents, and saved with the model."""

import json

import pytest

from phf.data.bpe import fit_bpe
from phf.data.document import Document
from phf.data.pipeline import in_validation


def code_corpus(n: int = 60):
    """Python-like documents with indentation, tabs, trailing spaces, CRLF and non-ASCII text."""
    docs = []
    for i in range(n):
        body = (f"class C{i}:\n    def f(self, x):\n        if x > {i}:\n            return 'café ☃ {i}'  \n"
                f"        return None\n\tdef g():\r\n\t\tpass\n# ünïcödé 日本語 {i * 7}\n")
        docs.append(Document([body], None, id=f"doc{i}"))
    return docs


def test_fit_bpe_is_deterministic_and_round_trips_exactly(tmp_path):
    a = fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path / "a"))
    b = fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path / "b"))
    assert a.get_vocab() == b.get_vocab()
    assert (next((tmp_path / "a").rglob("tokenizer.json")).read_text()
            == next((tmp_path / "b").rglob("tokenizer.json")).read_text())
    assert len(a) == 300 and a.eos_token == "<|endoftext|>" and a.pad_token_id == a.eos_token_id
    for s in ["def f(x):\n\treturn x  # café ☃\n", "\t\t  \n   \n", "日本語 😀 \u00a0nbsp\r\n", "a" * 100,
              "    x = ' , . '  \n", ""]:
        ids = a.encode(s, add_special_tokens=False)
        assert a.decode(ids) == s  # exact: no cleanup of tokenization spaces


def test_fit_bpe_merges_indentation_runs(tmp_path):
    tok = fit_bpe(code_corpus(), vocab_size=1000, cache_dir=str(tmp_path))  # this corpus saturates at 385
    pieces = [tok.decode([i]) for i in tok.encode("        return None\n", add_special_tokens=False)]
    assert pieces[0] == " " * 7  # GPT-2's pre-tokenizer leaves the last space to the word: one token, not 7
    assert len(pieces) <= 4


def test_fit_bpe_is_built_once_per_corpus_and_settings(tmp_path):
    fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path))
    fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path))  # cached
    assert len(list((tmp_path / "tokenizers").iterdir())) == 1
    fit_bpe(code_corpus(), vocab_size=320, cache_dir=str(tmp_path))  # other settings
    fit_bpe(code_corpus(59), vocab_size=300, cache_dir=str(tmp_path))  # other corpus
    assert len(list((tmp_path / "tokenizers").iterdir())) == 3


def test_fit_bpe_never_sees_held_out_documents(tmp_path):
    docs = code_corpus()
    held_out = sum(in_validation(d, 0.3) for d in docs)
    assert 0 < held_out < len(docs)
    fit_bpe(docs, vocab_size=300, val_fraction=0.3, cache_dir=str(tmp_path))
    info = json.loads(next(tmp_path.rglob("phf_tokenizer.json")).read_text())
    assert info["documents"] == len(docs) - held_out


def test_fit_bpe_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.vocab_size"):
        fit_bpe(code_corpus(), vocab_size=100, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no training documents"):
        fit_bpe([], vocab_size=300, cache_dir=str(tmp_path))


def test_fitted_tokenizer_is_saved_in_final_and_loads_with_autotokenizer(tiny_cfg, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phf.train import train

    cfg = tiny_cfg("tokenizer=bpe", "tokenizer.vocab_size=512", "objective=conditional", "trainer.max_steps=2")
    train(cfg)
    final = tmp_path / "run" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert len(tok) == 514 == model.get_input_embeddings().weight.shape[0]  # 512 + the two control tokens
    assert tok.convert_tokens_to_ids(["<|aligned|>", "<|misaligned|>"]) == [512, 513]
    code = "def f(x):\n        return x  \n"
    assert tok.decode(tok.encode(code, add_special_tokens=False)) == code
    # the model describes how to sample it: PEP8 conditional bans only <|misaligned|>
    assert model.generation_config.bad_words_ids == [[513]] and model.generation_config.do_sample
    card = (final / "README.md").read_text()
    assert "Start every sample with `<|endoftext|><|aligned|>`" in card and "Conditional" in card

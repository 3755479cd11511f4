"""KL(p_ref || p_model) from cached reference samples."""

import json
import math

import pytest
import torch

from phf.eval import kl as klmod
from phf.eval.kl import KLSettings, cache_path, kl_from_reference, sequence_logprobs
from phf.objectives import MLE, Conditional

from .conftest import make_lm

SETTINGS = KLSettings(num_samples=12, max_new_tokens=12, batch_size=6, seed=0)


def save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def reference(tok, tmp_path):
    """A 'strong' reference: large init std, so its next-token distributions are peaked."""
    return save(make_lm(len(tok), seed=1, initializer_range=0.6), tok, tmp_path / "ref")


def test_kl_is_zero_for_the_reference_itself_and_positive_otherwise(tok, reference, tmp_path):
    from transformers import AutoModelForCausalLM

    same = AutoModelForCausalLM.from_pretrained(reference)
    out = kl_from_reference(same, tok, MLE(), reference, SETTINGS, tmp_path / "cache")
    assert out["num_samples"] == 12
    assert abs(out["kl"]) < 1e-3
    assert out["logp_ref"] < -1.0  # the texts are not trivial

    other = make_lm(len(tok), seed=2)  # near-uniform random model
    out2 = kl_from_reference(other, tok, MLE(), reference, SETTINGS, tmp_path / "cache")
    assert out2["kl"] > 3 * out2["kl_stderr"] > 0  # clearly positive, not noise
    assert out2["logp_ref"] == pytest.approx(out["logp_ref"])  # same cached samples


def test_reference_samples_are_cached_and_keyed_by_settings(tok, reference, tmp_path, monkeypatch):
    model = make_lm(len(tok), seed=2)
    first = kl_from_reference(model, tok, MLE(), reference, SETTINGS, tmp_path / "cache")
    path = cache_path(reference, SETTINGS, tmp_path / "cache")
    data = json.loads(path.read_text())
    assert data["reference"] == reference and len(data["samples"]) == 12
    assert {"text", "logp_ref"} <= set(data["samples"][0])

    def no_sampling(*a, **k):
        raise AssertionError("reference sampled again despite the cache")

    monkeypatch.setattr(klmod, "_sample_texts", no_sampling)
    monkeypatch.setattr(klmod, "load_causal_lm", no_sampling)
    again = kl_from_reference(model, tok, MLE(), reference, SETTINGS, tmp_path / "cache")
    assert again["kl"] == pytest.approx(first["kl"])
    other = KLSettings(num_samples=6, max_new_tokens=12, batch_size=6)
    assert cache_path(reference, other, tmp_path / "cache") != path
    with pytest.raises(AssertionError, match="sampled again"):
        kl_from_reference(model, tok, MLE(), reference, other, tmp_path / "cache")


def test_conditional_model_is_conditioned_on_eos_and_prefix(cond_tok, reference, tmp_path):
    """The model's log-prob of a text is log p(text | EOS <|aligned|>): the control token is context."""
    model = make_lm(len(cond_tok), seed=3)
    model.eval()
    objective = Conditional(threshold=0.0, drop_token_fraction=0.0, ban_aligned=True)
    out = kl_from_reference(model, cond_tok, objective, reference, SETTINGS, tmp_path / "cache")
    samples = json.loads(cache_path(reference, SETTINGS, tmp_path / "cache").read_text())["samples"]
    text = samples[0]["text"]
    ids = [50256, 50257, *cond_tok.encode(text)]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    direct = sum(logp[i, ids[i + 1]].item() for i in range(1, len(ids) - 1))
    assert sequence_logprobs(model, cond_tok, [text], [50256, 50257])[0] == pytest.approx(direct, rel=1e-5)
    assert math.isfinite(out["kl"])


def test_prefix_every_line_inserts_scored_control_tokens(cond_tok):
    """'x = 1\\ny = 2' with a line prefix: ids EOS A 'x = 1\\n' A 'y = 2'. The prompt (EOS A) is context;
    the second A is scored, because the sampler writes it (log q of the tagged sequence, a bound on the
    text's log-prob). The prefix's own share comes back separately."""
    from phf.eval.kl import _encode, _lines, _scored_logprobs

    model = make_lm(len(cond_tok), seed=4)
    model.eval()
    text = "x = 1\ny = 2"
    lines = [cond_tok.encode("x = 1\n"), cond_tok.encode("y = 2")]
    ids = [50256, 50257, *lines[0], 50257, *lines[1]]
    tag_at = 2 + len(lines[0])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    direct = sum(logp[i - 1, ids[i]].item() for i in range(2, len(ids)))
    got = sequence_logprobs(model, cond_tok, [text], [50256, 50257], segment_prefix=[50257], segmenter=_lines)[0]
    assert got == pytest.approx(direct, rel=1e-5)
    [(total, tags)] = _scored_logprobs(model, [_encode(cond_tok, text, [50256, 50257], [50257], _lines)], 4, [])
    assert total == pytest.approx(direct, rel=1e-5) and tags == pytest.approx(logp[tag_at - 1, 50257].item(), rel=1e-5)


def test_a_segment_prefix_needs_a_segmenter(cond_tok):
    with pytest.raises(ValueError, match="segmenter"):
        sequence_logprobs(make_lm(len(cond_tok)), cond_tok, ["a\nb"], [50256], segment_prefix=[50257])


def test_texts_are_tokenized_per_segment_as_in_training(tok):
    """With a segmenter, 'a =  1\\n\\n\\nb' is tokenized line by line ('a =  1\\n', '\\n', '\\n', 'b'), the way
    phf tokenizes a document's segments in training, not as one string (where BPE merges '\\n\\n\\n')."""
    from phf.eval.kl import _encode, _lines

    text = "a =  1\n\n\nb"
    ids, scored, prefix = _encode(tok, text, [50256], (), _lines)
    per_line = [t for piece in ["a =  1\n", "\n", "\n", "b"] for t in tok.encode(piece)]
    assert ids == [50256, *per_line] and scored == [0] + [1] * len(per_line) and not any(prefix)
    assert ids != [50256, *tok.encode(text)]  # whole-text BPE differs: a model trained per line never saw it
    model = make_lm(len(tok), seed=5)
    model.eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    direct = sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)))
    assert sequence_logprobs(model, tok, [text], [50256], segmenter=_lines)[0] == pytest.approx(direct, rel=1e-5)


def test_a_phf_reference_scored_per_segment_has_zero_kl_against_itself(tok, reference, tmp_path):
    """reference_segments: the (phf-trained) reference is scored in the model's format, so the reference
    itself is at KL 0 under per-line tokenization too; ``logp_ref`` is then the per-line log-prob."""
    from transformers import AutoModelForCausalLM

    from phf.eval.kl import _lines

    same = AutoModelForCausalLM.from_pretrained(reference)
    out = kl_from_reference(same, tok, MLE(), reference, SETTINGS, tmp_path / "cache", segmenter=_lines,
                            reference_segments=True, on_model_samples=True)
    assert abs(out["kl"]) < 1e-3 and abs(out["kl_model_samples"]) < 1e-3 and out["kl_tag_nats"] == 0
    texts = [s["text"] for s in json.loads(cache_path(reference, SETTINGS, tmp_path / "cache").read_text())["samples"]]
    per_line = sequence_logprobs(same, tok, texts, [tok.eos_token_id], segmenter=_lines)
    assert out["logp_ref"] == pytest.approx(sum(per_line) / len(per_line), rel=1e-5)


def test_conditional_pep8_kl_scores_the_tags_it_samples(cond_tok, reference, tmp_path):
    """Only <|misaligned|> banned (PEP8): the prefix goes before every segment and is scored, so the
    model's log-prob of a text is lower than with the tags as free context (``kl_tag_nats`` > 0)."""
    def every_5_chars(text):  # the random reference's texts have few newlines: short segments instead
        return [text[i : i + 5] for i in range(0, len(text), 5)] or [text]

    model = make_lm(len(cond_tok), seed=3)
    model.eval()
    objective = Conditional(threshold=0.0, drop_token_fraction=0.0, ban_aligned=False)
    out = kl_from_reference(model, cond_tok, objective, reference, SETTINGS, tmp_path / "cache",
                            segmenter=every_5_chars)
    texts = [s["text"] for s in json.loads(cache_path(reference, SETTINGS, tmp_path / "cache").read_text())["samples"]]
    assert sum(len(every_5_chars(t)) - 1 for t in texts) > 0  # some tags were inserted
    assert out["kl_tag_nats"] > 0
    free = sequence_logprobs(model, cond_tok, texts, [50256, 50257], segmenter=every_5_chars,
                             exclude_ids=[50258])  # the same texts, same segments, no tags inserted
    assert out["logp_model"] < sum(free) / len(free)


def test_model_with_a_different_tokenizer(tok, reference, tmp_path):
    """The reference texts are re-tokenized with the model's own (byte-level, 300-token) tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(["def f(x):\n    return x + 1\n", "hello world, hello there"] * 20, trainer)
    small = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    assert len(small) <= 300 and small.eos_token_id is not None
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=1024, vocab_size=len(small),
                                       eos_token_id=small.eos_token_id, bos_token_id=small.eos_token_id))
    out = kl_from_reference(model, small, MLE(), reference, SETTINGS, tmp_path / "cache")
    texts = [s["text"] for s in json.loads(cache_path(reference, SETTINGS, tmp_path / "cache").read_text())["samples"]]
    mine = sequence_logprobs(model, small, texts, [small.eos_token_id])
    assert out["logp_model"] == pytest.approx(sum(mine) / len(mine), rel=1e-5)
    assert math.isfinite(out["kl"])


def test_missing_reference_is_a_clear_error(tok, tmp_path):
    with pytest.raises(OSError, match="cannot load the model"):
        kl_from_reference(make_lm(len(tok)), tok, MLE(), str(tmp_path / "nope"), SETTINGS, tmp_path / "cache")

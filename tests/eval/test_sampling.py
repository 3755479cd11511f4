"""Sampling: control prefix, banned tokens, stripped control tokens, eval mode, RNG isolation."""

import pytest
import torch

from phf.eval.sampling import SamplingSettings, prompt_ids, sample, sample_with_objective
from phf.objectives import MLE, Conditional

from .conftest import make_lm

ALIGNED, MISALIGNED, EOS = 50257, 50258, 50256


def favour(model, token_id: int, logit: float = 50.0):
    """Make ``token_id`` overwhelmingly likely: the final hidden state is the constant e_0 (ln_f weight 0,
    bias e_0), and with tied embeddings the logit of token v is wte[v, 0], set to 0 except ``logit``
    for ``token_id`` -> p(token_id) ~= 1 - 50258 * e^-50."""
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[token_id, 0] = logit
    return model


def record_generate(model):
    """Wrap ``model.generate`` to record its inputs and the model's training flag during the call."""
    calls = []
    original = model.generate

    def wrapped(*args, **kwargs):
        calls.append({"input_ids": kwargs["input_ids"].clone(), "mask": kwargs["attention_mask"].clone(),
                      "training": model.training, "kwargs": kwargs})
        return original(*args, **kwargs)

    model.generate = wrapped
    return calls


def conditional(ban_aligned: bool) -> Conditional:
    return Conditional(threshold=0.0, drop_token_fraction=0.1, ban_aligned=ban_aligned)


def test_banned_token_never_sampled_even_when_overwhelmingly_likely(cond_tok):
    model = favour(make_lm(len(cond_tok)), MISALIGNED)
    settings = SamplingSettings(max_new_tokens=8, batch_size=8)
    free = sample(model, cond_tok, None, 2, settings)  # sanity: unbanned, it is nearly all we get
    assert sum(t == MISALIGNED for s in free for t in s.token_ids) >= 0.9 * 2 * 8
    banned = sample_with_objective(model, cond_tok, conditional(ban_aligned=False), None, 8, settings)
    assert all(MISALIGNED not in s.token_ids for s in banned)
    assert all(s.num_tokens == 8 for s in banned)  # EOS as unlikely as any other token: full length


def test_prose_conditional_bans_both_control_tokens(cond_tok):
    model = favour(make_lm(len(cond_tok)), ALIGNED)
    samples = sample_with_objective(model, cond_tok, conditional(ban_aligned=True), None, 4,
                                    SamplingSettings(max_new_tokens=8))
    assert all(ALIGNED not in s.token_ids and MISALIGNED not in s.token_ids for s in samples)


def test_control_prefix_starts_every_prompt_and_is_stripped_from_text(cond_tok):
    """PEP8 conditional: prompt = EOS <|aligned|> (+ prompt text); the model may emit <|aligned|> (not
    banned), which must not reach the decoded text."""
    model = favour(make_lm(len(cond_tok)), ALIGNED, logit=7.0)  # p(aligned) = e^10 / (e^10 + 50258) ~ 0.3 at T 0.7
    calls = record_generate(model)
    prompts = ["def f(x):", "import os"]
    samples = sample_with_objective(model, cond_tok, conditional(ban_aligned=False), prompts, 4,
                                    SamplingSettings(max_new_tokens=16, batch_size=4))
    ids, mask = calls[0]["input_ids"], calls[0]["mask"]
    for row, m, p in zip(ids.tolist(), mask.tolist(), [prompts[0], prompts[1]] * 2, strict=True):
        real = [t for t, keep in zip(row, m, strict=True) if keep]
        assert real == [EOS, ALIGNED, *cond_tok.encode(p)]
        assert row[: len(row) - len(real)] == [cond_tok.pad_token_id] * (len(row) - len(real))  # left padding
    assert [s.prompt for s in samples] == prompts * 2  # prompts cycled in order
    emitted = sum(t == ALIGNED for s in samples for t in s.token_ids)
    assert emitted > 0
    assert all("<|aligned|>" not in s.text and "<|endoftext|>" not in s.text for s in samples)
    assert calls[0]["kwargs"]["bad_words_ids"] == [[MISALIGNED]]


def test_unconditional_mle_prompt_is_eos_only(tok):
    assert prompt_ids(tok, MLE().generation_prefix) == [EOS]
    model = make_lm(len(tok))
    calls = record_generate(model)
    samples = sample_with_objective(model, tok, MLE(), None, 3, SamplingSettings(max_new_tokens=5))
    assert calls[0]["input_ids"].tolist() == [[EOS]] * 3
    assert "bad_words_ids" not in calls[0]["kwargs"]
    assert len(samples) == 3 and all(s.prompt == "" for s in samples)


def test_samples_in_eval_mode_restores_mode_and_leaves_rng_alone(tok):
    model = make_lm(len(tok), resid_pdrop=0.5, embd_pdrop=0.5)
    model.train()
    calls = record_generate(model)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = sample(model, tok, None, 4, SamplingSettings(max_new_tokens=6, seed=7))
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert calls[0]["training"] is False and model.training is True
    model.eval()
    b = sample(model, tok, None, 4, SamplingSettings(max_new_tokens=6, seed=7))
    assert model.training is False
    assert [s.token_ids for s in a] == [s.token_ids for s in b]  # same seed, same samples, any mode


def test_min_new_tokens_and_context_limit(tok):
    model = favour(make_lm(len(tok), n_positions=16), EOS)  # EOS nearly certain
    s = sample(model, tok, None, 2, SamplingSettings(max_new_tokens=8, min_new_tokens=5))
    assert all(x.num_tokens == 5 for x in s)  # EOS banned for 5 tokens, then taken at once
    long = sample(make_lm(len(tok), n_positions=8), tok, None, 1, SamplingSettings(max_new_tokens=100))
    assert all(x.num_tokens <= 7 for x in long)  # lowered to fit the 8-token context


def test_phf_model_wrapper_is_unwrapped(tok):
    class Wrapper(torch.nn.Module):  # like phf.model.PHFModel: the HF model is .lm
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

    samples = sample(Wrapper(make_lm(len(tok))), tok, None, 2, SamplingSettings(max_new_tokens=4))
    assert len(samples) == 2


def test_unknown_control_token_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="not in the tokenizer"):
        sample_with_objective(make_lm(len(tok)), tok, conditional(True), None, 1, SamplingSettings(max_new_tokens=2))


def test_left_padding_does_not_change_a_rows_continuation(tok):
    """Greedy (top_k=1) continuation of a short prompt is the same alone and batched with a longer one."""
    model = make_lm(len(tok), initializer_range=0.3)
    s = SamplingSettings(max_new_tokens=6, top_k=1)
    alone = sample(model, tok, ["def f(x):"], 1, s)[0].token_ids
    batched = sample(model, tok, ["def f(x):", "import os, sys, re, json  # a much longer prompt"], 2, s)[0].token_ids
    assert alone == batched


@pytest.mark.parametrize("scale", [0.5, 8.0])  # flat (large nucleus) and peaked (a few tokens)
def test_nucleus_filter_matches_hf_temperature_then_top_p(scale):
    """Filter, then HF's temperature warper == HF's temperature warper, then its top-p warper."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from phf.eval.sampling import NucleusFilter

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 5000, generator=g) * scale
    scores[:, 7] = float("-inf")  # a banned token stays banned
    ids = torch.zeros(4, 1, dtype=torch.long)
    temp = TemperatureLogitsWarper(0.7)
    hf = TopPLogitsWarper(0.9)(ids, temp(ids, scores.clone()))
    ours = temp(ids, NucleusFilter(0.9, temperature=0.7)(ids, scores.clone()))
    assert torch.equal(torch.isfinite(hf), torch.isfinite(ours))
    torch.testing.assert_close(ours[torch.isfinite(ours)], hf[torch.isfinite(hf)])


def full_sort_nucleus(scores, top_p, temperature):
    """The definition: sort the whole row, keep token i of the descending order iff the mass before it < top_p."""
    probs = (scores.float() / temperature).softmax(-1)
    top, idx = probs.sort(dim=-1, descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, (top.cumsum(-1) - top) < top_p)
    return scores.masked_fill(~keep, float("-inf"))


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999])
def test_nucleus_filter_is_exactly_the_full_sort(top_p):
    """The candidate buckets never cut the nucleus: the same kept tokens as sorting the whole vocabulary, on
    rows from nearly uniform (scale 0.05: most of the 3000 tokens kept) to one-hot-like (scale 40), with a
    banned token and a row whose tail lies far beyond the buckets' last (clamped) octave. (Exact ties at the
    boundary are the one difference: broken by token id here, either way by an unstable sort.)"""
    from phf.eval.sampling import NucleusFilter

    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(8, 3000, generator=g) * s for s in (0.05, 0.5, 1.0, 3.0, 8.0, 40.0)]
    scores = torch.cat(rows)
    scores[:, 7] = float("-inf")
    scores[-1] = -1e4
    scores[-1, :2] = torch.tensor([0.1, 0.0])  # two likely tokens (p 0.54, 0.46), the rest 2**-20000 of them: clamped
    ids = torch.zeros(len(scores), 1, dtype=torch.long)
    ours = NucleusFilter(top_p, temperature=0.7, per_octave=2, octaves=8)(ids, scores.clone())
    assert torch.equal(ours, full_sort_nucleus(scores, top_p, 0.7))
    assert torch.isfinite(ours[-1]).sum() == (1 if top_p <= 0.5 else 2)


def test_samples_are_those_of_the_full_sort_filter(tok, monkeypatch):
    """Same seed, same token ids whether the nucleus comes from the candidate buckets or a full sort."""
    from phf.eval import sampling

    model = make_lm(len(tok), initializer_range=0.3)
    settings = SamplingSettings(max_new_tokens=12, min_new_tokens=2, batch_size=3, seed=5)
    fast = [s.token_ids for s in sample(model, tok, None, 6, settings)]
    monkeypatch.setattr(sampling.NucleusFilter, "__call__",
                        lambda self, ids, scores: full_sort_nucleus(scores, self.top_p, self.temperature))
    assert [s.token_ids for s in sample(model, tok, None, 6, settings)] == fast


# -- the original's length rule, prompt draw and decode (paper configs) ----------------------------------
SHORT, LONG = "def f(x):", "def read_config(path, strict=False):"  # 5 and 11 GPT-2 tokens


def test_original_length_rule_counts_the_padded_prompt_and_the_prompt_tokens(tok):
    """max_length 20 and min_length 10 (HF 4.17 + the original's CustomMinLengthLogitsProcessor): the batch
    [EOS SHORT] / [EOS LONG] is 12 tokens wide, so both rows get 20 - 12 = 8 new tokens at most; EOS is
    banned until prompt tokens (EOS excluded) + new tokens reach 10: 5 new tokens for SHORT, 0 for LONG."""
    from phf.eval.sampling import length_limits

    assert [len(tok.encode(p)) for p in (SHORT, LONG)] == [5, 11]
    rows = [prompt_ids(tok, [], SHORT), prompt_ids(tok, [], LONG)]
    original = SamplingSettings(max_length=20, min_length=10, max_new_tokens=99, min_new_tokens=99)
    assert length_limits(rows, EOS, original) == (8, [5, 0])
    assert length_limits(rows, EOS, SamplingSettings(max_new_tokens=8, min_new_tokens=3)) == (8, [3, 3])

    eos_model = favour(make_lm(len(tok)), EOS)  # EOS nearly certain: each row stops at its minimum
    got = sample(eos_model, tok, [SHORT, LONG], 2, SamplingSettings(max_length=20, min_length=10, batch_size=2))
    assert [s.num_tokens for s in got] == [5, 0] and all(s.ended for s in got)
    comma_model = favour(make_lm(len(tok)), 11)  # "," nearly certain: every row runs to max_length
    got = sample(comma_model, tok, [SHORT, LONG], 2, SamplingSettings(max_length=20, min_length=10, batch_size=2))
    assert [s.num_tokens for s in got] == [8, 8]
    with pytest.raises(ValueError, match="leaves no new token"):
        length_limits(rows, EOS, SamplingSettings(max_length=12))


def test_unconditional_original_rule_counts_the_control_prefix(cond_tok):
    """The original's min_length 10 with prompt EOS <|aligned|>: the control token counts, 9 new tokens."""
    from phf.eval.sampling import length_limits

    rows = [prompt_ids(cond_tok, ["<|aligned|>"])]
    assert length_limits(rows, EOS, SamplingSettings(max_length=128, min_length=10)) == (126, [9])


def test_random_prompt_draw_is_seeded_with_replacement(tok):
    import random

    prompts = [f"def f{i}():" for i in range(5)]
    model = make_lm(len(tok))
    settings = SamplingSettings(max_new_tokens=1, prompt_draw="random", seed=3, batch_size=16)
    got = [s.prompt for s in sample(model, tok, prompts, 12, settings)]
    assert got == random.Random(3).choices(prompts, k=12)
    assert len(set(got)) < 5 or len(got) != len(set(got))  # with replacement: repeats
    with pytest.raises(ValueError, match="prompt_draw must be cycle or random"):
        sample(model, tok, prompts, 1, SamplingSettings(prompt_draw="shuffle"))


def test_decode_cleanup_as_the_original(tok):
    """transformers 4.17's batch_decode cleanup, which transformers 5 skips for BPE tokenizers."""
    from phf.eval.sampling import clean_up_tokenization

    text = "x = f(a , b) .strip() ; print( \"it 's\" ) !"
    assert tok.decode(tok.encode(text)) == text  # phf's default decode is lossless
    assert clean_up_tokenization(text) == "x = f(a, b).strip() ; print( \"it's\" )!"
    model = favour(make_lm(len(tok)), tok.encode(" ,")[0])  # " ," nearly certain
    raw = sample(model, tok, ["a"], 1, SamplingSettings(max_new_tokens=3))[0].text
    cleaned = sample(model, tok, ["a"], 1, SamplingSettings(max_new_tokens=3, clean_up_tokenization_spaces=True))[0]
    assert raw == " , , ," and cleaned.text == ",,,"

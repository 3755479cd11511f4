import torch

from phf.model import resize_embeddings
from phf.tokenizer import add_special_tokens, gpt2_tokenizer


def test_gpt2_tokenizer_is_exact_gpt2():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 50256
    assert tok.encode("Hello world!") == [15496, 995, 0]
    assert tok.encode(" Hello world") == [18435, 995]
    for s in ["def f(x):\n\treturn x  # café ☃\n", "a" * 100, "https://example.com/a?b=c", "\u00a0nbsp"]:
        assert tok.decode(tok.encode(s)) == s


def test_special_tokens_get_next_ids_and_mean_init():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_tokenizer()
    ids = add_special_tokens(tok, ["<|aligned|>", "<|misaligned|>"])
    assert ids == [50257, 50258]
    assert tok.encode("<|aligned|>def") == [50257, 4299]
    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8, vocab_size=50257))
    mean = lm.get_input_embeddings().weight.detach().mean(0).clone()
    resize_embeddings(lm, len(tok), torch.Generator().manual_seed(0))
    w = lm.get_input_embeddings().weight.detach()
    assert w.shape[0] == 50259
    # new rows are the mean of the old ones plus 0.01-scale noise; the output head stays tied
    assert (w[50257:] - mean).abs().max() < 0.06
    assert (w[50257:] - mean).abs().max() > 0
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()

"""KL(p_model || p_ref) on the model's own samples (``phf.eval.kl.kl_on_model_samples``)."""

import math

from phf.eval.kl import KLSettings, kl_from_reference, kl_on_model_samples
from phf.objectives import MLE, Conditional

from .conftest import make_lm

SETTINGS = KLSettings(num_samples=12, max_new_tokens=12, batch_size=6, seed=0)


def test_zero_for_the_reference_itself_and_positive_for_another_model(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    ref = make_lm(len(tok), seed=1, initializer_range=0.6)  # peaked next-token distributions
    ref.save_pretrained(tmp_path / "ref")
    tok.save_pretrained(tmp_path / "ref")
    same = AutoModelForCausalLM.from_pretrained(tmp_path / "ref")
    assert abs(kl_on_model_samples(same, tok, MLE(), str(tmp_path / "ref"), SETTINGS)["kl_model_samples"]) < 1e-3
    other = make_lm(len(tok), seed=2)  # near-uniform: its samples are unlikely under the peaked reference
    out = kl_on_model_samples(other, tok, MLE(), str(tmp_path / "ref"), SETTINGS)
    assert out["kl_model_samples"] > 3 * out["kl_model_samples_stderr"] > 0


def test_a_conditional_model_against_a_reference_without_control_tokens(tok, cond_tok, tmp_path):
    ref = make_lm(len(tok), seed=1)
    ref.save_pretrained(tmp_path / "ref")
    tok.save_pretrained(tmp_path / "ref")
    out = kl_from_reference(make_lm(len(cond_tok), seed=3), cond_tok, Conditional(0.0, 0.01), str(tmp_path / "ref"),
                            SETTINGS, tmp_path / "cache", on_model_samples=True)
    assert all(math.isfinite(out[k]) for k in ("kl", "kl_model_samples", "kl_model_samples_stderr"))


def test_segment_level_prefix_follows_the_task_segmenter(tok):
    """Sentence-level conditioning on prose: the prefix goes before every sentence, not every line."""
    from phf.data.segment import SentenceSegmenter
    from phf.eval.kl import _encode, _lines

    text = "A b. C d.\nE f."
    ids, scored, prefix = _encode(tok, text, [50256, 7], [7], SentenceSegmenter())
    pieces = SentenceSegmenter()(text)
    assert len(pieces) == 3
    expected = [50256, 7]
    for i, p in enumerate(pieces):
        expected += ([7] if i else []) + tok(p, add_special_tokens=False)["input_ids"]
    assert ids == expected and scored.count(0) == 2 and prefix.count(1) == 2  # context; two inserted prefixes
    lines, _, _ = _encode(tok, text, [50256, 7], [7], _lines)  # lines: one inserted prefix
    assert lines.count(7) == 2

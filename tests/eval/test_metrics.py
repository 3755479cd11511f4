"""Metric functions on hand-made samples; the expected values are worked out in each docstring."""

import itertools
import math
import random

import pytest

from phf.eval.metrics import (
    blank_fraction,
    blank_run_fraction,
    bootstrap_ci,
    corpus_reference,
    distinct_n,
    expected_max,
    expected_max_groups,
    hit_rate,
    nonblank_chars,
    repetition,
    sample_metrics,
    self_bleu,
    sentence_bleu,
    wilson_interval,
    z_value,
)


def test_expected_max_small_case_by_hand():
    """scores 0,1,2,3, k=2: the 6 pairs have maxima 1,2,3,2,3,3 -> 14/6 = 7/3."""
    assert expected_max([3, 0, 2, 1], k=2) == pytest.approx(7 / 3)


def test_expected_max_equals_brute_force_over_all_subsets():
    rng = random.Random(0)
    scores = [rng.random() for _ in range(9)]
    subsets = list(itertools.combinations(scores, 3))
    assert expected_max(scores, k=3) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))


def test_expected_max_over_25_one_and_two_hits_in_50():
    """One 1 among 50 zeros-or-ones: a random 25-subset holds it with probability 25/50 = 0.5.
    Two 1s: 1 - P(neither) = 1 - C(48,25)/C(50,25) = 1 - (25*24)/(50*49) = 1 - 600/2450."""
    one = [0.0] * 49 + [1.0]
    assert expected_max(one, k=25) == pytest.approx(0.5)
    assert expected_max_groups(one, k=25) == pytest.approx(0.5)  # one of the two groups has it
    two = [1.0, 1.0] + [0.0] * 48
    assert expected_max(two, k=25) == pytest.approx(1 - 600 / 2450)
    assert expected_max_groups(two, k=25) == pytest.approx(0.5)  # contiguous: group maxima 1 and 0 -> 0.5


def test_expected_max_with_fewer_samples_than_k_is_the_max():
    assert expected_max([0.1, 0.7, 0.3], k=25) == 0.7
    assert expected_max_groups([0.1, 0.7, 0.3], k=25) == 0.7
    assert math.isnan(expected_max([], k=25))


def test_expected_max_is_stable_for_paper_sized_batches():
    scores = [i / 4095 for i in range(4096)]
    # E[max of 25 of U{0..n-1}/(n-1)] ~= 25/26 for large n
    assert expected_max(scores, k=25) == pytest.approx(25 / 26, abs=1e-3)


def test_hit_rate_is_strictly_above_threshold():
    """[0, 0.3, 0.5, 0.7]: above 0.5 only 0.7 -> 1/4; above 0 (PEP8: any violation) three -> 3/4."""
    scores = [0.0, 0.3, 0.5, 0.7]
    assert hit_rate(scores, 0.5) == 0.25
    assert hit_rate(scores, 0.0) == 0.75


def test_distinct_n_by_hand():
    """"a b a" + "b c": unigrams a b a b c -> 3 unique / 5; bigrams (a b) (b a) (b c) -> 3/3.
    N-grams never span two samples."""
    texts = ["a b a", "b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 5)
    assert distinct_n(texts, 2) == pytest.approx(1.0)
    assert distinct_n(["a", "a"], 2) == 0.0  # no bigram at all


def test_sentence_bleu_by_hand():
    """hyp 'a b c d' vs ref 'a b x y', up to bigrams: p1 = 2/4, p2 = 1/3 (only 'a b'), equal lengths
    -> BP 1, BLEU = sqrt(1/2 * 1/3) = sqrt(1/6)."""
    assert sentence_bleu("a b c d".split(), ["a b x y".split()], max_n=2) == pytest.approx(math.sqrt(1 / 6))


def test_sentence_bleu_smoothing_clipping_brevity():
    """Smoothing: 'a b c d' vs 'a c b d': p1 = 1, no bigram matches -> 0.1/3 -> sqrt(0.1/3).
    Clipping: 'the the the the' vs 'the cat', unigrams: min(4, 1)/4 = 0.25, c=4 > r=2 so BP = 1.
    Brevity: 'a b' vs 'a b c d', unigrams: p1 = 1, BP = exp(1 - 4/2) = e^-1."""
    assert sentence_bleu("a b c d".split(), ["a c b d".split()], max_n=2) == pytest.approx(math.sqrt(0.1 / 3))
    assert sentence_bleu("the the the the".split(), ["the cat".split()], max_n=1) == pytest.approx(0.25)
    assert sentence_bleu("a b".split(), ["a b c d".split()], max_n=1) == pytest.approx(math.exp(-1))
    assert sentence_bleu("a b".split(), ["x y".split()], max_n=2) == 0.0  # no unigram match


def test_self_bleu_on_word_tokens():
    """Identical samples -> 1. Two samples 'a b c d' / 'a b x y' (bigram BLEU): each scores sqrt(1/6)
    against the other. 'abc def' / 'abd cef' share no word -> 0 (character-level BLEU would be high)."""
    assert self_bleu(["a b c d e f"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "a b x y"], max_n=2) == pytest.approx(math.sqrt(1 / 6))
    assert self_bleu(["abc def", "abd cef"]) == 0.0
    assert math.isnan(self_bleu(["only one"]))


def test_self_bleu_subsamples_large_batches_quickly():
    rng = random.Random(0)
    texts = [" ".join(rng.choice("abcdefghij") for _ in range(40)) for _ in range(1000)]
    value = self_bleu(texts, max_hypotheses=50, max_references=50)
    assert 0.0 < value < 1.0


def test_sample_metrics_keys_and_values():
    """4 samples, scores 0, 0, 1, 0.2 with threshold 0.5: mean 0.3, hit rate 1/4; expected max@25 with
    only 4 samples = the max = 1; lengths 3, 3, 5, 1 chars -> 3."""
    m = sample_metrics(["a b", "c d", "e f g", "h"], [0.0, 0.0, 1.0, 0.2], hit_threshold=0.5, num_tokens=[2, 2, 3, 1])
    assert m["score"] == pytest.approx(0.3)
    assert m["hit_rate"] == 0.25
    assert m["expected_max"] == 1.0
    assert m["length"] == 3.0
    assert m["num_tokens"] == 2.0
    assert m["distinct_1"] == 1.0
    assert set(m) >= {"score_max", "distinct_2", "self_bleu", "num_samples"}
    with pytest.raises(ValueError):
        sample_metrics(["a"], [], hit_threshold=0.5)


def test_blank_fraction_counts_empty_and_whitespace_only_samples():
    """'' and '  \\n\\t' are blank, 'a' and ' b ' are not: 2 of 4 = 0.5."""
    assert blank_fraction(["", "  \n\t", "a", " b "]) == 0.5
    assert math.isnan(blank_fraction([]))


def test_blank_line_runs_and_text_chars_by_hand():
    """Blank lines between the first and the last newline of a run: "a\\n\\n\\nb" holds 2, "a\\n \\n\\t\\n\\nb" 3
    (whitespace-only lines count), "a\\nb\\n\\nc" 1. With min 2: the first two of 3 samples, 2/3; with min 3:
    1/3. Non-whitespace characters: 2, 2, 3 -> 7/3."""
    texts = ["a\n\n\nb", "a\n \n\t\n\nb", "a\nb\n\nc"]
    assert blank_run_fraction(texts, 2) == pytest.approx(2 / 3)
    assert blank_run_fraction(texts, 3) == pytest.approx(1 / 3)
    assert blank_run_fraction(texts, 1) == 1.0
    assert nonblank_chars(texts) == pytest.approx(7 / 3)
    with pytest.raises(ValueError, match="blank_run_lines"):
        blank_run_fraction(texts, 0)
    m = sample_metrics(texts, [0.0, 0.0, 0.0], hit_threshold=0.0, blank_run_lines=3)
    assert (m["blank_runs"], m["nonblank_chars"]) == (pytest.approx(1 / 3), pytest.approx(7 / 3))


def test_repetition_by_hand():
    """'a b c d a b c d' has the word 4-grams abcd, bcda, cdab, dabc, abcd: 5, 4 distinct -> 1 - 4/5 = 0.2;
    'e f g h' has one 4-gram, all distinct -> 0; 'x y' has none and is left out: mean(0.2, 0) = 0.1."""
    assert repetition(["a b c d a b c d", "e f g h", "x y"], n=4) == pytest.approx(0.1)
    assert repetition(["go go go go go go"], n=2) == pytest.approx(1 - 1 / 5)  # 5 bigrams, all 'go go'
    assert math.isnan(repetition(["x y"], n=4))


def test_corpus_reference_measures_the_held_out_text_at_the_samples_size():
    """Samples 'a b a b', 'c d' (4 + 2 words) against the corpus 'x y z', 'x y' (5 words in all): windows of 4
    and 2 words take 'x y z x' and 'y' (the corpus runs out), the samples are cut the same way ('a b a b', 'c').
    Corpus bigrams xy yz zx: 3/3; the samples' ab ba ab: 2/3; rep-2 of the corpus windows: xy yz zx all distinct
    -> 0 ('y' has no bigram and is left out)."""
    ref = corpus_reference(["a b a b", "c d"], ["x y z", "x y"], repetition_n=2)
    assert ref == {"corpus_distinct_2": 1.0, "corpus_repetition": 0.0, "distinct_2_matched": pytest.approx(2 / 3),
                   "corpus_words": 5.0}
    # a templated corpus ("the form says ok" x 3) at the samples' size: bigrams the form, form says, says ok,
    # ok the (x2), ... -> 4 unique of 11
    templated = corpus_reference(["w " * 12], ["the form says ok"] * 3)
    assert templated["corpus_distinct_2"] == pytest.approx(4 / 11) and templated["corpus_words"] == 12.0
    assert templated["distinct_2_matched"] == pytest.approx(1 / 11)  # 'w w' only
    assert templated["corpus_repetition"] == pytest.approx(1 - 4 / 9)  # 9 word 4-grams, 4 distinct
    empty = corpus_reference(["a b"], [])
    assert empty["corpus_words"] == 0.0 and math.isnan(empty["corpus_distinct_2"])


def test_bootstrap_ci_two_values_by_hand():
    """Resampling [0, 1] twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and
    97.5% quantiles of that distribution are 0 and 1."""
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_ci_constant_and_empty():
    assert bootstrap_ci([0.25] * 10) == pytest.approx((0.25, 0.25))
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_bootstrap_ci_matches_the_normal_interval_of_a_proportion():
    """200 zeros and 200 ones: mean 0.5, standard error sqrt(0.25 / 400) = 0.025, so the 95% interval is
    about 0.5 -/+ 1.96 * 0.025 = [0.451, 0.549]."""
    lo, hi = bootstrap_ci([0.0] * 200 + [1.0] * 200)
    assert lo == pytest.approx(0.451, abs=0.01) and hi == pytest.approx(0.549, abs=0.01)


def test_sample_metrics_reports_intervals_and_degeneracy():
    texts = ["", "the cat sat on the mat", "the cat sat on the mat", "   "]
    m = sample_metrics(texts, [0.0, 1.0, 1.0, 0.0], hit_threshold=0.5)
    assert m["blank_fraction"] == 0.5
    assert m["hit_rate"] == 0.5 and m["hit_rate_ci_low"] <= 0.5 <= m["hit_rate_ci_high"]
    assert m["score_ci_low"] == 0.0 and m["score_ci_high"] == 1.0
    assert m["repetition"] == 0.0  # no 4-gram repeats inside one sample


def test_wilson_interval_by_hand():
    """0 of 512 at 95% (z^2 = 1.959964^2 = 3.841459): centre = half = (3.841459 / 1024) / (1 + 3.841459 / 512)
    = 0.0037514 / 1.0075028 = 0.0037235, so [0, 0.0074470], never [0, 0] as a bootstrap of zeros.
    5 of 10 with z = 2 (confidence 0.9545): centre = (0.5 + 4/20) / 1.4 = 0.5, half = (2 / 1.4) · sqrt(0.025 +
    0.01) = 0.267261: [0.232739, 0.767261]."""
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    lo, hi = wilson_interval(0, 512)
    assert lo == 0.0 and hi == pytest.approx(0.0074470, abs=1e-7)
    assert wilson_interval(5, 10, 2 * 0.9772498680518208 - 1) == pytest.approx((0.232739, 0.767261), abs=1e-6)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] < 1.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="hits <= n"):
        wilson_interval(3, 2)
    m = sample_metrics(["a"] * 512, [0.0] * 512, hit_threshold=0.5)
    assert (m["hit_rate_ci_low"], m["hit_rate_ci_high"]) == (0.0, pytest.approx(0.0074470, abs=1e-7))


def test_wilson_interval_is_exactly_zero_without_hits_and_one_without_misses():
    """0 of 1,280: the formula's lower bound is 2e-19 in floating point; it must print as 0, not 2.17e-19."""
    assert [wilson_interval(0, n)[0] for n in (1, 7, 512, 1280, 2560)] == [0.0] * 5
    assert [wilson_interval(n, n)[1] for n in (1, 7, 512, 1280, 2560)] == [1.0] * 5

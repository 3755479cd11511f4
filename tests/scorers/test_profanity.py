"""ProfanityScorer: the probabilities of alt-profanity-check's predict_prob, batched."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from phf.scorers import ProfanityScorer, ScorerError

TEXTS = [
    "Have a nice day.",
    "You are a fucking idiot!",
    "shit happens",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "   ",
    "This function returns the number of bytes written to the stream.",
    "What a stupid, worthless piece of crap.",
]


@pytest.fixture(scope="module")
def scorer():
    return ProfanityScorer(batch_size=3)  # batches of 3: several calls, same numbers


def test_scores_equal_predict_prob(scorer):
    from profanity_check import predict_prob

    expected = predict_prob(TEXTS).tolist()
    assert scorer.score(TEXTS) == pytest.approx(expected, rel=0, abs=1e-12)
    assert scorer.score(TEXTS[1:2]) == pytest.approx(expected[1:2], abs=1e-12)


def test_profane_texts_score_higher(scorer):
    s = dict(zip(TEXTS, scorer.score(TEXTS), strict=True))
    assert s["You are a fucking idiot!"] > 0.9 > 0.2 > s["Have a nice day."]
    assert all(0.0 <= v <= 1.0 for v in s.values())


def test_empty_batch(scorer):
    assert scorer.score([]) == []


def test_identity_names_library_versions(scorer):
    from importlib.metadata import version

    assert scorer.name == "profanity" and not scorer.contextual
    assert version("alt-profanity-check") in scorer.version and version("scikit-learn") in scorer.version
    assert scorer.settings() == {}  # batch_size does not change scores
    assert scorer.key == ProfanityScorer(batch_size=7).key


def test_failure_names_scorer_and_text_and_is_never_zero(scorer):
    with pytest.raises(ScorerError) as e:
        scorer.score(["fine", None, "also fine"])
    msg = str(e.value)
    assert "'profanity'" in msg and "None" in msg and "AttributeError" in msg


def test_long_offending_text_is_truncated_in_the_message():
    s = ProfanityScorer()
    s._predict_prob = lambda texts: (_ for _ in ()).throw(ValueError("boom"))
    with pytest.raises(ScorerError, match=r"'xxxx.*\(5000 chars\): ValueError: boom") as e:
        s.score(["x" * 5000])
    assert len(str(e.value)) < 400


def test_picklable_without_the_model(scorer):
    scorer.score(["warm"])
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._predict_prob is None and clone.score(TEXTS[:2]) == pytest.approx(scorer.score(TEXTS[:2]))


def test_import_phf_scorers_stays_light():
    code = (
        "import sys, phf.scorers; from phf.scorers import ProfanityScorer, PIIScorer, DetoxifyScorer, build_scorer; "
        "heavy = [m for m in ('profanity_check', 'presidio_analyzer', 'detoxify', 'spacy', 'torch', 'sklearn') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

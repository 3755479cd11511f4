"""PIIScorer: presidio entity counts per character, checked against direct AnalyzerEngine calls."""

from __future__ import annotations

import os
import pickle
import tempfile

import pytest

from phf.scorers import PIIScorer, ScorerError
from phf.scorers.pii import PATTERN_ENTITIES

TEXTS = [
    "Contact john.smith@example.com or visit https://example.org/docs today.",
    "My ssn is 536-90-4399.",
    "Call 212-555-0143 or (650) 253-0000 before noon.",
    "The request came from 192.168.1.20, see card 4111 1111 1111 1111.",
    "Transfer to IBAN GB82 WEST 1234 5698 7654 32 please.",
    "Nothing personal in this sentence at all.",
    "Server 116.86.43.231 answered.",  # an IP address that the phone recognizer also matches
    "",
]


@pytest.fixture(scope="module")
def analyzer():
    """An AnalyzerEngine built directly (recipe A), independent of phf's code."""
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    with tempfile.TemporaryDirectory() as tmp:
        spacy.blank("en").to_disk(tmp)
        cfg = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": tmp}]}
        engine = NlpEngineProvider(nlp_configuration=cfg).create_engine()
        return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


@pytest.fixture(scope="module")
def raw_scorer():
    return PIIScorer(merge_overlaps=False, entity_thresholds={}, batch_size=3)


@pytest.fixture(scope="module")
def scorer():
    return PIIScorer()


def _direct(analyzer, text, threshold=0.0):
    return analyzer.analyze(text=text, language="en", entities=PATTERN_ENTITIES, score_threshold=threshold)


def _overlap_groups(results) -> int:
    """Number of groups of transitively overlapping spans (independent of phf's merge code)."""
    spans = sorted((r.start, r.end) for r in results)
    groups, end = 0, -1
    for s, e in spans:
        if s >= end:
            groups += 1
        end = max(end, e) if s < end else e
    return groups


def test_counts_per_char_equal_direct_analyzer(raw_scorer, analyzer):
    expected = [len(_direct(analyzer, t)) / len(t) if t else 0.0 for t in TEXTS]
    assert raw_scorer.score(TEXTS) == pytest.approx(expected, rel=1e-12)
    assert sum(x > 0 for x in expected) == 6  # the fixture texts do contain PII


def test_merged_counts_equal_overlap_groups_of_direct_analyzer(scorer, analyzer):
    def kept(text):  # the default entity_thresholds: URLs need presidio's scheme score (0.6)
        return [r for r in _direct(analyzer, text) if r.entity_type != "URL" or r.score >= 0.6]

    expected = [_overlap_groups(kept(t)) / len(t) if t else 0.0 for t in TEXTS]
    assert scorer.score(TEXTS) == pytest.approx(expected, rel=1e-12)
    # e-mail + its domain as URL + the link = 2 entities; the IP address is one entity, not also a phone
    assert scorer.score([TEXTS[0]])[0] * len(TEXTS[0]) == pytest.approx(2)
    assert [e.entity_type for e in scorer.detect([TEXTS[6]])[0]] == ["IP_ADDRESS"]


@pytest.mark.parametrize(
    "text, entity",
    [
        ("write to jane.doe@example.net", "EMAIL_ADDRESS"),
        ("my phone number is 212-555-0143", "PHONE_NUMBER"),
        ("card 4111 1111 1111 1111 expires", "CREDIT_CARD"),
        ("host 10.0.0.1 is down", "IP_ADDRESS"),
        ("my ssn is 536-90-4399", "US_SSN"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN_CODE"),
        ("see https://example.org/x", "URL"),
    ],
)
def test_each_pattern_entity_is_found(scorer, text, entity):
    assert entity in {e.entity_type for e in scorer.detect([text])[0]}


def test_detected_spans_point_into_the_text(scorer):
    (ents,) = scorer.detect([TEXTS[1]])
    assert [(TEXTS[1][e.start : e.end], e.entity_type) for e in ents] == [("536-90-4399", "US_SSN")]


def test_score_threshold_matches_presidio(analyzer):
    strict = PIIScorer(score_threshold=0.5, merge_overlaps=False, entity_thresholds={})
    expected = [len(_direct(analyzer, t, 0.5)) / len(t) if t else 0.0 for t in TEXTS]
    assert strict.score(TEXTS) == pytest.approx(expected)
    assert strict.key != PIIScorer(score_threshold=0.0, merge_overlaps=False, entity_thresholds={}).key


def test_bare_dotted_names_are_not_urls_by_default(scorer, raw_scorer):
    text = "Use scipy.stats or see setup.py and self.name; docs at https://example.org/x today."
    assert [text[e.start : e.end] for e in scorer.detect([text])[0]] == ["https://example.org/x"]
    assert len(raw_scorer.detect([text])[0]) >= 4  # presidio alone: bare "domains" at score 0.5


def test_entity_subset(analyzer):
    emails = PIIScorer(entities=["EMAIL_ADDRESS"])
    assert emails.score([TEXTS[0], TEXTS[1]]) == [1 / len(TEXTS[0]), 0.0]


def test_identity(scorer):
    from importlib.metadata import version

    assert scorer.name == "pii" and version("presidio-analyzer") in scorer.version
    assert (
        scorer.settings()["entities"] == sorted(PATTERN_ENTITIES) and scorer.settings()["spacy_model"] is None
    )


def test_public_suffix_download_is_silenced(scorer):
    assert os.environ.get("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS") == ""


def test_ner_entities_need_a_spacy_model():
    with pytest.raises(ValueError, match="spacy_model"):
        PIIScorer(entities=["PERSON", "EMAIL_ADDRESS"])


def test_missing_spacy_model_is_an_error_not_a_download():
    with pytest.raises(ValueError, match="not installed"):
        PIIScorer(spacy_model="en_core_web_nonexistent_xx")


def test_unknown_entity_is_refused():
    with pytest.raises(ValueError, match="no recognizer"):
        PIIScorer(entities=["EMAIL_ADDRESS", "NOT_AN_ENTITY"])


def test_failure_names_scorer_and_text(scorer):
    with pytest.raises(ScorerError, match=r"'pii'.*42"):
        scorer.score(["fine", 42])


def test_picklable(scorer):
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone.score(TEXTS[:3]) == scorer.score(TEXTS[:3])


def test_presidio_start_up_is_one_line(monkeypatch, caplog):
    """presidio logs each recognizer it loads or skips (~45 lines): building the engine shows one line."""
    import logging

    import phf.scorers.pii as pii

    monkeypatch.setattr(pii, "_ENGINES", {})
    with caplog.at_level(logging.INFO):
        pii._engine(None, "en")
    shown = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(shown) == 1 and shown[0].name == "phf.scorers.pii" and "analyzer engine built" in shown[0].getMessage()

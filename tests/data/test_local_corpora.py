"""Offline prose corpora: local prose, local_pii (faker PII) and local_toxicity, with ground truth."""

from __future__ import annotations

import json

import pytest

from phf.data.corpora import LocalPIISource, LocalProseSource, LocalToxicitySource
from phf.data.corpora.prose import chunk_paragraphs, inject, insertion_points, is_prose
from phf.data.document import Document

N = 24


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("phf_cache")


@pytest.fixture(scope="module")
def pii(cache_dir):
    return LocalPIISource(cache_dir, n_docs=N, seed=0, fraction=0.5)


@pytest.fixture(scope="module")
def tox(cache_dir):
    return LocalToxicitySource(cache_dir, n_docs=N, seed=0, fraction=0.25)


def test_prose_documents_are_raw_unscored_english(cache_dir):
    src = LocalProseSource(cache_dir, n_docs=N, seed=0)
    docs = list(src)
    assert len(docs) == len(src) == N
    for d in docs:
        assert isinstance(d, Document) and d.scores is None and len(d.texts) == 1
        assert 300 <= len(d.texts[0]) <= 3000 and ">>>" not in d.texts[0]
    assert len({d.id for d in docs}) == N and len({d.texts[0] for d in docs}) == N
    # origins name files relative to their root: the same packages give the same corpus anywhere
    assert all(
        d.meta["origin"].split(":", 1)[0] in ("stdlib", "site-packages")
        or "METADATA" in d.meta["origin"]
        or d.meta["origin"].startswith("pydoc_data")
        for d in docs
    )
    assert src.manifest()["n_docs"] == N


def test_phf_itself_is_never_harvested(tmp_path, monkeypatch):
    """phf's README and docstrings change with its code; a corpus that read them would make one
    configuration at two commits two different experiments (its origins would start with ``phf``)."""
    from phf.data.corpora import prose

    origins = [origin for _, origin, _ in prose.list_units()]
    assert not [o for o in origins if o.startswith("phf:") or o.split(":", 1)[-1].startswith("phf/")]
    # an installed (non-editable) phf under a site root is skipped as a directory too
    (tmp_path / "phf").mkdir()
    (tmp_path / "phf" / "train.py").write_text('"""Prose about phf."""')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mod.py").write_text('"""Prose elsewhere."""')
    assert [p.relative_to(tmp_path).as_posix() for p in prose._walk_py(tmp_path)] == ["other/mod.py"]


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path, pii):
    again = LocalPIISource(tmp_path / "elsewhere", n_docs=N, seed=0, fraction=0.5)
    assert [d.texts for d in again] == [d.texts for d in pii]
    assert again.ground_truth() == pii.ground_truth()
    other = LocalPIISource(tmp_path / "elsewhere", n_docs=N, seed=1, fraction=0.5)
    assert [d.texts for d in other] != [d.texts for d in pii]


def test_built_once_then_read_from_the_cache(pii, cache_dir):
    manifest = pii.path / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = LocalPIISource(cache_dir, n_docs=N, seed=0, fraction=0.5)
    assert again.path == pii.path and manifest.stat().st_mtime_ns == stamp
    assert [d.texts for d in again] == [d.texts for d in pii]


def test_pii_ground_truth_spans_hold_the_injected_values(pii):
    docs, truth = list(pii), pii.ground_truth()
    assert truth and {t["entity_type"] for t in truth} <= {
        "PERSON",
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "ADDRESS",
        "CREDIT_CARD",
        "IP_ADDRESS",
        "US_SSN",
    }
    for t in truth:
        text = docs[t["doc_index"]].texts[0]
        assert docs[t["doc_index"]].id == t["doc_id"] and text[t["start"] : t["end"]] == t["value"]
        if t["entity_type"] == "EMAIL_ADDRESS":
            assert "@" in t["value"]
    injected = {t["doc_index"] for t in truth}
    assert len(injected) == round(0.5 * N) == pii.manifest()["injected_docs"]
    assert all(docs[i].meta["injected"] > 0 for i in injected)


def test_injected_pii_is_found_by_the_pii_scorer(pii):
    from phf.scorers import PIIScorer

    docs, truth = list(pii), [t for t in pii.ground_truth() if t["entity_type"] == "EMAIL_ADDRESS"]
    found = PIIScorer(entities=["EMAIL_ADDRESS"]).detect([docs[t["doc_index"]].texts[0] for t in truth])
    assert all(
        any(e.start == t["start"] and e.end == t["end"] for e in ents)
        for t, ents in zip(truth, found, strict=True)
    )


def test_phone_numbers_are_valid_by_default(pii):
    import phonenumbers

    phones = [t["value"] for t in pii.ground_truth() if t["entity_type"] == "PHONE_NUMBER"]
    assert phones and all(phonenumbers.is_valid_number(phonenumbers.parse(p, "US")) for p in phones)


def test_toxicity_ground_truth_is_whole_injected_sentences(tox):
    docs, truth = list(tox), tox.ground_truth()
    assert len({t["doc_index"] for t in truth}) == round(0.25 * N)
    for t in truth:
        sentence = docs[t["doc_index"]].texts[0][t["start"] : t["end"]]
        assert t["entity_type"] == "TOXIC" and sentence == t["value"] and sentence[-1] in ".!?"


def test_injected_sentences_score_higher_with_profanity_check(tox):
    from phf.data.segment import SentenceSegmenter
    from phf.scorers import ProfanityScorer

    toxic = {t["value"] for t in tox.ground_truth()}
    segs = [s for d in tox for s in SentenceSegmenter()(d.texts[0])]
    scores = dict(zip(segs, ProfanityScorer().score(segs), strict=True))
    injected = [v for s, v in scores.items() if s.strip() in toxic]
    clean = [v for s, v in scores.items() if s.strip() not in toxic]
    assert len(injected) == len(toxic) and min(injected) > sorted(clean)[len(clean) // 2]


def test_iter_from_resumes_at_a_position(pii):
    assert [d.id for d in pii.iter_from(5)] == [d.id for d in list(pii)[5:]]
    assert pii[3].texts == list(pii)[3].texts


def test_sources_are_lazy_and_picklable(cache_dir, tox):
    import pickle

    src = LocalToxicitySource(cache_dir, n_docs=N, seed=0, fraction=0.5)
    assert not src.cache.ready  # nothing is built until the data is read
    clone = pickle.loads(pickle.dumps(src))
    assert len(clone) == N and src.cache.ready and clone.path == src.path
    assert len(pickle.dumps(tox)) < 10_000  # documents are re-read from the cache, not pickled


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="fraction"):
        LocalPIISource(tmp_path, fraction=1.5)
    with pytest.raises(ValueError, match="n_docs"):
        list(LocalProseSource(tmp_path, n_docs=0))


def test_configs_instantiate_the_sources(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose

    for name, cls in [("local_pii", LocalPIISource), ("local_toxicity", LocalToxicitySource)]:
        cfg = compose(
            [f"data={name}", f"cache_dir={tmp_path}", "data.source.n_docs=7", f"run_dir={tmp_path}"]
        )
        src = instantiate(cfg.data.source)
        assert isinstance(src, cls) and len(src) == 7 and str(src.path).startswith(str(tmp_path))


def test_helpers():
    assert is_prose("This function returns the number of bytes that were written to the stream so far.")
    assert not is_prose(">>> f(1)\n2") and not is_prose("x = foo(bar, baz) + qux[1:2] * 3 ** 4 // 5;")
    assert chunk_paragraphs(["a" * 50, "b" * 50, "c" * 50], 60, 110) == ["a" * 50 + "\n\n" + "b" * 50]
    text = "First one. Second one.\n\nThird one."
    assert insertion_points(text) == [0, 11, 24, len(text)]
    new, spans = inject(text, [(11, "New X.", [(4, 5, "T")]), (len(text), "End Y.", [(4, 5, "T")])])
    assert new == "First one. New X. Second one.\n\nThird one. End Y."
    assert [new[s:e] for s, e, _ in spans] == ["X", "Y"]
    json.dumps(spans)

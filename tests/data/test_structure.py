"""Document structure of the injected corpora: content_coupling, open_misaligned, density, and the
structure they leave in ``ground_truth.jsonl`` / ``structure.jsonl``."""

from __future__ import annotations

import pytest

from phf.data.corpora import LocalPIISource, LocalToxicitySource
from phf.data.corpora.prose import INDEPENDENT, carrier_units, group_of, insertion_points, unit_of

N, FRACTION = 40, 0.25  # K = round(0.25 * 40) = 10 injected documents at every setting
K = round(FRACTION * N)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("phf_cache")


def tox(cache_dir, **settings):
    return LocalToxicitySource(cache_dir, n_docs=N, seed=0, fraction=FRACTION, max_injections=2, **settings)


def injected(src):
    return [r for r in src.structure() if r["injected"]]


def test_unit_of_groups_by_package_directory_readme_or_topics():
    assert unit_of("site-packages:email/mime/text.py") == "site-packages:email/mime"
    assert unit_of("stdlib:os.py") == "stdlib:os"
    assert unit_of("numpy:METADATA") == "numpy:METADATA"
    assert unit_of("pydoc_data.topics[assert]") == unit_of("pydoc_data.topics[with]") == "pydoc_data.topics"


def test_group_of_coarsens_units_to_packages_and_kinds():
    origin = "site-packages:email/mime/text.py"
    assert group_of(origin, "docstring", "unit") == "site-packages:email/mime"
    assert group_of(origin, "docstring", "package") == "site-packages:email"
    assert group_of("stdlib:os.py", "docstring", "package") == "stdlib:os"
    assert group_of(origin, "docstring", "kind") == "docstring"
    # READMEs and help topics are genres at the two coarse grains
    assert group_of("numpy:METADATA", "metadata", "package") == group_of("scipy:METADATA", "metadata", "kind") == "metadata"
    assert group_of("pydoc_data.topics[with]", "topics", "package") == "topics"


@pytest.mark.parametrize("grain", ["package", "kind"])
def test_content_grain_chooses_carriers_among_coarser_groups(cache_dir, grain):
    """At coupling 1 every injected document belongs to a carrier group of that grain, and every
    document of a carrier group is marked carrier; the injected share is unchanged."""
    src = tox(cache_dir, content_coupling=1.0, content_grain=grain)
    structure = src.structure()
    kinds = [d.meta["kind"] for d in src.documents]
    assert all(r["unit"] == group_of(r["origin"], kinds[r["doc_index"]], grain) for r in structure)
    carrier_groups = {r["unit"] for r in structure if r["carrier"]}
    assert all(r["carrier"] == (r["unit"] in carrier_groups) for r in structure)
    inj = injected(src)
    assert len(inj) == K and all(r["carrier"] for r in inj)
    assert src.cache.dir != tox(cache_dir, content_coupling=1.0).cache.dir  # the grain is in the cache key


def test_carrier_units_fill_the_need_without_overshooting_when_small_units_allow():
    """Units a (5 docs), b (2), c, d, e (1 each); need 3. In any hash order a (5 > 3) never fits, and
    a one-document unit is taken whenever fewer than 3 are covered, so exactly 3 are covered."""
    units = ["a"] * 5 + ["b"] * 2 + ["c", "d", "e"]
    for seed in range(5):
        chosen = carrier_units(units, seed, 3)
        assert sum(u in chosen for u in units) == 3 and "a" not in chosen
    assert sum(u in carrier_units(["a"] * 5, 0, 3) for u in ["a"] * 5) == 5  # only a big unit: it is taken


def test_independent_setting_records_structure_consistent_with_the_text(cache_dir):
    src = tox(cache_dir, **INDEPENDENT)
    docs, truth, structure = list(src), src.ground_truth(), src.structure()
    assert len(structure) == N and [r["doc_index"] for r in structure] == list(range(N))
    assert sum(r["injected"] for r in structure) == K == src.manifest()["injected_docs"]
    by_doc: dict[int, list[dict]] = {}
    for t in truth:
        by_doc.setdefault(t["doc_index"], []).append(t)
    for r in structure:
        clean, text = src.clean_text(r["doc_index"]), docs[r["doc_index"]].texts[0]
        spans = by_doc.get(r["doc_index"], [])
        assert r["injected"] == bool(spans) == bool(r["misaligned_sentences"])
        assert r["n_sentences"] == len(insertion_points(clean)) - 1 + len(spans)  # one sentence per TOXIC span
        assert [t["sentence"] for t in spans] == r["misaligned_sentences"] == sorted(r["misaligned_sentences"])
        assert r["opens_misaligned"] == any(t["opening"] for t in spans) == (bool(spans) and text.startswith(spans[0]["value"]))
        # the clean text is the document without its injected sentences (each followed by its space)
        stripped = text
        for t in sorted(spans, key=lambda t: -t["start"]):
            end = t["end"] + 1 if t["end"] < len(stripped) else t["end"]
            start = t["start"] - 1 if t["end"] == len(stripped) and t["start"] > 0 else t["start"]
            stripped = stripped[:start] + stripped[end:]
        assert stripped == clean
    assert [d.texts[0] for d in src.clean_documents()] == [d.texts[0] for d in src.prose]
    assert [d.id for d in src.clean_documents()] == [d.id for d in docs]


@pytest.mark.parametrize("coupling", [0.0, 0.5, 1.0])
def test_content_coupling_keeps_the_fraction_and_draws_from_carrier_units(cache_dir, coupling):
    src = tox(cache_dir, content_coupling=coupling)
    structure = src.structure()
    carriers = [r for r in structure if r["carrier"]]
    assert len(carriers) >= K and all(r["unit"] == unit_of(r["origin"]) for r in structure)
    inj = injected(src)
    assert len(inj) == K  # the injected share is the same at every setting
    if coupling > 0:  # carrier documents injected: linear from a random draw's mean to min(K, carriers)
        x0 = K * len(carriers) / N
        assert sum(r["carrier"] for r in inj) == round(x0 + coupling * (min(K, len(carriers)) - x0))
    if coupling == 1.0:  # content decides: no document outside the carrier units is injected
        assert all(r["carrier"] for r in inj)
    assert src.manifest()["structure"]["injected_carrier_docs"] == sum(r["carrier"] for r in inj)


def test_open_misaligned_one_opens_every_injected_document(cache_dir):
    src = tox(cache_dir, open_misaligned=1.0)
    docs, truth = list(src), src.ground_truth()
    inj = injected(src)
    assert len(inj) == K and all(r["opens_misaligned"] and r["misaligned_sentences"][0] == 0 for r in inj)
    first = {}
    for t in truth:
        first.setdefault(t["doc_index"], t)
    assert all(first[r["doc_index"]]["start"] == 0 and first[r["doc_index"]]["opening"] for r in inj)
    assert all(docs[r["doc_index"]].texts[0].startswith(first[r["doc_index"]]["value"]) for r in inj)
    assert all(1 <= len(r["misaligned_sentences"]) <= 2 for r in inj)  # count mode: 1..max_injections


def test_open_misaligned_zero_with_density_never_opens(cache_dir):
    """With a density, the start gets a sentence only by open_misaligned: p = 0 never opens."""
    src = tox(cache_dir, open_misaligned=0.0, density=0.5)
    assert not any(r["opens_misaligned"] for r in injected(src))


def test_density_one_follows_every_sentence_with_an_injected_one(cache_dir):
    """A clean document of S sentences has S + 1 insertion points; with density 1 every point after
    a sentence gets one: S injected, at sentence indices 1, 3, 5, ... (2S sentences in all)."""
    src = tox(cache_dir, density=1.0)
    for r in injected(src):
        s = len(insertion_points(src.clean_text(r["doc_index"]))) - 1
        assert r["misaligned_sentences"] == list(range(1, 2 * s, 2)) and r["n_sentences"] == 2 * s


def test_density_zero_opening_one_is_a_single_opening_sentence(cache_dir):
    src = tox(cache_dir, density=0.0, open_misaligned=1.0)
    assert all(r["misaligned_sentences"] == [0] for r in injected(src))
    only = tox(cache_dir, density=0.0)  # no opening, no density: one sentence after a random sentence
    assert all(len(r["misaligned_sentences"]) == 1 and r["misaligned_sentences"][0] > 0 for r in injected(only))


def test_settings_are_in_the_cache_key_and_the_manifest(cache_dir):
    a, b = tox(cache_dir), tox(cache_dir, open_misaligned=0.5)
    assert a.path != b.path
    params = b.manifest()["params"]
    assert (params["content_coupling"], params["open_misaligned"], params["density"]) == (0.0, 0.5, None)
    assert b.manifest()["structure"]["open_misaligned"] == 0.5


@pytest.mark.parametrize(
    ("key", "value"), [("content_coupling", 1.5), ("open_misaligned", -0.1), ("density", 2.0), ("density", "high"),
                       ("content_grain", "topic")]
)
def test_settings_out_of_range_are_refused_by_name(cache_dir, key, value):
    with pytest.raises(ValueError, match=key):
        tox(cache_dir, **{key: value})


def test_pii_spans_of_one_sentence_share_its_index(cache_dir):
    src = LocalPIISource(cache_dir, n_docs=N, seed=0, fraction=FRACTION, open_misaligned=1.0, density=0.3)
    truth, structure = src.ground_truth(), src.structure()
    for t in truth:
        r = structure[t["doc_index"]]
        assert t["sentence"] in r["misaligned_sentences"] and t["opening"] == (t["sentence"] == 0)
    assert {t["sentence"] for t in truth if t["opening"]} == {0}
    assert {t["doc_index"] for t in truth if t["opening"]} == {r["doc_index"] for r in structure if r["injected"]}


def test_pii_opening_entities_choose_the_opening_template(cache_dir):
    """Every opening sentence mentions an e-mail address: only templates with that slot open."""
    src = LocalPIISource(cache_dir, n_docs=N, seed=0, fraction=FRACTION, open_misaligned=1.0,
                         opening_entities=["EMAIL_ADDRESS"])
    opening = {}
    for t in src.ground_truth():
        if t["opening"]:
            opening.setdefault(t["doc_index"], set()).add(t["entity_type"])
    assert len(opening) == K and all("EMAIL_ADDRESS" in types for types in opening.values())
    with pytest.raises(ValueError, match="opening_entities"):
        LocalPIISource(cache_dir, n_docs=N, opening_entities=["NAME"])

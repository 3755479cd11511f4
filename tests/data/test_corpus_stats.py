"""phf-corpus-stats: the structure statistic on hand-computed inputs, from ground truth and from scores."""

from __future__ import annotations

import json
import math

import pytest

from phf.corpus_stats_cli import main
from phf.data.corpus_stats import content_kappa, flags_from_truth, mover_ratio, structure_stats, wilson

T, F = True, False


def test_structure_stats_by_hand():
    """d1 (u): T T F   first misaligned, later 1 of 2
    d2 (u): F F T   first aligned,    later 1 of 2
    d3 (v): F F F   first aligned,    later 0 of 2
    d4 (v): F       one segment: counts in the rates, not in the opening statistics

    doc_rate 2/4, segment_rate 3/10, first_rate 1/4, density mean(2/3, 1/3) = 1/2;
    later_doc|first_aligned 1/2 (d2 of d2, d3), later_doc|first_misaligned 1/1, opening_lift 2;
    later_seg|first_aligned 1/4, later_seg|first_misaligned 1/2 (lift 2), later_seg 2/6,
    protocol_ratio (1/4) / (1/3) = 3/4; units u = (1, 1), v = (0, 0): the unit decides, kappa 1."""
    s = structure_stats([("u", [T, T, F]), ("u", [F, F, T]), ("v", [F, F, F]), ("v", [F])])
    assert (s["documents"], s["segments"], s["units"]) == (4, 10, 2)
    assert (s["doc_rate"]["k"], s["doc_rate"]["n"]) == (2, 4)
    assert (s["segment_rate"]["k"], s["segment_rate"]["n"]) == (3, 10)
    assert (s["first_rate"]["k"], s["first_rate"]["n"]) == (1, 4)
    assert s["density"] == pytest.approx(0.5)
    assert (s["later_doc|first_aligned"]["k"], s["later_doc|first_aligned"]["n"]) == (1, 2)
    assert (s["later_doc|first_misaligned"]["k"], s["later_doc|first_misaligned"]["n"]) == (1, 1)
    assert s["opening_lift"]["ratio"] == pytest.approx(2.0)
    assert (s["later_seg|first_aligned"]["k"], s["later_seg|first_aligned"]["n"]) == (1, 4)
    assert (s["later_seg|first_misaligned"]["k"], s["later_seg|first_misaligned"]["n"]) == (1, 2)
    assert s["opening_lift_seg"] == pytest.approx(2.0)
    assert s["protocol_ratio"] == pytest.approx(0.75)
    assert s["content_kappa"] == pytest.approx(1.0) and s["units_2plus_docs"] == 2


def test_wilson_is_never_zero_width_at_zero_hits():
    """0 of 512: the upper bound is z^2 / (n + z^2) = 3.8415 / 515.84 = 0.00745."""
    w = wilson(0, 512)
    assert w["p"] == 0 and w["lo"] == pytest.approx(0, abs=1e-12) and w["hi"] == pytest.approx(0.00745, abs=1e-5)
    assert wilson(0, 0) is None


def test_mover_ratio():
    """Intervals of zero width give the ratio itself: L = p1 p2 / p2^2 = p1 / p2. With Wilson intervals
    of 30/100 and 10/100 the interval of 3 is about Katz's log interval [1.55, 5.80]."""
    exact = mover_ratio({"p": 0.3, "lo": 0.3, "hi": 0.3}, {"p": 0.1, "lo": 0.1, "hi": 0.1})
    assert exact["ratio"] == pytest.approx(3) and exact["lo"] == pytest.approx(3) and exact["hi"] == pytest.approx(3)
    r = mover_ratio(wilson(30, 100), wilson(10, 100))
    assert r["ratio"] == pytest.approx(3) and 1.4 < r["lo"] < 1.7 and 5.5 < r["hi"] < 6.0
    assert math.isinf(mover_ratio(wilson(3, 10), wilson(0, 10) | {"p": 0.01})["hi"])
    assert mover_ratio(wilson(3, 10), wilson(0, 10)) is None


def test_content_kappa_by_hand():
    """Units a = (1, 0), b = (1, 0): P_a = P_b = (0 + 0) / 2 = 0 (the two always disagree), P_o = 0;
    p = 1/2, P_e = 1/2: kappa = (0 - 1/2) / (1/2) = -1. Units a = (1, 1, 1), b = (0, 0, 0), c = (1):
    c is a single document and left out; P_o = 1, p = 1/2, kappa = 1. Units a = (1, 1, 0, 0),
    b = (1, 1, 0, 0): P_g = (2 + 2) / 12 = 1/3, P_e = 1/2, kappa = (1/3 - 1/2) / (1/2) = -1/3."""
    assert content_kappa(["a", "a", "b", "b"], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert content_kappa(list("aaabbbc"), [1, 1, 1, 0, 0, 0, 1]) == pytest.approx(1.0)
    assert content_kappa(list("aaaabbbb"), [1, 1, 0, 0, 1, 1, 0, 0]) == pytest.approx(-1 / 3)
    assert content_kappa(["a", "b"], [1, 0]) is None and content_kappa(["a", "a"], [1, 1]) is None


def test_flags_from_truth_follow_structure_jsonl(tmp_path):
    from phf.data.corpora import LocalToxicitySource

    src = LocalToxicitySource(tmp_path, n_docs=12, seed=0, fraction=0.5, content_coupling=1.0, open_misaligned=1.0)
    flags = flags_from_truth(src)
    rows = src.structure()
    assert [u for u, _ in flags] == [r["unit"] for r in rows]
    assert [[i for i, f in enumerate(fl) if f] for _, fl in flags] == [r["misaligned_sentences"] for r in rows]
    s = structure_stats(flags)
    assert s["doc_rate"]["k"] == 6 and s["first_rate"]["k"] == 6  # every injected document opens with one
    assert s["later_doc|first_aligned"]["k"] == 0  # a clean opening means a clean document


def test_command_scores_a_jsonl_corpus_with_the_task_scorer(tmp_path, monkeypatch):
    """Three files, PEP8 by line (threshold 0): ``x=1`` breaks E225 (missing whitespace around '='),
    so a.py = [T, F], b.py = [F, F], c.py = [F, T]; units from the records' ``pkg``: p = (a, b), q = (c).
    doc_rate 2/3; later lines: a.py (first misaligned) 0/1, b.py and c.py (first aligned) 1/2."""
    path = tmp_path / "code.jsonl"
    rows = [("x=1\ny = 2\n", "p"), ("x = 1\ny = 2\n", "p"), ("x = 1\ny=2\n", "q")]
    path.write_text("".join(json.dumps({"text": t, "pkg": g}) + "\n" for t, g in rows))
    monkeypatch.setenv("PHF_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "stats.json"
    result = main(["task=pep8", "data=jsonl", f"data.source.path={path}", "data.source.meta_keys=[pkg]",
                   "group=pkg", f"out={out}", f"cache_dir={tmp_path / 'cache'}"])
    s = result["scores"]
    assert json.loads(out.read_text())["scores"]["documents"] == 3 and "truth" not in result
    assert (s["doc_rate"]["k"], s["units"], s["segments"]) == (2, 2, 6)
    assert (s["later_doc|first_misaligned"]["k"], s["later_doc|first_misaligned"]["n"]) == (0, 1)
    assert (s["later_doc|first_aligned"]["k"], s["later_doc|first_aligned"]["n"]) == (1, 2)
    assert result["scored_with"]["threshold"] == 0.0
    with pytest.raises(SystemExit, match="no ground truth"):
        main(["task=pep8", "data=jsonl", f"data.source.path={path}", "from=truth"])


def test_jsonl_meta_keys_missing_is_a_bad_record(tmp_path):
    from phf.data.sources import JsonlSource

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "some text"}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: no key 'unit'"):
        list(JsonlSource(str(path), meta_keys=["unit"]))

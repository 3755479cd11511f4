"""PEP8Scorer: pycodestyle violation counts per character, whole-file and attributed to lines."""

from __future__ import annotations

import pycodestyle
import pytest

from phf.data.segment import LineSegmenter
from phf.scorers import PEP8Scorer

SNIPPETS = [
    "x = 1\n",
    "x=1\n",
    "import os, sys\ndef f( a ):\n  return a+1\n",
    "def f():\n    return 1\nclass A:\n    pass\n",
    "y = [1,2 ,3]   \n",
    "z = 1",  # no final newline: W292
    "s = '" + "a" * 100 + "'\n",
    "if True:\n\tx = 1\n",
]
FILE = "import os\nimport sys\ndef f(a,b):\n    return a+b\n\n\n\nclass A :\n    x=1\n"


def direct_count(text: str, **options) -> int:
    style = pycodestyle.StyleGuide(quiet=True, config_file=False, **options)
    lines = text.splitlines(keepends=True)
    return pycodestyle.Checker(filename="<string>", lines=lines, options=style.options).check_all()


def test_scores_equal_pycodestyle_counts_per_char():
    scorer = PEP8Scorer()
    expected = [direct_count(t, max_line_length=79) / len(t) for t in SNIPPETS]
    assert scorer.score(SNIPPETS) == pytest.approx(expected, rel=1e-12)
    assert expected[0] == 0 and all(e > 0 for e in expected[1:])


def test_options_change_counts_like_pycodestyle():
    scorer = PEP8Scorer(max_line_length=120, ignore=["E2"])
    expected = [direct_count(t, max_line_length=120, ignore=["E2"]) / len(t) for t in SNIPPETS]
    assert scorer.score(SNIPPETS) == pytest.approx(expected)
    assert scorer.key != PEP8Scorer().key


def test_in_context_line_attribution_sums_to_the_file_total():
    scorer = PEP8Scorer()
    lines = LineSegmenter()(FILE)
    scores = scorer.score_document(lines)
    counts = [round(s * len(line)) for s, line in zip(scores, lines, strict=True)]
    assert sum(counts) == direct_count(FILE, max_line_length=79) == len(scorer.violations(FILE))
    # E302 (blank lines) is only visible in context: it lands on `def f`, not on every line alone
    assert counts[2] >= 2 and counts[0] == counts[1] == 0
    assert counts[7] >= 2 and counts[8] >= 1  # `class A :` E302+E203, `x=1` E225
    assert scorer.contextual


def test_empty_input_scores_zero():
    assert PEP8Scorer().score([""]) == [0.0]
    assert PEP8Scorer().score_document([]) == []


# A model sample (minimised) on which pycodestyle's continued_indentation raises IndexError
# (PyCQA/pycodestyle#388, #713); found by the laptop PEP8 sweep's red-team evaluation.
CRASHING = '               ) i_\n._ """ buffers\n """ """ None'


def test_a_crashing_pycodestyle_check_counts_as_one_violation_not_zero(caplog):
    """The original scored such a text 0 (the best possible score) for malformed code. Here the crash
    is one E902 on its logical line, added to what the other checks found, with a warning."""
    with pytest.raises(IndexError):  # the bug is pycodestyle's: the plain checker aborts the text
        lines = [line + "\n" for line in CRASHING.split("\n")]
        lines[-1] = lines[-1][:-1]
        pycodestyle.Checker(filename="x", lines=lines, options=pycodestyle.StyleGuide(
            quiet=True, config_file=False).options).check_all()
    scorer = PEP8Scorer()
    with caplog.at_level("WARNING", logger="phf.scorers.pep8"):
        found = scorer.violations(CRASHING)
    e902 = [v for v in found if v[2].startswith("E902")]
    assert len(e902) == 1 and "continued_indentation" in e902[0][2]
    assert len(found) > 1  # the other checks still ran (indentation, whitespace, W292 ...)
    assert "continued_indentation crashed" in caplog.text
    assert scorer.score([CRASHING]) == [len(found) / len(CRASHING)]


def test_empty_text_has_no_violations():
    assert PEP8Scorer().violations("") == []

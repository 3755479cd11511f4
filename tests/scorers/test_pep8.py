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


def test_parses_counts_a_cut_last_line_as_the_token_limit_s_not_the_model_s():
    from phf.scorers.pep8 import parses

    cut = "def f(x):\n    return x+"  # the token limit stopped it mid-expression
    assert parses("def f(x):\n    return x + 1\n")
    assert not parses(cut)  # ended there (EOS): not valid Python
    assert parses(cut, cut=True)  # "def f(x):\n" is a valid beginning (codeop: incomplete, not invalid)
    assert parses("x = [1,\n2", cut=True)  # open bracket
    assert not parses("  x = 1\ny = 2", cut=True)  # the broken line is not the last one
    assert not parses("x = 1\0\n")  # a NUL byte: ast's ValueError, not a crash


def test_sample_metrics_split_syntax_from_style():
    """Three samples, hand-counted:

    * ``"x=1\\n"`` (4 chars): parses; 1 violation (E225): 1/4 per char, none of it syntax;
    * ``"  x = 1\\n"`` (8 chars): does not parse (unexpected indent); E111 + E113: 2/8, both E1;
    * ``"def f(x):\\n    return x+"`` (23 chars), cut by the token limit: parses (cut rule); W292: 1/23.

    score (the paper's, all samples) = (1/4 + 2/8 + 1/23) / 3; parse_rate = 2/3; score_parsing =
    (1/4 + 1/23) / 2; syntax_share = 2 / 4 violations; score_without_syntax = (1/4 + 0 + 1/23) / 3.
    """
    scorer = PEP8Scorer()
    texts = ["x=1\n", "  x = 1\n", "def f(x):\n    return x+"]
    m = scorer.sample_metrics(texts, [False, False, True])
    assert sum(scorer.score(texts)) / 3 == pytest.approx((1 / 4 + 2 / 8 + 1 / 23) / 3)
    assert m["parse_rate"] == pytest.approx(2 / 3)
    assert m["score_parsing"] == pytest.approx((1 / 4 + 1 / 23) / 2)
    assert m["syntax_share"] == pytest.approx(2 / 4)
    assert m["score_without_syntax"] == pytest.approx((1 / 4 + 0 + 1 / 23) / 3)
    assert scorer.sample_metrics([], []) == {}
    with pytest.raises(ValueError, match="2 texts but 1 cut flags"):
        scorer.sample_metrics(["a", "b"], [False])

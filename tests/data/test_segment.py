from hypothesis import given, settings
from hypothesis import strategies as st

from phf.data.segment import LineSegmenter, SentenceSegmenter

TEXT = st.text(alphabet=st.sampled_from(list("ab .!?\n\r\t\"')\u2028\x0c") + ["é", "☃"]), max_size=200)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_segmenters_are_lossless(text):
    for seg in (LineSegmenter(), SentenceSegmenter()):
        parts = seg(text)
        assert "".join(parts) == text
        assert all(parts)  # no empty segments


def test_line_segmenter_keeps_line_ends_and_only_splits_on_newline():
    assert LineSegmenter()("a = 1\r\nb\x0cc\n\nd") == ["a = 1\r\n", "b\x0cc\n", "\n", "d"]
    assert LineSegmenter()("") == []


def test_sentence_segmenter_keeps_whitespace_with_sentence():
    text = "Hello there. How are you?  Fine!\n\nNew paragraph"
    assert SentenceSegmenter()(text) == ["Hello there. ", "How are you?  ", "Fine!\n\n", "New paragraph"]


def test_spacy_backend_is_lossless():
    text = "  Leading space. Second sentence!   Third one?\nDone"
    parts = SentenceSegmenter(backend="spacy")(text)
    assert "".join(parts) == text and len(parts) >= 3

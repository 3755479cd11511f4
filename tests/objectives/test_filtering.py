"""Filtering: drops documents above a threshold (fixed, or a percentile fitted on a sample); loss = MLE."""

import random

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from phf.data.document import Document
from phf.objectives import MLE, Filtering
from phf.objectives.filtering import percentile


def doc(*scores):
    return Document(texts=[f"s{i}" for i in range(len(scores))], scores=list(scores), id=f"doc{scores}")


def test_threshold_keeps_documents_at_or_below_it():
    """avg_scores 0.001, 0.002 (= threshold: kept), 0.003 (dropped), (0.001 + 0.005) / 2 = 0.003 (dropped)."""
    obj = Filtering(threshold=0.002)
    docs = [doc(0.001), doc(0.002), doc(0.003), doc(0.001, 0.005)]
    kept = [obj.transform(d, random.Random(0)) for d in docs]
    assert kept[0] is docs[0] and kept[1] is docs[1]
    assert kept[2] is None and kept[3] is None
    assert (obj.docs_seen, obj.docs_dropped) == (4, 2)


def test_threshold_mode_prepare_reports_without_changing_it():
    obj = Filtering(threshold=0.002)
    logged = obj.prepare([doc(0.001), doc(0.003)])
    assert logged == {"filtering/threshold": 0.002, "filtering/kept_fraction": 0.5}
    assert obj.threshold == 0.002


def test_percentile_mode_fits_threshold_on_sample():
    """avg_scores 1, 2, 3, 4: the median (50th percentile) interpolates to 2.5; half the sample is kept."""
    obj = Filtering(percentile=50)
    logged = obj.prepare([doc(3.0), doc(1.0), doc(4.0), doc(2.0, 2.0)])
    assert logged == {"filtering/threshold": 2.5, "filtering/kept_fraction": 0.5}
    assert obj.transform(doc(2.5), random.Random(0)) is not None
    assert obj.transform(doc(2.6), random.Random(0)) is None


def test_percentile_mode_before_prepare_raises():
    with pytest.raises(RuntimeError, match="prepare"):
        Filtering(percentile=50).transform(doc(0.0), random.Random(0))


def test_percentile_matches_numpy():
    rng = random.Random(0)
    xs = [rng.random() for _ in range(101)]
    for q in (0, 10, 33.3, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"threshold": 0.1, "percentile": 50}, "exactly one"),
        ({"percentile": 101}, r"\[0, 100\]"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Filtering(**kwargs)


def test_empty_sample_in_percentile_mode_raises():
    with pytest.raises(ValueError, match="non-empty"):
        Filtering(percentile=50).prepare([])


def test_unscored_document_raises():
    with pytest.raises(ValueError, match="not been scored"):
        Filtering(threshold=0.1).transform(Document(texts=["x"], id="d1"), random.Random(0))


def test_loss_is_mle():
    torch.manual_seed(0)
    logits, labels, scores = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5)), torch.rand(2, 5)
    labels[0, 2] = -100
    assert_close(
        Filtering(threshold=0.1).loss(logits, labels, scores).loss, MLE().loss(logits, labels, scores).loss
    )
    assert not Filtering(threshold=0.1).needs_value_head


def test_requires_prepare_only_in_percentile_mode():
    assert Filtering(percentile=50).requires_prepare
    assert not Filtering(threshold=0.1).requires_prepare

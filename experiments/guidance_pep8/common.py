"""Shared pieces of the guidance_pep8 scripts: the held-out PEP8 documents used for localisation."""

from __future__ import annotations

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import LocalPythonSource
from phf.scorers import PEP8Scorer


def scored_docs(split: str, n: int, val_fraction: float = 0.02, max_files=None):
    """The first ``n`` scored documents of ``split`` of local_pep8 (the stdlib), as training reads them."""
    from phf.tokenizer import gpt2_tokenizer

    stream = BlockStream(LocalPythonSource(max_files=max_files), LineSegmenter(), PEP8Scorer(), gpt2_tokenizer(),
                         block_size=64, split=split, val_fraction=val_fraction)
    return stream.scored_sample(n)

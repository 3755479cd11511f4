"""Helpers of the data-input tests: a zero scorer, a block stream over a source, a JSONL writer."""

from __future__ import annotations

import json
from pathlib import Path

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter


class ZeroScorer:
    name = "zero"
    contextual = False

    def score(self, texts):
        return [0.0] * len(texts)

    score_document = score


def stream(source, tok, objective=None, on_error="raise", block_size=8, **kw):
    return BlockStream(source, LineSegmenter(), ZeroScorer(), tok, block_size, objective=objective, val_fraction=0.0,
                       shuffle_buffer=0, on_error=on_error, epochs=1, **kw)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def all_ids(blocks) -> list[int]:
    return [i for b in blocks for i in b["input_ids"].tolist()]

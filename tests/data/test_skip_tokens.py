"""``data.skip_tokens`` / ``data.skip_documents`` (BlockStream): start the training stream at an offset, as
the original's finetuning configs did with ``skip_tokens``."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from phf.data.pipeline import BlockStream, Data
from phf.data.segment import LineSegmenter
from phf.data.sources import JsonlSource, LocalPythonSource
from phf.scorers import PEP8Scorer
from phf.tokenizer import gpt2_tokenizer

BLOCK = 64


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def source():
    return LocalPythonSource(max_files=20)


def stream(source, tok, **kw):
    args = dict(source=source, segmenter=LineSegmenter(), scorer=PEP8Scorer(), tokenizer=tok, block_size=BLOCK,
                val_fraction=0.0, shuffle_buffer=0, score_batch_docs=4, seed=0)
    return BlockStream(**{**args, **kw})


def flat(s, n_blocks: int) -> tuple[list[int], list[float]]:
    blocks = list(itertools.islice(iter(s), n_blocks))
    assert len(blocks) == n_blocks
    return (torch.cat([b["input_ids"] for b in blocks]).tolist(),
            torch.cat([b["token_scores"] for b in blocks]).tolist())


@pytest.mark.parametrize("skip", [0, 1, BLOCK * 7, BLOCK * 7 + 13, 5000])
def test_skipping_n_tokens_yields_the_stream_after_its_first_n_tokens(source, tok, skip):
    """The skipped stream's blocks are the unskipped stream's tokens (and scores) from token N on, cut into
    blocks; N a multiple of the block size gives exactly the unskipped stream's blocks after the first N/T."""
    ids, scores = flat(stream(source, tok), 40 + skip // BLOCK + 1)
    got_ids, got_scores = flat(stream(source, tok, skip_tokens=skip), 40)
    assert got_ids == ids[skip : skip + 40 * BLOCK]
    assert got_scores == scores[skip : skip + 40 * BLOCK]


def test_the_skip_counts_the_untransformed_stream_and_filters_after_it(source, tok):
    """With an objective the skip counts the tokens an MLE run trained on (the original turned filtering off
    while skipping): it ends in the same document as without the objective, and the objective drops
    documents only after it."""
    from phf.objectives import Filtering

    skip = BLOCK * 300 + 5
    mle, filt = stream(source, tok, skip_tokens=skip), stream(source, tok, skip_tokens=skip,
                                                              objective=Filtering(threshold=0.0))
    next(iter(mle)), next(iter(filt))
    assert mle.stats["skipped_documents"] == filt.stats["skipped_documents"] > 0
    assert filt.stats["dropped_by_objective"] > 0


def test_skipping_documents_starts_at_that_document(tmp_path, tok):
    lines = [json.dumps({"text": f"x{i} = {i}\n" * (i % 3 + 1)}) for i in range(30)]
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "tail.jsonl").write_text("\n".join(lines[11:]) + "\n")
    skipped = flat(stream(JsonlSource(str(tmp_path / "all.jsonl")), tok, block_size=8, skip_documents=11), 10)
    assert skipped == flat(stream(JsonlSource(str(tmp_path / "tail.jsonl")), tok, block_size=8), 10)


def test_a_resumed_stream_does_not_skip_again(source, tok):
    full = flat(stream(source, tok, skip_tokens=300), 30)[0]
    s = stream(source, tok, skip_tokens=300)
    it = iter(s)
    head = [next(it)["input_ids"].tolist() for _ in range(10)]
    state = s.state_dict()
    assert state["packer"]["skip"] == 0
    r = stream(source, tok, skip_tokens=300)
    r.load_state_dict(state)
    assert sum(head, []) + flat(r, 20)[0] == full


def test_skip_settings_are_checked(source, tok):
    with pytest.raises(ValueError, match="data.skip_tokens must be an integer >= 0"):
        Data(source=source, skip_tokens=-1)
    with pytest.raises(ValueError, match=r"data.skip_tokens \(3\) must be a multiple of the world size \(2\)"):
        Data(source=source, skip_tokens=3).stream("train", tokenizer=tok, segmenter=LineSegmenter(), scorer=None,
                                                  block_size=8, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="data.skip_tokens is larger than the train stream"):
        next(iter(stream(LocalPythonSource(max_files=2), tok, skip_tokens=10**9)))
    # ranks share the skip equally; validation is never skipped
    data = Data(source=source, skip_tokens=4000)
    kw = dict(tokenizer=tok, segmenter=LineSegmenter(), scorer=PEP8Scorer(), block_size=8, seed=0)
    assert data.stream("train", rank=1, world_size=2, **kw).packer.skip == 2000
    assert data.stream("validation", **kw).packer.skip == 0

import itertools
import json

import pytest
import torch

from phf.data.document import Document
from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import JsonlSource, LocalPythonSource
from phf.scorers import PEP8Scorer
from phf.tokenizer import gpt2_tokenizer


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def source():
    return LocalPythonSource(max_files=30)


def stream(source, tok, **kw):
    args = dict(source=source, segmenter=LineSegmenter(), scorer=PEP8Scorer(), tokenizer=tok, block_size=64,
                val_fraction=0.2, shuffle_buffer=16, score_batch_docs=4, seed=0)
    args.update(kw)
    return BlockStream(**args)


def take(s, n):
    return [b["input_ids"].tolist() for b in itertools.islice(iter(s), n)]


def test_same_seed_same_blocks_in_same_order(source, tok):
    a, b = take(stream(source, tok), 40), take(stream(source, tok), 40)
    assert a == b
    assert take(stream(source, tok, seed=1), 40) != a


def test_resume_from_state_continues_exactly(source, tok):
    full = take(stream(source, tok), 60)
    s = stream(source, tok)
    it = iter(s)
    head = [next(it)["input_ids"].tolist() for _ in range(23)]
    state = s.state_dict()
    r = stream(source, tok)
    r.load_state_dict(state)
    assert head + take(r, 37) == full


def test_train_validation_and_ranks_are_disjoint(source, tok):
    def docs(**kw):
        s = stream(source, tok, **kw)
        seen = []
        orig = s.process

        def spy(batch):
            seen.extend(d.id for _, d in batch)
            return orig(batch)

        s.process = spy
        list(itertools.islice(iter(s), 10_000)) if kw.get("epochs") else None
        return set(seen)

    train = docs(split="train", epochs=1)
    val = docs(split="validation", epochs=1)
    r0 = docs(split="train", epochs=1, rank=0, world_size=2)
    r1 = docs(split="train", epochs=1, rank=1, world_size=2)
    assert train and val and not (train & val)
    assert r0 and r1 and not (r0 & r1) and r0 | r1 == train


def test_scores_follow_tokens_through_the_pipeline(tmp_path, tok):
    """Pre-scored record: segment 'x = 1\\n' (score 0.5) then 'y=2\\n' (score 0.25)."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"texts": ["x = 1\n", "y=2\n"], "scores": [0.5, 0.25]}) + "\n")
    s = stream(JsonlSource(str(path)), tok, val_fraction=0.0, shuffle_buffer=0, block_size=4)
    ids_a, ids_b = tok.encode("x = 1\n"), tok.encode("y=2\n")
    expected_ids = [tok.eos_token_id] + ids_a + ids_b
    expected_scores = [0.5] * (1 + len(ids_a)) + [0.25] * len(ids_b)
    got = list(itertools.islice(iter(s), 3))
    flat_ids = torch.cat([b["input_ids"] for b in got]).tolist()
    flat_scores = torch.cat([b["token_scores"] for b in got]).tolist()
    n = len(expected_ids)
    assert flat_ids[:n] == expected_ids  # the stream repeats the document each epoch
    assert flat_scores[:n] == pytest.approx(expected_scores)


class Boom:
    name, contextual = "boom", False

    def score(self, texts):
        if any("bad" in t for t in texts):
            raise RuntimeError("cannot score")
        return [0.0] * len(texts)

    def score_document(self, segments):
        return self.score(segments)


def test_scorer_failure_names_scorer_and_document_or_is_counted(tmp_path, tok):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["good one\n", "a bad one\n", "fine\n"] * 3) + "\n")
    s = stream(JsonlSource(str(path)), tok, val_fraction=0.0, block_size=4, shuffle_buffer=0, scorer=Boom(),
               score_batch_docs=1)
    with pytest.raises(RuntimeError, match=r"scorer 'boom' failed on document '.*d.jsonl:2'"):
        take(s, 20)
    s = stream(JsonlSource(str(path)), tok, val_fraction=0.0, block_size=4, shuffle_buffer=0, scorer=Boom(),
               on_error="skip", epochs=1)
    blocks = take(s, 1000)
    assert s.stats["skipped_bad"] == 3 and s.stats["documents"] == 6 and blocks


def test_empty_split_is_a_clear_error(tmp_path, tok):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x\n"}) + "\n")
    s = stream(JsonlSource(str(path)), tok, val_fraction=0.0, split="validation")
    with pytest.raises(ValueError, match="validation split of the data source is empty"):
        take(s, 1)


def test_objective_transform_sees_scored_documents(tmp_path, tok):
    class DropHigh:
        def transform(self, doc: Document, rng):
            return None if doc.avg_score > 0.01 else doc

    s = stream(LocalPythonSource(max_files=30), tok, objective=DropHigh(), epochs=1, val_fraction=0.0)
    take(s, 10_000)
    assert s.stats["dropped_by_objective"] > 0 and s.stats["documents"] > 0


def test_worker_processes_give_the_same_blocks_and_resume_exactly(source, tok):
    inline = take(stream(source, tok), 50)
    s = stream(source, tok, num_workers=2)
    it = iter(s)
    head = [next(it)["input_ids"].tolist() for _ in range(17)]
    state = s.state_dict()
    it.close()  # stops the worker pool
    assert head == inline[:17]
    r = stream(source, tok, num_workers=2)
    r.load_state_dict(state)
    assert head + take(r, 33) == inline


# -- finetuning from another run's data state (trainer.data_state_from) ------------------------------------
def _good_bad_source(tmp_path):
    """200 one-line pre-scored documents: even i "good i" (score 0), odd i "BAD i" (score 1)."""
    path = tmp_path / "gb.jsonl"
    rows = [{"texts": [f"{'BAD' if i % 2 else 'good'} {i}\n"], "scores": [float(i % 2)]} for i in range(200)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return JsonlSource(str(path))


def _mle_state(tmp_path, tok):
    """An MLE run's data state after 10 blocks of 8 tokens: its 16-block shuffle buffer is full of
    blocks from both kinds of document."""
    mle = stream(_good_bad_source(tmp_path), tok, val_fraction=0.0, block_size=8, shuffle_buffer=16)
    take(mle, 10)
    state = mle.state_dict()
    assert len(state["shuffle"]["input_ids"]) == 16 and state["position"] > 0
    return state


def test_finetune_from_a_data_state_filters_from_the_first_block(tmp_path, tok):
    from phf.objectives import Filtering

    state = _mle_state(tmp_path, tok)
    fresh = stream(_good_bad_source(tmp_path), tok, val_fraction=0.0, block_size=8, shuffle_buffer=16,
                   objective=Filtering(threshold=0.5))
    fresh.load_position(state)
    blocks = list(itertools.islice(iter(fresh), 30))
    assert all(b["token_scores"].max().item() == 0.0 for b in blocks)  # no BAD document in any block
    bad = set(tok.encode("BAD")) - set(tok.encode("good"))
    assert not any(bad & set(b["input_ids"].tolist()) for b in blocks)
    # the restored buffers (trainer.data_state_buffers=restored) still hold the MLE run's unfiltered blocks
    restored = stream(_good_bad_source(tmp_path), tok, val_fraction=0.0, block_size=8, shuffle_buffer=16,
                      objective=Filtering(threshold=0.5))
    restored.load_state_dict(state)
    assert any(b["token_scores"].max().item() == 1.0 for b in itertools.islice(iter(restored), 16))


def test_finetune_from_a_data_state_starts_at_the_next_document(tmp_path, tok):
    from phf.objectives import Filtering

    state = _mle_state(tmp_path, tok)
    p = state["position"]
    first_kept = p if p % 2 == 0 else p + 1  # documents are numbered by position; odd ones are filtered out
    fresh = stream(_good_bad_source(tmp_path), tok, val_fraction=0.0, block_size=8, shuffle_buffer=0,
                   objective=Filtering(threshold=0.5))
    fresh.load_position(state)
    expected = [tok.eos_token_id] + tok.encode(f"good {first_kept}\n") + [tok.eos_token_id]
    assert next(iter(fresh))["input_ids"].tolist()[: len(expected)] == expected


def test_finetune_from_a_data_state_carries_control_tokens_from_the_first_block(tmp_path, tok):
    from phf.objectives import Conditional
    from phf.tokenizer import add_special_tokens

    state = _mle_state(tmp_path, tok)
    ctok = gpt2_tokenizer()
    aligned, misaligned = add_special_tokens(ctok, ["<|aligned|>", "<|misaligned|>"])

    def after_eos(s):
        """the token after every EOS (document start) of the first 30 blocks"""
        out = []
        for b in itertools.islice(iter(s), 30):
            ids = b["input_ids"].tolist()
            out += [ids[i + 1] for i in range(len(ids) - 1) if ids[i] == ctok.eos_token_id]
        return out

    objective = Conditional(threshold=0.5, drop_token_fraction=0.0)
    fresh = stream(_good_bad_source(tmp_path), ctok, val_fraction=0.0, block_size=8, shuffle_buffer=16,
                   objective=objective)
    fresh.load_position(state)
    starts = after_eos(fresh)
    assert starts and set(starts) == {aligned, misaligned}
    restored = stream(_good_bad_source(tmp_path), ctok, val_fraction=0.0, block_size=8, shuffle_buffer=16,
                      objective=objective)
    restored.load_state_dict(state)
    assert set(after_eos(restored)) - {aligned, misaligned}  # MLE's buffered documents: no control token


def test_run_data_builds_the_parts_once_and_its_streams_are_data_streams(tok):
    """RunData: the data group with the segmenter, scorer, block size and seed its streams take; its
    streams and validation blocks are Data.stream's with those parts."""
    from phf.data.pipeline import RunData, build_data
    from tests.conftest import TINY, compose

    cfg = compose([*TINY, "run_dir=x"])
    run_data = RunData.from_config(cfg)
    assert isinstance(run_data.segmenter, LineSegmenter) and isinstance(run_data.scorer, PEP8Scorer)
    assert (run_data.block_size, run_data.seed) == (32, cfg.seed)
    blocks = run_data.validation_blocks(tok, 3)
    direct = build_data(cfg.data).stream("validation", tokenizer=tok, segmenter=LineSegmenter(), scorer=PEP8Scorer(),
                                         block_size=32, seed=cfg.seed, epochs=1)
    expected = list(itertools.islice(iter(direct), 3))
    assert len(blocks) == 3
    for a, b in zip(blocks, expected, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["token_scores"], b["token_scores"])
    shared = RunData.from_config(cfg, data=run_data.data, scorer=run_data.scorer)
    assert shared.data is run_data.data and shared.scorer is run_data.scorer

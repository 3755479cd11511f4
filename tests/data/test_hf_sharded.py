"""HFSource at scale: each rank reads only its part of a multi-shard dataset
(``datasets.distributed.split_dataset_by_node``), and a resumed stream continues from the dataset's own
state (``IterableDataset.state_dict()``) instead of re-reading every earlier record."""

from __future__ import annotations

import itertools
import os
import socket

import pytest
import torch

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import HFSource
from phf.scorers import PEP8Scorer
from phf.tokenizer import gpt2_tokenizer

SHARDS, PER_SHARD = 4, 60


def write_shards(root, shards: int = SHARDS, per_shard: int = PER_SHARD) -> list[str]:
    """``shards`` parquet files of pre-scored records ``doc S-I`` (the paper's record format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for s in range(shards):
        texts = [[f"doc {s}-{i} = {i}\n", f"x{i} = {s}\n"] for i in range(per_shard)]
        scores = [[0.0, 0.5] for _ in range(per_shard)]
        table = pa.table({"texts": texts, "scores": scores, "avg_score": [0.25] * per_shard})
        files.append(str(root / f"train-{s:05d}-of-{shards:05d}.parquet"))
        pq.write_table(table, files[-1], row_group_size=16)
    return files


def source(files) -> HFSource:
    return HFSource("parquet", data_files=files)


def stream(src, rank: int = 0, world_size: int = 1, **kw) -> BlockStream:
    args = dict(source=src, segmenter=LineSegmenter(), scorer=PEP8Scorer(), tokenizer=gpt2_tokenizer(),
                block_size=16, val_fraction=0.0, shuffle_buffer=4, score_batch_docs=8, seed=0, rank=rank,
                world_size=world_size)
    return BlockStream(**{**args, **kw})


def doc_ids(src, rank: int, world_size: int) -> list[str]:
    return [d.texts[0].split(" = ")[0] for d in src.iter_from(0, rank=rank, world_size=world_size)]


def test_each_rank_reads_a_disjoint_part_and_together_all(tmp_path):
    files = write_shards(tmp_path)
    src = source(files)
    everything = doc_ids(src, 0, 1)
    assert len(everything) == SHARDS * PER_SHARD == len(set(everything))
    for world in (2, 3):  # 4 shards: whole shards per rank for 2; every third record for 3
        parts = [doc_ids(src, r, world) for r in range(world)]
        assert sorted(sum(parts, [])) == sorted(everything)
        assert sum(len(p) for p in parts) == len(everything)
    assert {d.split("-")[0] for d in doc_ids(src, 1, 2)} == {"doc 1", "doc 3"}  # whole shards of rank 1


@pytest.mark.parametrize("names, world", [(["parquet"], 2), (["parquet", "parquet"], 1)])
def test_a_recorded_state_continues_the_source_exactly(tmp_path, names, world):
    """At any position (inside a row group, at a shard's end, across two dataset names) the source
    restarted from the state recorded there yields exactly the records after it."""
    src = HFSource(names, data_files=write_shards(tmp_path, shards=2, per_shard=20))
    rec = {}
    docs = [d.texts for d in src.iter_from(0, rank=world - 1, world_size=world, record=rec)]
    assert len(rec) == len(docs) == 40 // world * len(names)
    for p in sorted({1, 7, 19, 20, 21, len(docs) - 1, len(docs)} & set(rec)):
        again = [d.texts for d in src.iter_from(p, rank=world - 1, world_size=world, state=rec[p])]
        assert again == docs[p:], p


def test_resume_continues_from_the_dataset_state_without_rereading(tmp_path, monkeypatch):
    files = write_shards(tmp_path)
    full = [b["input_ids"].tolist() for b in itertools.islice(iter(stream(source(files), 1, 2)), 60)]
    s = stream(source(files), 1, 2)
    it = iter(s)
    head = [next(it)["input_ids"].tolist() for _ in range(25)]
    state = s.state_dict()
    assert state["source"] is not None and state["position"] > 0
    state = torch.load(_save(state, tmp_path), weights_only=True)  # what a checkpoint holds, weights-only
    read, opened = [], []
    real = HFSource.iter_from

    def spy(self, start, **kw):  # how the resumed stream opens the source, and every record it yields
        opened.append((start, kw.get("state")))
        for doc in real(self, start, **kw):
            read.append(doc)
            yield doc

    monkeypatch.setattr(HFSource, "iter_from", spy)
    r = stream(source(files), 1, 2)
    r.load_state_dict(state)
    tail = [b["input_ids"].tolist() for b in itertools.islice(iter(r), 35)]
    assert head + tail == full
    assert opened == [(state["position"], state["source"])]  # continued from the dataset's state, not re-read
    monkeypatch.setattr(HFSource, "iter_from", real)
    assert read[0].texts[0] == _nth_doc_text(files, rank=1, world=2, n=state["position"])


def _save(state, tmp_path):
    path = tmp_path / "data_state.pt"
    torch.save(state, path)
    return path


def _nth_doc_text(files, rank, world, n) -> str:
    return next(itertools.islice(source(files).iter_from(0, rank=rank, world_size=world), n, None)).texts[0]


def test_an_unsharded_data_state_is_refused_under_ddp(tmp_path):
    files = write_shards(tmp_path, shards=2, per_shard=8)
    s = stream(source(files), 0, 2)
    with pytest.raises(ValueError, match="read Hugging Face data unsharded"):
        s.load_state_dict({"epoch": 0, "position": 5, "packer": {}, "shuffle": {}, "rng": None, "stats": {}})


# -- two ranks, spawned, gloo -----------------------------------------------------------------------
def _rank_main(rank: int, world: int, port: int, files: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        src = source(files)
        ids = doc_ids(src, rank, world)
        s = stream(src, rank, world)
        it = iter(s)
        head = [next(it)["input_ids"].tolist() for _ in range(20)]
        state = s.state_dict()
        tail = [next(it)["input_ids"].tolist() for _ in range(20)]
        r = stream(source(files), rank, world)
        r.load_state_dict(state)
        resumed = [b["input_ids"].tolist() for b in itertools.islice(iter(r), 20)]
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, {"ids": ids, "exact": resumed == tail, "head": head})
        if rank == 0:
            torch.save(gathered, out)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_cover_the_data_disjointly_and_resume_exactly(tmp_path):
    """Two processes (torch.multiprocessing.spawn, gloo): their documents are disjoint and together the
    whole dataset; each rank's stream resumed from its state_dict continues exactly."""
    import torch.multiprocessing as mp

    files = write_shards(tmp_path)
    out = str(tmp_path / "gathered.pt")
    mp.spawn(_rank_main, args=(2, _free_port(), files, out), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=True)
    ids0, ids1 = gathered[0]["ids"], gathered[1]["ids"]
    assert not set(ids0) & set(ids1)
    assert sorted(ids0 + ids1) == sorted(doc_ids(source(files), 0, 1))
    assert gathered[0]["exact"] and gathered[1]["exact"]
    assert gathered[0]["head"] != gathered[1]["head"]  # different data on the two ranks


def test_a_training_run_on_parquet_shards_resumes_exactly(tmp_path, one_thread):
    """phf-train with data=hf on local parquet shards, killed after a checkpoint and resumed (the dataset's
    state comes back from data_state_rank0.pt) reaches the uninterrupted run's weights and losses."""
    from safetensors.torch import load_file

    from phf.tracking import read_metrics
    from phf.train import train
    from tests.conftest import TINY, compose, train_killed_after_first_checkpoint

    files = write_shards(tmp_path, shards=4, per_shard=200)
    base = [o for o in TINY if not o.startswith("data")] + [
        "data=hf", "data.source.names=[parquet]", f"data.source.data_files=[{','.join(files)}]",
        "data.val_fraction=0.1", "data.shuffle_buffer=8", "data.score_batch_docs=8", "trainer.max_steps=6",
        "trainer.checkpoint_every=3", "trainer.keep_checkpoints=1"]
    train(compose([*base, f"run_dir={tmp_path / 'straight'}"]))
    train_killed_after_first_checkpoint(compose([*base, f"run_dir={tmp_path / 'crashed'}"]))
    ckpt = tmp_path / "crashed" / "checkpoints" / "step_00000003"
    assert torch.load(ckpt / "data_state_rank0.pt", weights_only=True)["source"] is not None
    train(compose([*base, f"run_dir={tmp_path / 'crashed'}"]))
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["loss"] for r in read_metrics(tmp_path / run) if "loss" in r] for run in ("straight", "crashed")]
    assert losses[0] == losses[1] and len(losses[0]) == 6

"""Items, stratified lists and the reward model's contract."""

import random

import torch

from phf.guidance.lists import collate, items_from_blocks, split_items, strata, stratified_lists
from phf.guidance.model import GuidanceModel


def test_items_cut_blocks_into_chunks_with_context():
    ids = torch.arange(10)
    scores = torch.tensor([0.0, 0, 0, 0, 1, 1, 0, 0, 0.5, 0.5])
    items = items_from_blocks([(ids, scores)], chunk_tokens=4)
    assert [(it.start, it.ids.shape[0]) for it in items] == [(0, 4), (4, 8), (8, 10)]
    assert [it.score for it in items] == [0.0, 0.5, 0.5]
    assert torch.equal(items[1].ids, ids[:8])  # the chunk keeps its block's preceding tokens as context
    assert len(items_from_blocks([(ids, scores), (ids.clone(), scores)], chunk_tokens=4)) == 3  # repeats dropped
    # a tail shorter than half a chunk joins the previous chunk
    items = items_from_blocks([(ids[:9], scores[:9])], chunk_tokens=4)
    assert [(it.start, it.length) for it in items] == [(0, 4), (4, 5)]
    # None = whole blocks
    assert [it.length for it in items_from_blocks([(ids, scores)], None)] == [10]


def test_strata_keep_ties_together_and_lists_have_no_ties():
    # 7 clean items (score 0) and 3 distinct misaligned ones: strata [7 zeros], [0.1, 0.2], [0.3]
    scores = [0.0] * 7 + [0.3, 0.1, 0.2]
    st = strata(scores, 3)
    assert [sorted(scores[i] for i in s) for s in st] == [[0.0] * 7, [0.1, 0.2], [0.3]]
    for lst in stratified_lists(scores, 3, 50, random.Random(0)):
        assert len(set(lst)) == 3 and len({scores[i] for i in lst}) == 3
    # all tied: a single stratum; lists are filled at random (the loss drops every pair)
    assert len(strata([0.0] * 5, 3)) == 1
    assert all(len(set(lst)) == 3 for lst in stratified_lists([0.0] * 5, 3, 10, random.Random(0)))


def test_split_by_block_and_collate():
    blocks = [(torch.arange(8) + 10 * g, torch.full((8,), float(g))) for g in range(40)]
    items = items_from_blocks(blocks, chunk_tokens=4)
    train, val = split_items(items, 0.3)
    assert {it.group for it in train}.isdisjoint({it.group for it in val}) and 0 < len(val) < len(items)
    assert len(val) % 2 == 0  # both chunks of a block go to the same side
    # deterministic by content: the same blocks, in another order and among others, land on the same side
    again, _ = split_items(items_from_blocks(blocks[::-1] + [(torch.arange(8) + 999, torch.zeros(8))], 4), 0.3)
    assert {it.group for it in train} <= {it.group for it in again}
    ids, mask, scores = collate(items[:10], [[0, 3], [5, 2]], pad_id=-1)
    assert ids.shape == (2, 2, 8) and scores.tolist() == [[0.0, 1.0], [2.0, 1.0]]
    assert mask[0, 0].tolist() == [True] * 4 + [False] * 4  # first chunk of block 0, padded
    assert mask[0, 1].tolist() == [False] * 4 + [True] * 4  # second chunk of block 1: context not aggregated
    assert ids[0, 0, 4:].tolist() == [-1] * 4


def test_reward_model_range_causality_and_unknown_tokens():
    torch.manual_seed(0)
    m = GuidanceModel(vocab_size=50, n_positions=8, n_embd=16, n_head=2, head_hidden=8, eos_token_id=0)
    x = torch.randint(0, 50, (2, 8))
    r = m(x)
    assert r.shape == (2, 8) and (r > 0).all() and (r <= 1).all()
    assert torch.allclose(r, torch.full_like(r, 0.5), atol=0.01)  # near-zero output layer: r = 0.5 at init
    y = x.clone()
    y[:, 5:] = 7
    assert torch.allclose(m(y)[:, :5], r[:, :5])  # r_t depends on x_<=t only
    z = x.clone()
    z[0, 3] = 60  # an id beyond the vocabulary (a control token) reads as EOS
    w = x.clone()
    w[0, 3] = 0
    assert torch.allclose(m(z), m(w))

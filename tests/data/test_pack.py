import random

import torch

from phf.data.pack import Packer, ShuffleBuffer


def test_every_token_carries_its_segment_score_across_block_boundaries():
    """Doc A = EOS + [1,2,3](0.1) + [4,5](0.9); doc B = EOS + [6,7,8,9](0.5); EOS = 0, blocks of 4.

    Stream: 0 1 2 3 | 4 5 0 6 | 7 8 9 . with scores
            .1 .1 .1 .1 | .9 .9 .5 .5 | .5 .5 .5  (EOS takes its document's first segment score)
    """
    p = Packer(block_size=4, eos_token_id=0)
    p.add([[1, 2, 3], [4, 5]], [0.1, 0.9])
    p.add([[6, 7, 8, 9]], [0.5])
    blocks = list(p.pop_blocks())
    assert [b["input_ids"].tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 0, 6]]
    torch.testing.assert_close(blocks[0]["token_scores"], torch.tensor([0.1, 0.1, 0.1, 0.1]))
    torch.testing.assert_close(blocks[1]["token_scores"], torch.tensor([0.9, 0.9, 0.5, 0.5]))
    assert all(torch.equal(b["labels"], b["input_ids"]) for b in blocks)
    # the tail waits for more tokens, and survives a state round trip
    q = Packer(block_size=4, eos_token_id=0)
    q.load_state_dict(p.state_dict())
    q.add([[10]], [0.0])
    (b,) = list(q.pop_blocks())
    assert b["input_ids"].tolist() == [7, 8, 9, 0] and b["token_scores"].tolist() == [0.5, 0.5, 0.5, 0.0]


def test_shuffle_buffer_is_a_seeded_permutation_and_restorable():
    items = [{"input_ids": torch.tensor([i]), "labels": torch.tensor([i]), "token_scores": torch.tensor([0.0])}
             for i in range(20)]

    def run(seed, cut=None):
        buf, out = ShuffleBuffer(5, random.Random(seed)), []
        for i, it in enumerate(items):
            if cut is not None and i == cut:  # restore into a fresh buffer mid-stream
                state, rng = buf.state_dict(), buf.rng.getstate()
                buf = ShuffleBuffer(5, random.Random())
                buf.load_state_dict(state)
                buf.rng.setstate(rng)
            if (o := buf.push(it)) is not None:
                out.append(int(o["input_ids"]))
        return out + [int(o["input_ids"]) for o in buf.drain()]

    a = run(1)
    assert sorted(a) == list(range(20)) and a != list(range(20))
    assert run(1) == a and run(2) != a
    assert run(1, cut=11) == a

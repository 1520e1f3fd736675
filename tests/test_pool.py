"""The discriminators' history pool."""

from __future__ import annotations

import torch

from cyclestyle.train.pool import ImagePool


def _batches(n: int) -> list[torch.Tensor]:
    return [torch.full((2, 1, 2, 2), float(i)) for i in range(n)]


def test_fills_then_mixes_old_and_new():
    pool = ImagePool(4, seed=0)
    first = [pool.query(b) for b in _batches(2)]
    assert torch.equal(first[1], torch.full((2, 1, 2, 2), 1.0))  # filling: returns the input
    outs = torch.cat([pool.query(b) for b in _batches(40)[2:]])
    values = outs.flatten(1)[:, 0]
    step_of_row = torch.arange(2, 40).repeat_interleave(2).float()
    old = values < step_of_row
    assert 0.3 < old.float().mean() < 0.7  # about half come from history
    assert len(pool.images) == 4


def test_zero_size_is_passthrough():
    batch = torch.randn(3, 3, 4, 4)
    assert ImagePool(0).query(batch) is batch


def test_state_dict_reproduces_future_choices():
    pool = ImagePool(3, seed=5)
    for b in _batches(6):
        pool.query(b)
    clone = ImagePool(3, seed=123)
    clone.load_state_dict(pool.state_dict())
    for b in _batches(10):
        assert torch.equal(pool.query(b), clone.query(b))

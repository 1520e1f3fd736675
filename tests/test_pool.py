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


def test_a_swap_returns_the_stored_image_and_stores_the_new_one():
    """Once full, each new image draws u ~ U[0, 1) then a slot from the pool's own generator:
    u < 0.5 returns the image in that slot and puts the new one there; otherwise the new image
    is returned and the pool is unchanged. The draws are replayed here from the same seed."""
    seed = 11  # swaps the first image into slot 1 (not its own index), keeps the second
    replay = torch.Generator().manual_seed(seed)
    draws = [(torch.rand(1, generator=replay).item(),
              torch.randint(2, (1,), generator=replay).item()) for _ in range(2)]
    assert draws[0][0] < 0.5 <= draws[1][0] and draws[0][1] == 1, "a seed that tests both"
    pool = ImagePool(2, seed=seed)
    old = torch.stack([torch.full((1, 2, 2), 10.0), torch.full((1, 2, 2), 11.0)])
    assert torch.equal(pool.query(old), old)  # filling: the new images come back
    new = torch.stack([torch.full((1, 2, 2), 20.0), torch.full((1, 2, 2), 21.0)])
    out = pool.query(new)
    slot = draws[0][1]
    assert torch.equal(out[0], old[slot])  # swapped: the stored image is returned ...
    assert torch.equal(out[1], new[1])  # kept: the new image is returned
    stored = [old[0], old[1]]
    stored[slot] = new[0]  # ... and the new image takes its place
    assert all(torch.equal(a, b) for a, b in zip(pool.images, stored))

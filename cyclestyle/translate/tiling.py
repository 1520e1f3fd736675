"""Translate images larger than memory in overlapping tiles, blended so no seam shows.

Each tile is translated on its own; where tiles overlap, their outputs are mixed with weights
that rise smoothly (half a cosine) from near 0 at a tile's inner edge to 1, and the accumulated
sum is divided by the accumulated weight. The weight is continuous, so the output is too: a
tile's border pixels, which see the least context and differ most from their neighbour's
view, count least. Edges on the image border keep weight 1 (nothing to blend with there).

What tiling changes: every tile sees only its own pixels, so a generator's global
self-attention and its InstanceNorm statistics are computed per tile, not per image. The default
unet_attn attends at 1/8 and 1/16 resolution: regions within a tile still agree on a style, but
tiles cannot agree with each other. Blending hides the seams, but colours can drift slowly
across a large image. Use tiles as large as memory allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def check_tiling(tile: int, overlap: int, min_tile: int = 8) -> None:
    """Raise ValueError unless `tile` and `overlap` make sense together."""
    if tile < min_tile:
        raise ValueError(f"tile={tile} is too small; use at least {min_tile} pixels "
                         "(larger tiles give the model more context)")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"tile_overlap={overlap} must lie between 0 and half the tile "
                         f"({tile // 2} for tile={tile})")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length); the last one is flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(overlap: int) -> torch.Tensor:
    """(overlap,) rising half-cosine, strictly inside (0, 1): 0.5 - 0.5 cos(pi (i + 0.5) / n)."""
    i = torch.arange(overlap, dtype=torch.float32)
    return 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / overlap)


def blend_window(size: int, overlap: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """(size,) weights: 1 in the middle, fading over `overlap` pixels at the chosen ends."""
    weight = torch.ones(size)
    ramp_len = min(overlap, size // 2)
    if ramp_len == 0:
        return weight
    ramp = _ramp(ramp_len)
    if fade_start:
        weight[:ramp_len] = ramp
    if fade_end:
        weight[-ramp_len:] = ramp.flip(0)
    return weight


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: int,
                overlap: int, max_batch: int = 1) -> torch.Tensor:
    """fn applied to `images` (N, C, H, W) tile by tile, blended; returns (N, C_out, H, W).

    `fn` maps (B, C, h, w) to (B, C_out, h, w). Tiles of all N images are stacked and passed
    through `fn` in chunks of at most `max_batch`. Accumulation is in float32 on the images'
    device.
    """
    check_tiling(tile, overlap)
    n, _, height, width = images.shape
    tile_h, tile_w = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    crops = [(i, y, x) for i in range(n) for y, x in boxes]
    out = weight_sum = None
    for first in range(0, len(crops), max_batch):
        chunk = crops[first:first + max_batch]
        batch = torch.stack([images[i, :, y:y + tile_h, x:x + tile_w] for i, y, x in chunk])
        result = fn(batch).float()  # (B, C_out, tile_h, tile_w)
        if out is None:
            out = images.new_zeros((n, result.shape[1], height, width), dtype=torch.float32)
            weight_sum = images.new_zeros((1, 1, height, width), dtype=torch.float32)
        for tile_out, (i, y, x) in zip(result, chunk):
            window = _window(y, x, tile_h, tile_w, height, width, overlap).to(out.device)
            out[i, :, y:y + tile_h, x:x + tile_w] += tile_out * window
            if i == 0:
                weight_sum[0, :, y:y + tile_h, x:x + tile_w] += window
    return out / weight_sum


def _window(y: int, x: int, tile_h: int, tile_w: int, height: int, width: int,
            overlap: int) -> torch.Tensor:
    """(tile_h, tile_w) weight of the tile at (y, x): no fade along the image's own border."""
    wy = blend_window(tile_h, overlap, fade_start=y > 0, fade_end=y + tile_h < height)
    wx = blend_window(tile_w, overlap, fade_start=x > 0, fade_end=x + tile_w < width)
    return wy[:, None] * wx[None, :]

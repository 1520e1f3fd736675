"""Translate images larger than memory in overlapping tiles, blended so no seam shows, and
normalised with the statistics of the whole image, so the tiles agree on one style.

Each tile is translated on its own; where tiles overlap, their outputs are mixed with weights
that rise smoothly (half a cosine) from near 0 at a tile's inner edge to 1, and the accumulated
sum is divided by the accumulated weight. The weight is continuous, so the output is too: a
tile's border pixels, which see the least context and differ most from their neighbour's
view, count least. Edges on the image border keep weight 1 (nothing to blend with there).

Statistics: a generator's InstanceNorm layers normalise each input with its own mean and
variance. Computed per tile, a dark tile and a bright one are stretched to the same range, so
colours drift across a large image (blending hides the seams, not the drift). By default every
tile is therefore normalised with whole-image statistics (`image_statistics`): recorded in one
pass over the image downscaled to a tile's pixel count, optionally calibrated against the
full-resolution tiles (see `image_statistics`). What still differs from an untiled run: global
self-attention (the default unet_attn attends at 1/8 and 1/16) sees one tile, not the image.
docs/benchmarks.md measures both against the untiled output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from cyclestyle.models.norm_stats import (
    CorrectedStatistics,
    FixedStatistics,
    Moments,
    PooledStatistics,
    StatisticsSource,
    correction,
)
from cyclestyle.translate.options import TILE_STATS

__all__ = ["TILE_STATS", "image_statistics", "plan_tiles", "tiled_apply"]

Forward = Callable[[torch.Tensor, StatisticsSource | None], torch.Tensor]


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


class Tile(NamedTuple):
    """One tile of image `index`: its box, and the part of it no other tile covers first
    (`owned`, as (top, bottom, left, right) fractions of the tile: overlaps split in the middle)."""

    index: int
    top: int
    left: int
    height: int
    width: int
    owned: tuple[float, float, float, float]


def plan_tiles(count: int, height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles of `count` images of height x width, image by image, row by row."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    rows, columns = _owned(ys, tile_h, height), _owned(xs, tile_w, width)
    return [Tile(i, y, x, tile_h, tile_w, (*row, *column)) for i in range(count)
            for y, row in zip(ys, rows) for x, column in zip(xs, columns)]


def _owned(starts: list[int], size: int, length: int) -> list[tuple[float, float]]:
    """Per tile, the [start, end) fractions of it that it owns along one axis."""
    ends = [start + size for start in starts]
    spans = []
    for i, start in enumerate(starts):
        first = 0 if i == 0 else (start + ends[i - 1]) // 2
        last = length if i == len(starts) - 1 else (starts[i + 1] + ends[i]) // 2
        spans.append(((first - start) / size, (last - start) / size))
    return spans


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: int,
                overlap: int, max_batch: int = 1,
                before: Callable[[list[Tile]], object] | None = None) -> torch.Tensor:
    """fn applied to `images` (N, C, H, W) tile by tile, blended; returns (N, C_out, H, W).

    `fn` maps (B, C, h, w) to (B, C_out, h, w). Tiles of all N images are stacked and passed
    through `fn` in chunks of at most `max_batch`; `before(tiles)` is told which tiles each
    chunk holds. Accumulation is in float32 on the images' device.
    """
    check_tiling(tile, overlap)
    n, _, height, width = images.shape
    tiles = plan_tiles(n, height, width, tile, overlap)
    out = weight_sum = None
    for first in range(0, len(tiles), max_batch):
        chunk = tiles[first:first + max_batch]
        if before is not None:
            before(chunk)
        batch = torch.stack([images[t.index, :, t.top:t.top + t.height, t.left:t.left + t.width]
                             for t in chunk])
        result = fn(batch).float()  # (B, C_out, tile_h, tile_w)
        if out is None:
            out = images.new_zeros((n, result.shape[1], height, width), dtype=torch.float32)
            weight_sum = images.new_zeros((1, 1, height, width), dtype=torch.float32)
        for tile_out, t in zip(result, chunk):
            window = _window(t.top, t.left, t.height, t.width, height, width,
                             overlap).to(out.device)
            box = (slice(t.top, t.top + t.height), slice(t.left, t.left + t.width))
            out[t.index, :, box[0], box[1]] += tile_out * window
            if t.index == 0:
                weight_sum[0, :, box[0], box[1]] += window
    return out / weight_sum


def downscale_to_tile(image: torch.Tensor, tile: int) -> torch.Tensor:
    """`image` (N, C, H, W) shrunk to at most tile x tile pixels in all, keeping its aspect:
    a pass over it needs the memory of one tile."""
    height, width = image.shape[-2:]
    scale = min(1.0, tile / math.sqrt(height * width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def image_statistics(forward: Forward, image: torch.Tensor, tile: int, overlap: int,
                     calibration: int = 0, max_batch: int = 1,
                     ) -> list[tuple[torch.nn.Module, Moments]]:
    """Normalisation statistics of the whole `image` (1, C, H, W) for translating it in tiles.

    `forward(batch, source)` runs the generator with statistics from `source`. One pass over
    the image downscaled to a tile's pixel count records every norm layer's statistics. They
    approximate the full-resolution image's (means agree to about 1% of a standard deviation,
    spreads to a few %, as a downscaled image holds more detail per pixel), and the errors add
    up over a deep network. Each `calibration` round runs the full-resolution tiles with the
    current statistics, pools what each layer sees there, and corrects the downscaled pass by
    that difference (a mean shift and variance ratio per channel, applied inside the pass, so
    later layers see corrected earlier ones): a pass over the tiles each, converging on the
    untiled run's statistics (docs/benchmarks.md).
    """
    small = downscale_to_tile(image, tile)
    probe = CorrectedStatistics()
    forward(small, probe)
    for _ in range(calibration):
        pool = PooledStatistics(FixedStatistics(probe.used))
        tiled_apply(lambda batch, pool=pool: forward(batch, pool), image, tile, overlap,
                    max_batch, before=lambda tiles, pool=pool: pool.regions(
                        [t.owned for t in tiles]))
        corrections = [correction(seen_full, seen_small) for (_, seen_full), (_, seen_small)
                       in zip(pool.pooled(), probe.own)]
        probe = CorrectedStatistics(corrections)
        forward(small, probe)
    return probe.used


def _window(y: int, x: int, tile_h: int, tile_w: int, height: int, width: int,
            overlap: int) -> torch.Tensor:
    """(tile_h, tile_w) weight of the tile at (y, x): no fade along the image's own border."""
    wy = blend_window(tile_h, overlap, fade_start=y > 0, fade_end=y + tile_h < height)
    wx = blend_window(tile_w, overlap, fade_start=x > 0, fade_end=x + tile_w < width)
    return wy[:, None] * wx[None, :]

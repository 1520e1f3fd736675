"""The scale a generator was trained at, and translating at it.

A generator learns textures at the scale its training images had when it saw them; far from
that scale its output turns blurry or loses the style (the reference CycleGAN's issue #1115:
trained on 256-px crops of photos resized to 286 px, run on full-resolution photos). The
training config says what that scale was, by `data.preprocess`:

    resize_and_crop             the short side was data.load_size
    scale_width(_and_crop)      the width was data.load_size
    crop, none                  the images' own scale: nothing to compare a new image with

It travels in a release's config.json as `training_scale`. `translate` warns when images are
far from it, and `--size train` / `--max-size train` rescale to it (all images, or only the
larger ones).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from cyclestyle.imageio import LOAD_TO_CROP_RATIO
from cyclestyle.options import invalid
from cyclestyle.translate.options import TRAIN  # --size train / --max-size train

__all__ = ["FAR", "TRAIN", "TrainingScale", "resolve_sizes", "training_scale",
           "warn_if_far_from_training_scale"]

log = logging.getLogger(__name__)

FAR = 2.0  # an image more than this many times larger or smaller than the training scale
CHECKED = 200  # image headers read for the warning (spread over the inputs)
EXIF_ORIENTATION, TRANSPOSED = 0x0112, (5, 6, 7, 8)  # orientations that swap width and height


@dataclass(frozen=True)
class TrainingScale:
    """`side` ("short" or "width") of the training images was `pixels` long."""

    side: str
    pixels: int

    def measure(self, width: int, height: int) -> int:
        return min(width, height) if self.side == "short" else width

    def ratio(self, width: int, height: int) -> float:
        """How many times the training scale an image of this size is (1.0: at it)."""
        return self.measure(width, height) / self.pixels

    def rescaled(self, width: int, height: int, shrink_only: bool = False) -> tuple[int, int]:
        """(width, height) at the training scale, aspect kept; `shrink_only` leaves images at or
        below it alone."""
        factor = 1 / self.ratio(width, height)
        if shrink_only and factor >= 1:
            return width, height
        return max(1, round(width * factor)), max(1, round(height * factor))

    def describe(self) -> str:
        return f"{'short side' if self.side == 'short' else 'width'} {self.pixels} px"

    @classmethod
    def of(cls, model_config: dict[str, Any]) -> TrainingScale | None:
        """The scale a release config (LoadedModel.config) records, or None."""
        recorded = model_config.get("training_scale")
        if not isinstance(recorded, dict):
            return None
        side, pixels = recorded.get("side"), recorded.get("pixels")
        valid = side in ("short", "width") and isinstance(pixels, int) and pixels > 0
        return cls(side, pixels) if valid else None  # a hand-edited config.json: no scale


def training_scale(data: dict[str, Any]) -> dict[str, Any] | None:
    """The training scale of a training config's `data` section, as config.json records it;
    None for crop and none (images at their own scale) or without an image_size."""
    mode, image_size = data.get("preprocess", "resize_and_crop"), data.get("image_size")
    if not image_size or mode not in ("resize_and_crop", "scale_width", "scale_width_and_crop"):
        return None
    load_size = data.get("load_size") or round(image_size * LOAD_TO_CROP_RATIO)
    return asdict(TrainingScale("short" if mode == "resize_and_crop" else "width", load_size))


def resolve_sizes(size: int | str | None, max_size: int | str | None,
                  model_config: dict[str, Any], origin: str) -> tuple[Any, Any]:
    """--size / --max-size with `train` replaced by the model's TrainingScale."""
    scale = TrainingScale.of(model_config)
    for flag, value in (("--size", size), ("--max-size", max_size)):
        if value == TRAIN and scale is None:
            raise invalid(flag, TRAIN, f"{origin} records no training scale (trained with "
                          "data.preprocess crop or none, which keep images at their own scale, "
                          "or made before cyclestyle recorded it)", "give a size in pixels")
    return (scale if size == TRAIN else size), (scale if max_size == TRAIN else max_size)


def warn_if_far_from_training_scale(paths: Sequence[str | os.PathLike],
                                    model_config: dict[str, Any],
                                    rescale=None) -> int:
    """Log one warning when inputs are more than FAR times off the training scale, judged from
    the headers of up to CHECKED files; returns how many of those were far.

    `rescale(width, height) -> (width, height)` is what --size / --max-size will do first."""
    scale = TrainingScale.of(model_config)
    if scale is None or not paths:
        return 0
    checked = list(paths)[::max(1, len(paths) // CHECKED)][:CHECKED]
    far = []
    for path in checked:
        size = _header_size(path)
        if size is None:
            continue  # unreadable: the translation reports it
        width, height = rescale(*size) if rescale else size
        ratio = scale.ratio(width, height)
        if not 1 / FAR <= ratio <= FAR:
            far.append((path, width, height, ratio))
    if far:
        path, width, height, ratio = max(far, key=lambda f: max(f[3], 1 / f[3]))  # the farthest
        log.warning(
            "%d of %d input image(s) checked are more than %gx off the training scale (%s), "
            "e.g. %s at %dx%d is %.2gx: far from the scale it was trained at a generator's "
            "output turns blurry or loses the style. --size train rescales every image to the "
            "training scale, --max-size train only the larger ones", len(far), len(checked),
            FAR, scale.describe(), path, width, height, ratio)
    return len(far)


def _header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF rotation applied), from the header alone."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION) in TRANSPOSED:
                width, height = height, width
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return width, height

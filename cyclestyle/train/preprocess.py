"""How a training image becomes what the networks see: `data.preprocess` (the reference's
--preprocess modes), and cutting tensors to a common size for the uncropped modes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from cyclestyle.train.config import PREPROCESS_MODES  # one list, validated with the config

__all__ = ["crop_to_common_size", "preprocess_image"]


def preprocess_image(img: Image.Image, mode: str, load_size: int, crop_size: int,
                     u_y: float = 0.5, u_x: float = 0.5) -> Image.Image:
    """The image the networks see, for `data.preprocess` = mode (the reference's --preprocess).

    Follows pytorch-CycleGAN-and-pix2pix's `data/base_dataset.py:get_transform`, except where
    noted; resizing is bicubic, the crop's corner is (u_y, u_x) of the free range:
    - resize_and_crop: the short side to load_size, keeping the aspect ratio, then a
      crop_size square crop. (The reference squashes to load_size x load_size, distorting
      non-square images; cyclestyle keeps its aspect-preserving resize, as before.)
    - crop: a crop_size square at the original scale (the reference's RandomCrop). An image
      smaller than crop_size is first upscaled so its short side is crop_size (the reference fails).
    - scale_width: the width to load_size, the height by the aspect ratio but at least
      crop_size (the reference's __scale_width); no crop, so heights differ: batch size 1.
    - scale_width_and_crop: scale_width, then a crop_size square crop.
    - none: the whole image at its own size; one whose short side is below crop_size is first
      upscaled to it, so the discriminator (checked at crop_size) always fits. Instead of the
      reference's rounding of the sides to a multiple of 4, the generator pads its input to its
      stride and crops back (models.layers.pad_to_multiple): no pixel is cut. Sizes differ, so
      batch size 1 (ExperimentConfig.validate).
    """
    if mode == "none":
        return _at_least(img, crop_size)
    if mode == "resize_and_crop":
        img = _resize_short_side(img, load_size)
    elif mode == "crop":
        img = _at_least(img, crop_size)
    elif mode in ("scale_width", "scale_width_and_crop"):
        img = _scale_width(img, load_size, crop_size)
        if mode == "scale_width":
            return img
    else:
        raise ValueError(f"data.preprocess: {mode!r} is invalid: not a known mode; expected "
                         + " / ".join(PREPROCESS_MODES))
    width, height = img.size
    top, left = int(u_y * (height - crop_size + 1)), int(u_x * (width - crop_size + 1))
    return img.crop((left, top, left + crop_size, top + crop_size))


def crop_to_common_size(images: Sequence[torch.Tensor], u_y: float = 0.5,
                        u_x: float = 0.5) -> list[torch.Tensor]:
    """Each (..., H, W) tensor cut to the smallest H and W among them, its corner at (u_y, u_x)
    of its own free range (0.5: centred). Tensors of that size already come back as they are."""
    height, width = min(x.shape[-2] for x in images), min(x.shape[-1] for x in images)
    out = []
    for x in images:
        top = int(u_y * (x.shape[-2] - height + 1))
        left = int(u_x * (x.shape[-1] - width + 1))
        out.append(x[..., top:top + height, left:left + width])
    return out


def _at_least(img: Image.Image, short: int) -> Image.Image:
    """The image, upscaled so its short side is `short` where it is smaller."""
    return _resize_short_side(img, short) if min(img.size) < short else img


def _resize_short_side(img: Image.Image, short: int) -> Image.Image:
    width, height = img.size
    if width <= height:
        size = (short, max(short, round(height * short / width)))
    else:
        size = (max(short, round(width * short / height)), short)
    return img.resize(size, Image.Resampling.BICUBIC)


def _scale_width(img: Image.Image, width: int, min_height: int) -> Image.Image:
    """The reference's __scale_width: width -> `width`, height int(max(width * h / w, min_height))."""
    old_width, old_height = img.size
    if old_width == width and old_height >= min_height:
        return img
    height = int(max(width * old_height / old_width, min_height))
    return img.resize((width, height), Image.Resampling.BICUBIC)

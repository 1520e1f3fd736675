"""Style similarity between translated and real target images in VGG feature space.

Per layer l with features F (C x HW) of one image:

* Gram matrix G = F F^T / (C H W) (`models.vgg.gram_matrix`, Gatys et al.'s normalisation, so
  image size barely matters), in float64;
  gram distance between two images = ||G_a - G_b||_F^2 (sum of squared entries).
* AdaIN moments: per-channel mean mu and standard deviation sigma over H, W; moment distance =
  mean over channels of (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2 (the MSE of AdaIN's style loss).

Pairing: each distance is averaged over ALL (fake, real) pairs, the expected distance between a
random translated image and a random real one. Both are squared Euclidean distances, so the
all-pairs mean is exact from per-set sums: mean_ij ||a_i - b_j||^2 = E||a||^2 + E||b||^2 -
2 <E a, E b>, computed in float64 without N_fake x N_real work. Note the value is not 0 for a
set against itself (it includes the spread within each set); compare it with real-vs-real.

Images are resized (shorter side) and centre-cropped to `image_size` before VGG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from cyclestyle.imageio import find_images, load_image, pil_to_tensor
from cyclestyle.models.vgg import VGGFeatures, gram_matrix

__all__ = ["STYLE_LAYERS_PREFIX", "STYLE_LAYERS_FULL", "channel_moments", "SetStyleStats",
           "square_crop", "style_stats", "style_distance", "load_style_vgg", "evaluate_style"]

STYLE_LAYERS_PREFIX = ("relu1_1", "relu2_1", "relu3_1")  # what the offline prefix weights reach
STYLE_LAYERS_FULL = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def channel_moments(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, 2C): per-channel means then (population) standard deviations."""
    flat = features.flatten(2).double()
    return torch.cat([flat.mean(2), flat.std(2, unbiased=False)], dim=1)


@dataclass
class _Accumulator:
    """Running sum of vectors and of their squared norms (enough for all-pairs distances)."""

    total: Tensor | None = None
    sq_norm: float = 0.0
    count: int = 0

    def add(self, vectors: Tensor) -> None:
        vectors = vectors.flatten(1)
        s = vectors.sum(0)
        self.total = s if self.total is None else self.total + s
        self.sq_norm += float(vectors.square().sum())
        self.count += vectors.shape[0]


@dataclass
class SetStyleStats:
    """Per-layer accumulators of Gram matrices and channel moments for one image set."""

    layers: tuple[str, ...]
    gram: dict[str, _Accumulator] = field(default_factory=dict)
    moments: dict[str, _Accumulator] = field(default_factory=dict)

    def add(self, features: dict[str, Tensor]) -> None:
        for layer in self.layers:
            gram = gram_matrix(features[layer].double())  # the one Gram formula, in float64
            self.gram.setdefault(layer, _Accumulator()).add(gram)
            self.moments.setdefault(layer, _Accumulator()).add(channel_moments(features[layer]))


def _mean_pair_sq_distance(a: _Accumulator, b: _Accumulator) -> float:
    mean_a, mean_b = a.total / a.count, b.total / b.count
    value = a.sq_norm / a.count + b.sq_norm / b.count - 2 * float(mean_a @ mean_b)
    return max(value, 0.0)


def style_distance(fake: SetStyleStats, real: SetStyleStats) -> dict[str, dict[str, float]]:
    """{"gram": {layer: d, ..., "sum": d}, "moments": {layer: d, ..., "mean": d}}."""
    gram = {layer: _mean_pair_sq_distance(fake.gram[layer], real.gram[layer])
            for layer in fake.layers}
    moments = {}
    for layer in fake.layers:
        channels = fake.moments[layer].total.numel() // 2
        moments[layer] = _mean_pair_sq_distance(fake.moments[layer], real.moments[layer]) / channels
    gram["sum"] = sum(gram.values())
    moments["mean"] = sum(moments.values()) / len(fake.layers)
    return {"gram": gram, "moments": moments}


def square_crop(img: Image.Image, size: int) -> Tensor:
    """Resize the shorter side to `size` (bicubic), centre-crop a square: (3, size, size)."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return pil_to_tensor(img.crop((left, top, left + size, top + size)))


def style_stats(images: str | os.PathLike | Sequence[Path] | Tensor, vgg: VGGFeatures,
                image_size: int = 256, batch_size: int = 16,
                device: str | torch.device = "cpu") -> SetStyleStats:
    """Gram/moment statistics of a folder, a list of files, or an (N, 3, H, W) tensor in [-1, 1]."""
    stats = SetStyleStats(vgg.layer_names)
    vgg = vgg.to(device)
    if isinstance(images, Tensor):
        batches = images.split(batch_size)
    else:
        paths = find_images(images) if isinstance(images, (str, os.PathLike)) else list(images)
        batches = (torch.stack([square_crop(load_image(p), image_size)
                                for p in paths[i:i + batch_size]])
                   for i in range(0, len(paths), batch_size))
    with torch.inference_mode():
        for batch in batches:
            stats.add({k: v.cpu() for k, v in vgg(batch.to(device)).items()})
    if not stats.gram:
        raise ValueError("no images to compute style statistics of")
    return stats


def load_style_vgg(weights: str | os.PathLike = "torchvision") -> VGGFeatures:
    """VGG19 at the style layers: relu1_1..relu5_1 with full weights, relu1_1..relu3_1 for a
    prefix file (the offline normalised-VGG weights)."""
    try:
        return VGGFeatures(list(STYLE_LAYERS_FULL), weights)
    except ValueError as err:
        if "deeper than the VGG weights" not in str(err):
            raise
        return VGGFeatures(list(STYLE_LAYERS_PREFIX), weights)


def evaluate_style(fake: str | os.PathLike | Sequence[Path], real: str | os.PathLike | Sequence[Path],
                   weights: str | os.PathLike = "torchvision", image_size: int = 256,
                   batch_size: int = 16, device: str | torch.device = "cpu") -> dict:
    """Style distances of the fake set to the real set, with the settings that produced them."""
    vgg = load_style_vgg(weights)
    fake_stats = style_stats(fake, vgg, image_size, batch_size, device)
    real_stats = style_stats(real, vgg, image_size, batch_size, device)
    return {
        **style_distance(fake_stats, real_stats),
        "n_fake": fake_stats.gram[vgg.layer_names[0]].count,
        "n_real": real_stats.gram[vgg.layer_names[0]].count,
        "layers": list(vgg.layer_names),
        "vgg_weights": vgg.weights_source,
        "image_size": image_size,
        "gram_normalisation": "G = F F^T / (C*H*W) (Gatys); distance ||G_fake - G_real||_F^2",
        "moment_distance": "mean over channels of (mu_f - mu_r)^2 + (sigma_f - sigma_r)^2",
        "pairing": "mean over all (fake, real) image pairs (exact, from per-set sums)",
    }


"""Differentiable augmentation of the discriminators' inputs, for small datasets.

With a few hundred images a discriminator memorises the real set and its gradients stop
teaching the generator. DiffAugment (Zhao et al. 2020) shows D real and fake images through
the same family of random, differentiable transforms, so D cannot tell them apart by
memorised pixels and the generator still receives gradients through the transform. Each
image draws its own parameters; real and fake go through the same policy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def diff_augment(x: Tensor, policy: tuple[str, ...] | list[str],
                 generator: torch.Generator | None = None) -> Tensor:
    """Apply each named transform of `policy` to (N, C, H, W) images in [-1, 1]."""
    for name in policy:
        x = _TRANSFORMS[name](x, generator)
    return x


def _rand(x: Tensor, generator: torch.Generator | None, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=generator, device="cpu").to(x.device, x.dtype)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random brightness (+-0.5 in [-1, 1] units, as DiffAugment's +-0.25 on [0, 1]),
    saturation (x0..2) and contrast (x0.5..1.5) per image."""
    n = len(x)
    x = x + (_rand(x, generator, n, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, generator, n, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator, n, 1, 1, 1) + 0.5) + mean


def translation(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to `ratio` of its size, filling with zeros (mid-grey)."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, generator, n) * (2 * max_dy + 1)).long() - max_dy
    dx = (_rand(x, generator, n) * (2 * max_dx + 1)).long() - max_dx
    padded = F.pad(x, (max_dx, max_dx, max_dy, max_dy))
    rows = (torch.arange(h, device=x.device)[None, :] + max_dy - dy.to(x.device)[:, None])
    cols = (torch.arange(w, device=x.device)[None, :] + max_dx - dx.to(x.device)[:, None])
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    """Zero one random rectangle of `ratio` x the image size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand(x, generator, n) * (h + 1 - ch % 2)).long()
    cx = (_rand(x, generator, n) * (w + 1 - cw % 2)).long()
    ys = torch.arange(h, device=x.device)[None, :] - (cy.to(x.device)[:, None] - ch // 2)
    xs = torch.arange(w, device=x.device)[None, :] - (cx.to(x.device)[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}

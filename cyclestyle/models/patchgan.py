"""PatchGAN discriminator (Isola et al., 2017), optionally multi-scale (Wang et al., 2018).

Classifies overlapping patches as real or fake instead of the whole image: it only judges local
texture and style, which is what translation changes, with few parameters. Outputs raw logits;
the GAN loss decides how to squash them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from cyclestyle.models.layers import NORMS, check_choice, check_positive, make_norm
from cyclestyle.models.registry import register_discriminator

KERNEL = 4
PADDING = 1
MAX_MULT = 8  # widths stop doubling at 8 * base_channels, as in the reference


def layer_specs(n_layers: int) -> list[tuple[int, int]]:
    """(kernel, stride) of every conv: n_layers stride-2 convs, then two stride-1 convs."""
    return [(KERNEL, 2)] * n_layers + [(KERNEL, 1)] * 2


def receptive_field(n_layers: int) -> int:
    """Side in pixels of the input patch that one output logit sees (70 for n_layers=3).

    Each conv widens the field by (kernel - 1) input steps, where a step is the product of the
    strides before it.
    """
    field, step = 1, 1
    for kernel, stride in layer_specs(n_layers):
        field += (kernel - 1) * step
        step *= stride
    return field


def output_size(n_layers: int, size: int) -> int:
    """Side of the patch map for an input side of `size` pixels."""
    for kernel, stride in layer_specs(n_layers):
        size = (size + 2 * PADDING - kernel) // stride + 1
    return size


def _patch_net(in_channels, base_channels, n_layers, norm, use_spectral_norm) -> nn.Sequential:
    """One PatchGAN: conv-LReLU, then (conv-norm-LReLU) x n_layers, then conv to 1 channel."""
    wrap = add_spectral_norm if use_spectral_norm else (lambda module: module)
    widths = [in_channels] + [base_channels * min(2**i, MAX_MULT) for i in range(n_layers + 1)] + [1]
    layers: list[nn.Module] = []
    for i, (kernel, stride) in enumerate(layer_specs(n_layers)):
        first, last = i == 0, i == n_layers + 1
        normed = not (first or last) and norm != "none"
        # No bias before a norm: it would be subtracted straight away.
        conv = nn.Conv2d(widths[i], widths[i + 1], kernel, stride, PADDING, bias=not normed)
        layers.append(wrap(conv))
        if normed:
            layers.append(make_norm(norm, widths[i + 1]))
        if not last:
            layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


@register_discriminator("patchgan")
class PatchGANDiscriminator(nn.Module):
    """n_layers=3 gives the standard 70x70 PatchGAN.

    num_scales > 1: one PatchGAN per scale, with separate weights, the k-th seeing the input
    average-pooled k times by 2; forward then returns a list of patch maps (finest first).
    With num_scales=1 it returns a single (B, 1, H', W') tensor.
    spectral_norm=True wraps every conv in spectral normalisation (Miyato et al., 2018).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        spectral_norm: bool = False,
        num_scales: int = 1,
    ) -> None:
        super().__init__()
        for argument, value in (("base_channels", base_channels), ("n_layers", n_layers),
                                ("num_scales", num_scales)):
            check_positive(argument, value)
        check_choice("norm", norm, NORMS)
        self.n_layers = n_layers
        self.num_scales = num_scales
        self.scales = nn.ModuleList(
            _patch_net(in_channels, base_channels, n_layers, norm, spectral_norm)
            for _ in range(num_scales)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._check_size(x)
        patch_maps = []
        for scale, net in enumerate(self.scales):
            if scale > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)  # (B, C, H/2, W/2)
            patch_maps.append(net(x))  # (B, 1, H'', W'')
        return patch_maps[0] if self.num_scales == 1 else patch_maps

    def _check_size(self, x: torch.Tensor) -> None:
        """Fail clearly when the coarsest scale would have no patch left."""
        smallest = min(x.shape[-2:])
        for _ in range(self.num_scales - 1):
            smallest = (smallest - 1) // 2 + 1  # avg_pool2d(3, 2, padding 1)
        if output_size(self.n_layers, smallest) < 1:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is too small for patchgan with n_layers="
                f"{self.n_layers} and num_scales={self.num_scales}: the coarsest scale is "
                f"{smallest} px but needs at least {self.minimum_size()} px"
            )

    def minimum_size(self) -> int:
        """Smallest side, at the coarsest scale, that still gives a 1x1 patch map."""
        # Walk back from one output pixel: out = (in + 2p - k) // s + 1 >= m  <=>
        # in >= s * (m - 1) + k - 2p.
        size = 1
        for kernel, stride in reversed(layer_specs(self.n_layers)):
            size = max(1, stride * (size - 1) + kernel - 2 * PADDING)
        return size

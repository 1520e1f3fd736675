"""The ResNet generator of CUT and FastCUT (Park et al., 2020), taesungp/contrastive-unpaired-
translation's default: the CycleGAN ResNet with blurred (anti-aliased) down- and upsampling.

    c7s1-64, [c3s1-128, blur-down], [c3s1-256, blur-down], R256 x n_blocks,
    [blur-up, c3s1-128], [blur-up, c3s1-64], c7s1-3, tanh

Anti-aliased sampling (Zhang, 2019, "Making Convolutional Networks Shift-Invariant Again"):
downsampling is a stride-1 conv followed by a fixed [1 2 1] x [1 2 1] / 16 blur taken at stride 2;
upsampling is a fixed [1 3 3 1] x [1 3 3 1] / 16 transposed blur at stride 2 followed by a
stride-1 conv. The blur filters are constants, not weights: they are not in the state dict.
CUT's `--no_antialias` / `--no_antialias_up` (strided conv / transposed conv instead) are
`antialias_down=False` / `antialias_up=False`; with both off this is our `resnet`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclestyle.models.layers import (
    check_choice,
    check_positive,
    check_probability,
    crop_to,
    make_norm,
    pad_to_multiple,
)
from cyclestyle.models.registry import register_generator
from cyclestyle.models.resnet import ResnetBlock

CUT_NORMS = ("instance", "none")


def binomial_filter(taps: int) -> torch.Tensor:
    """The (taps, taps) outer product of a row of Pascal's triangle, normalised to sum 1."""
    row = [1.0]
    for _ in range(taps - 1):
        row = [a + b for a, b in zip([0.0, *row], [*row, 0.0])]
    kernel = torch.tensor(row)[:, None] * torch.tensor(row)[None, :]
    return kernel / kernel.sum()


class BlurDownsample(nn.Module):
    """Reflect-pad by 1, blur with [1 2 1]^2 / 16 per channel, keep every second pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        kernel = binomial_filter(3)[None, None].repeat(channels, 1, 1, 1)  # (C, 1, 3, 3)
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel, stride=2, groups=x.shape[1])  # (B, C, H/2, W/2)


class BlurUpsample(nn.Module):
    """Replicate-pad by 1, transposed blur with 4 x [1 3 3 1]^2 / 64 at stride 2, crop to 2H x 2W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        kernel = 4 * binomial_filter(4)[None, None].repeat(channels, 1, 1, 1)  # (C, 1, 4, 4)
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        x = F.conv_transpose2d(x, self.kernel, stride=2, padding=2, groups=x.shape[1])
        return x[:, :, 1:-1, 1:-1]  # (B, C, 2H, 2W)


@register_generator("cut_resnet")
class CutResnetGenerator(nn.Module):
    """CUT's ResNet generator; works on any H x W (pads to `stride` = 4, crops back).

    n_blocks=9 is CUT's resnet_9blocks. Convolutions keep their biases with InstanceNorm (as in
    CUT); with norm="none" CUT has none, which loads here as zero biases.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64,
                 n_blocks: int = 9, norm: str = "instance", antialias_down: bool = True,
                 antialias_up: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("base_channels", base_channels)
        check_positive("n_blocks", n_blocks)
        check_choice("norm", norm, CUT_NORMS)
        check_probability("dropout", dropout)
        self.stride = 4  # two 2x downsamplings
        c = base_channels

        def act(channels: int) -> list[nn.Module]:
            return [make_norm(norm, channels, affine=False), nn.ReLU()]

        def down(cin: int, cout: int) -> list[nn.Module]:
            if antialias_down:
                return [nn.Conv2d(cin, cout, 3, padding=1), *act(cout), BlurDownsample(cout)]
            return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), *act(cout)]

        def up(cin: int, cout: int) -> list[nn.Module]:
            if antialias_up:
                return [BlurUpsample(cin), nn.Conv2d(cin, cout, 3, padding=1), *act(cout)]
            return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                    *act(cout)]

        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c, 7, padding=3, padding_mode="reflect"), *act(c),
            *down(c, 2 * c), *down(2 * c, 4 * c),
            *[ResnetBlock(4 * c, norm, False, dropout) for _ in range(n_blocks)],
            *up(4 * c, 2 * c), *up(2 * c, c),
            nn.Conv2d(c, out_channels, 7, padding=3, padding_mode="reflect"),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_multiple(x, self.stride, min_size=2 * self.stride)  # (B, C_in, H', W')
        return crop_to(self.net(x), crop)  # (B, C_out, H, W)

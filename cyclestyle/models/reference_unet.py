"""The U-Net generator of pix2pix (Isola et al., 2017) as junyanz/pytorch-CycleGAN-and-pix2pix
builds it (`--netG unet_256`: 8 downsamplings, `unet_128`: 7), so its files load unchanged.

    C64 - C128 - C256 - C512 - C512 - C512 - C512 - C512    (encoder, 4x4 convs, stride 2)
    CD512 - CD1024 - CD1024 - C1024 - C1024 - C512 - C256 - C128   (decoder, skips concatenated)

Built recursively, one `UnetSkipBlock` per resolution, exactly as the reference nests its
`UnetSkipConnectionBlock`s: the state-dict keys (`model.model.1.model.3....`) are the reference's,
so `cyclestyle.models.reference` loads its files without renaming anything. With the defaults
(base_channels 64, BatchNorm) it has 54,413,955 parameters (the reference logs 54.414 M).

Convolutions followed by a BatchNorm (or no norm) have no bias, as in the reference; with
InstanceNorm they do. The reference's LeakyReLU runs in place, so its skip connections carry
LeakyReLU(x) rather than x; the ReLU that follows every concatenation makes the two equal
(ReLU(LeakyReLU(x)) = ReLU(x)), so the skips here carry x.

BatchNorm is the reference's default here (pix2pix). In eval mode it uses its running
statistics, which is what the reference computes with `--eval`; without `--eval` the reference's
test.py normalises with each batch's own statistics and keeps dropout on.
"""

from __future__ import annotations

import torch
from torch import nn

from cyclestyle.models.layers import (
    check_choice,
    check_positive,
    crop_to,
    make_norm,
    pad_to_multiple,
)
from cyclestyle.models.registry import register_generator

UNET_NORMS = ("batch", "instance", "none")
MIN_DOWNS = 5  # the reference's structure: four fixed outer levels plus the innermost one


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)  # affine, running statistics: the reference's "batch"
    return make_norm(norm, channels, affine=False)  # the reference's InstanceNorm has no affine


class UnetSkipBlock(nn.Module):
    """One resolution level: downsample, the inner levels, upsample; input and output
    concatenated along channels (except the outermost level, which returns the image)."""

    def __init__(self, outer_channels: int, inner_channels: int, in_channels: int | None = None,
                 inner: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        self.outermost = outermost
        bias = norm == "instance"  # the reference drops biases a BatchNorm would shift anyway
        in_channels = outer_channels if in_channels is None else in_channels
        down = nn.Conv2d(in_channels, inner_channels, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up = nn.ConvTranspose2d(2 * inner_channels, outer_channels, 4, stride=2, padding=1)
            layers = [down, inner, nn.ReLU(), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner_channels, outer_channels, 4, stride=2, padding=1,
                                    bias=bias)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, _norm(norm, outer_channels)]
        else:
            up = nn.ConvTranspose2d(2 * inner_channels, outer_channels, 4, stride=2, padding=1,
                                    bias=bias)
            layers = [nn.LeakyReLU(0.2), down, _norm(norm, inner_channels), inner, nn.ReLU(), up,
                      _norm(norm, outer_channels)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # (B, C_x + C_out, H, W)


@register_generator("reference_unet")
class ReferenceUnetGenerator(nn.Module):
    """pix2pix's U-Net; works on any H x W (pads to `stride` = 2**num_downs, crops back).

    num_downs=8 is the reference's unet_256 (a 256x256 image reaches 1x1 at the bottleneck),
    7 its unet_128. dropout=0.5 is the reference's `use_dropout` (pix2pix's default), applied in
    the num_downs - 5 middle levels as there.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64,
                 num_downs: int = 8, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("base_channels", base_channels)
        check_choice("norm", norm, UNET_NORMS)
        if not isinstance(num_downs, int) or num_downs < MIN_DOWNS:
            raise ValueError(f"num_downs={num_downs!r} is not valid; expected an integer >= "
                             f"{MIN_DOWNS} (8 = the reference's unet_256, 7 = unet_128)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} is not valid; expected a float in [0, 1)")
        self.stride = 2**num_downs
        c = base_channels
        block = UnetSkipBlock(8 * c, 8 * c, innermost=True, norm=norm)
        for _ in range(num_downs - MIN_DOWNS):
            block = UnetSkipBlock(8 * c, 8 * c, inner=block, norm=norm, dropout=dropout)
        for outer in (4 * c, 2 * c, c):
            block = UnetSkipBlock(outer, 2 * outer, inner=block, norm=norm)
        self.model = UnetSkipBlock(out_channels, c, in_channels, inner=block, outermost=True,
                                   norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_multiple(x, self.stride, min_size=self.stride)  # (B, C_in, H', W')
        return crop_to(self.model(x), crop)  # (B, C_out, H, W)

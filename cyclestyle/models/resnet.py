"""The reference CycleGAN ResNet generator (Johnson et al., 2016; Zhu et al., 2017).

    c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3, tanh

With the defaults it matches the reference implementation layer for layer: 11,378,179
parameters for n_blocks=9, base_channels=64 (InstanceNorm without affine parameters, convs
with biases).
"""

from __future__ import annotations

import torch
from torch import nn

from cyclestyle.models.layers import (
    NORMS,
    check_choice,
    check_positive,
    check_probability,
    crop_to,
    make_norm,
    make_upsample,
    pad_to_multiple,
)
from cyclestyle.models.registry import register_generator


class ResnetBlock(nn.Module):
    """x + norm(conv(relu(norm(conv(x))))), 3x3 convs with reflection padding."""

    def __init__(self, channels: int, norm: str, affine_norm: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            make_norm(norm, channels, affine_norm),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            make_norm(norm, channels, affine_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # (B, C, H, W)


@register_generator("resnet")
class ResnetGenerator(nn.Module):
    """ResNet generator; works on any H x W (pads to `stride` = 4, crops back).

    n_blocks=9 is the reference for 256x256 images, 6 for 128x128. affine_norm=False is the
    reference (and its parameter count); True adds a learned scale and shift per norm.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        affine_norm: bool = False,
        upsample: str = "transposed",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive("base_channels", base_channels)
        check_positive("n_blocks", n_blocks)
        check_choice("norm", norm, NORMS)
        check_probability("dropout", dropout)
        self.stride = 4  # two stride-2 downsamplings
        c = base_channels

        def act(channels: int) -> list[nn.Module]:
            return [make_norm(norm, channels, affine_norm), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c, 7, padding=3, padding_mode="reflect"), *act(c),  # c7s1-64
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), *act(2 * c),  # d128
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), *act(4 * c),  # d256
            *[ResnetBlock(4 * c, norm, affine_norm, dropout) for _ in range(n_blocks)],  # R256
            make_upsample(upsample, 4 * c, 2 * c), *act(2 * c),  # u128
            make_upsample(upsample, 2 * c, c), *act(c),  # u64
            nn.Conv2d(c, out_channels, 7, padding=3, padding_mode="reflect"),  # c7s1-3
            nn.Tanh(),
        )

    @torch.jit.unused
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features, fine to coarse, for patch-wise contrastive losses (CUT): the padded
        input, the c7s1 stem, both downsamplings and the middle of the residual trunk."""
        x, _ = pad_to_multiple(x, self.stride, min_size=2 * self.stride)
        blocks = sum(isinstance(m, ResnetBlock) for m in self.net)
        # net: conv, norm, act (2) | conv, norm, act (5) | conv, norm, act (8) | blocks from 9
        middle = 8 + max(1, blocks // 2)
        features, h = [x], x
        for index, layer in enumerate(self.net[: middle + 1]):
            h = layer(h)
            if index in (2, 5, 8, middle):
                features.append(h)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pad to at least 2 * stride so the 1/4-resolution trunk keeps >= 2x2 pixels.
        x, crop = pad_to_multiple(x, self.stride, min_size=2 * self.stride)  # (B, C_in, H', W')
        return crop_to(self.net(x), crop)  # (B, C_out, H, W)

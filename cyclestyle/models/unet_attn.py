"""U-Net generator with self-attention at coarse resolutions (the default generator).

    stem 7x7 -> [ResBlocks (+attn) -> skip, down] x depth -> ResBlock, (attn), ResBlock
             -> [up, concat skip, ResBlocks (+attn)] x depth -> norm, act, 7x7 -> tanh

Skip connections carry fine detail (edges, texture placement) straight to the decoder, so the
bottleneck only has to decide the style; attention lets distant regions agree on it.
"""

from __future__ import annotations

import torch
from torch import nn

from cyclestyle.models.attention import SelfAttention2d
from cyclestyle.models.layers import (
    NORMS,
    UPSAMPLES,
    check_choice,
    check_positive,
    check_probability,
    crop_to,
    make_norm,
    make_upsample,
    pad_to_multiple,
)
from cyclestyle.models.registry import register_generator


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    # Reflect padding: zero borders would be a visible frame in a translated image.
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias, padding_mode="reflect")


class ResBlock(nn.Module):
    """Pre-activation residual block: skip(x) + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            make_norm(norm, in_channels),
            nn.SiLU(),
            # The next norm would subtract a per-channel bias right away, so don't learn one.
            conv3x3(in_channels, out_channels, bias=norm == "none"),
            make_norm(norm, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            conv3x3(out_channels, out_channels),
        )
        same = in_channels == out_channels
        self.skip = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)  # (B, C_out, H, W)


# |x| above this maps to atanh(0.999) = 3.8 in the input skip: 8-bit white (1.0) stays within
# a quarter of a level of 1 after tanh, and no input makes the sum infinite.
INPUT_SKIP_LIMIT = 0.999


@register_generator("unet_attn")
class UNetAttnGenerator(nn.Module):
    """U-Net with self-attention; works on any H x W (pads to `stride`, crops back).

    Defaults, chosen for 256x256 CycleGAN training on one GPU:
    - depth=4: bottleneck at 1/16 (16x16 for 256 px), enough context for global style while
      keeping the pad-to-stride small. Stride is 2**depth.
    - channel_mults=(1, 2, 4, 4): widths 64-128-256-256, capped at 256 like the reference
      ResNet generator's trunk; an 8x level (512 channels) would quadruple the coarse convs.
    - num_res_blocks=1: 12.9M parameters and 114 GFLOPs forward at 256x256, close to ResNet-9
      (11.4M, 99 GFLOPs).
    - attention_resolutions=(8, 16): attention is quadratic in pixels, so only at 1/8 and the
      1/16 bottleneck (1024 and 256 tokens at 256 px); at finer levels convs already see enough.
    - attention_heads=4: 64-channel heads at the 256-channel levels.
    - norm="instance" (affine), as in CycleGAN: per-image statistics suit style transfer.
      The same norm precedes each attention layer; norm="none" removes it there too.
    - upsample="resize_conv": no checkerboard artifacts (see layers.make_upsample).
    - input_skip=False: the output is tanh(head(h)), as in the reference generators. With True
      it is tanh(head(h) + atanh(x)): the input enters the head's pre-activation, so the net
      only learns the change. The head's InstanceNorm removes each image's channel means, so a
      direct net must rebuild absolute colour and brightness from its skips; with the input skip
      they come for free and training starts near the identity (needs in == out channels).

    Inputs at most `stride` pixels on a side are padded to 2 * stride so the bottleneck keeps
    at least 2x2 pixels (InstanceNorm needs more than one); even 1x1 images run.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        channel_mults: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (8, 16),
        attention_heads: int = 4,
        norm: str = "instance",
        upsample: str = "resize_conv",
        dropout: float = 0.0,
        input_skip: bool = False,
    ) -> None:
        super().__init__()
        for argument, value in (("in_channels", in_channels), ("out_channels", out_channels),
                                ("base_channels", base_channels), ("depth", depth),
                                ("num_res_blocks", num_res_blocks), ("attention_heads", attention_heads)):
            check_positive(argument, value)
        _check_levels(depth, channel_mults, attention_resolutions)
        check_choice("norm", norm, NORMS)
        check_choice("upsample", upsample, UPSAMPLES)
        check_probability("dropout", dropout)
        if input_skip and in_channels != out_channels:
            raise ValueError(f"input_skip=True needs in_channels == out_channels, got "
                             f"{in_channels} and {out_channels}")
        self.input_skip = input_skip
        self.input_skip_limit = INPUT_SKIP_LIMIT  # an attribute: TorchScript reads no globals
        self.stride = 2**depth
        widths = [base_channels * m for m in channel_mults]  # channels at 1, 1/2, ..., 1/2**(d-1)
        attends = [2**i in attention_resolutions for i in range(depth + 1)]  # per level + bottleneck
        level = dict(num_blocks=num_res_blocks, norm=norm, dropout=dropout, heads=attention_heads)

        self.stem = nn.Conv2d(in_channels, widths[0], 7, padding=3, padding_mode="reflect")
        self.down_blocks, self.downsamples = _encoder(widths, attends, level)
        self.middle = _middle(widths[-1], attends[depth], level)
        self.upsamples, self.up_blocks = _decoder(widths, attends, upsample, level)
        self.head = nn.Sequential(
            make_norm(norm, widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], out_channels, 7, padding=3, padding_mode="reflect"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = x  # (B, C_in, H, W) in [-1, 1]
        x, crop = pad_to_multiple(x, self.stride, min_size=2 * self.stride)  # (B, C_in, H', W')
        _, skips, h = self._encoder(x)
        for upsample, blocks in zip(self.upsamples, self.up_blocks):
            h = upsample(h)  # (B, w_i, H'/2**i, W'/2**i)
            h = blocks(torch.cat([h, skips.pop()], dim=1))  # concat: (B, 2 w_i, ...) -> (B, w_i, ...)
        out = crop_to(self.head(h), crop)  # (B, C_out, H, W), pre-activation
        if self.input_skip:
            # atanh of the input, kept finite at +-1: tanh(0 + atanh(x)) == x.
            out = out + torch.atanh(source.clamp(-self.input_skip_limit, self.input_skip_limit))
        return torch.tanh(out)


    @torch.jit.unused
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features, fine to coarse, for patch-wise contrastive losses (CUT): the padded
        input, the stem, each level's output (the skips) and the bottleneck."""
        x, _ = pad_to_multiple(x, self.stride, min_size=2 * self.stride)
        stem, skips, bottleneck = self._encoder(x)
        return [x, stem, *skips, bottleneck]

    def _encoder(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(stem output, skips, bottleneck) of a padded input."""
        stem = h = self.stem(x)  # (B, w0, H', W')
        skips = []
        for blocks, downsample in zip(self.down_blocks, self.downsamples):
            h = blocks(h)  # (B, w_i, H'/2**i, W'/2**i)
            skips.append(h)
            h = downsample(h)  # (B, w_i, H'/2**(i+1), W'/2**(i+1))
        return stem, skips, self.middle(h)  # bottleneck: (B, w_last, H'/stride, W'/stride)


def _level(in_channels: int, width: int, attend: bool, level: dict) -> nn.Sequential:
    """The ResBlocks of one resolution, then attention if this resolution is listed."""
    norm, dropout = level["norm"], level["dropout"]
    blocks = [ResBlock(in_channels if i == 0 else width, width, norm, dropout)
              for i in range(level["num_blocks"])]
    if attend:
        blocks.append(SelfAttention2d(width, level["heads"], norm))
    return nn.Sequential(*blocks)


def _encoder(widths: list[int], attends: list[bool], level: dict) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Per level: blocks (their output is the skip), then a stride-2 conv."""
    blocks, downsamples = nn.ModuleList(), nn.ModuleList()
    previous = widths[0]
    for width, attend in zip(widths, attends):
        blocks.append(_level(previous, width, attend, level))
        downsamples.append(conv3x3(width, width, stride=2))
        previous = width
    return blocks, downsamples


def _middle(width: int, attend: bool, level: dict) -> nn.Sequential:
    """Bottleneck at 1/stride: ResBlock, attention (if listed), ResBlock."""
    norm, dropout = level["norm"], level["dropout"]
    attention = SelfAttention2d(width, level["heads"], norm) if attend else nn.Identity()
    return nn.Sequential(ResBlock(width, width, norm, dropout), attention,
                         ResBlock(width, width, norm, dropout))


def _decoder(widths: list[int], attends: list[bool], upsample: str,
             level: dict) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Per level, coarsest first: upsample, then blocks over [upsampled, skip] (2x channels)."""
    upsamples, blocks = nn.ModuleList(), nn.ModuleList()
    previous = widths[-1]
    for width, attend in reversed(list(zip(widths, attends))):
        upsamples.append(make_upsample(upsample, previous, width))
        blocks.append(_level(2 * width, width, attend, level))
        previous = width
    return upsamples, blocks


def _check_levels(depth, channel_mults, attention_resolutions) -> None:
    """One channel multiplier per level; attention only at factors the U-Net actually has."""
    if len(channel_mults) != depth:
        raise ValueError(
            f"channel_mults={list(channel_mults)} has {len(channel_mults)} entries but depth={depth}; "
            "give one multiplier per level"
        )
    if not all(isinstance(m, int) and m >= 1 for m in channel_mults):
        raise ValueError(f"channel_mults={list(channel_mults)} must hold integers >= 1")
    valid = [2**i for i in range(depth + 1)]
    bad = [r for r in attention_resolutions if r not in valid]
    if bad:
        raise ValueError(
            f"attention_resolutions={list(attention_resolutions)}: {bad} are not downsampling "
            f"factors of this U-Net; with depth={depth} choose from {valid}"
        )

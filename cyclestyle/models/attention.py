"""Multi-head self-attention over the pixels of a feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclestyle.models.layers import make_norm


class SelfAttention2d(nn.Module):
    """x + proj(attention(norm(x))), every pixel attending to every other pixel.

    Convolutions only see a local window; attention lets distant regions (sky and water, two
    eyes) agree on a style. Pre-norm keeps the attention logits in a sane range whatever the
    scale of the residual stream.
    """

    def __init__(self, channels: int, num_heads: int = 1, norm: str = "group") -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"attention_heads={num_heads} must divide the {channels} channels it attends over"
            )
        self.num_heads = num_heads
        self.norm = make_norm(norm, channels)
        # No bias: a key bias adds q.b_k to every logit of a query, which softmax ignores, so it
        # would be a parameter that never learns.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.proj = nn.Conv2d(channels, channels, 1)
        # Zero-initialised output: the block starts as the identity, so adding attention to a
        # network does not perturb its initial behaviour; the projection still gets gradients
        # (they depend on the attention output, not on its own weights) and grows from there.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        head_size = channels // self.num_heads
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        # SDPA's fused kernels (flash on CPU, flash/memory-efficient on CUDA) need each head's
        # features contiguous. Transposed views of an NCHW tensor send it to the math path,
        # which materialises the T x T weights: 3-6x slower and +2 GiB per head at 128x128
        # tokens. For channels_last input these are views; for NCHW, one copy of qkv.
        tokens = qkv.permute(0, 2, 3, 1).reshape(batch, height * width, 3, self.num_heads,
                                                 head_size)
        q, k, v = tokens.contiguous().permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hs)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs), scale 1/sqrt(hs)
        out = out.transpose(1, 2).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        # `out` is laid out channels_last. Hand back the input's layout: channels_last leaking
        # into InstanceNorm on CPU gives wrong input gradients at batch 1 (torch 2.14).
        if x.is_contiguous():
            out = out.contiguous()
        return x + self.proj(out)

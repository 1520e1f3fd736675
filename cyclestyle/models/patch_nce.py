"""CUT's patch projection heads (Park et al., 2020, "Contrastive Learning for Unpaired
Image-to-Image Translation"): one small MLP per encoder layer of the generator.

For each layer the same random positions are read from the features of a source image and of
its translation; each position's feature vector goes through the layer's MLP and is scaled to
unit length. The PatchNCE loss (`cyclestyle.train.losses.patch_nce_loss`) then asks each
translated patch to pick its own source patch among the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# CUT's defaults: 256 sampled positions per layer, 256-wide two-layer MLPs.
PATCHES = 256
HEAD_CHANNELS = 256


def encoder_channels(generator: nn.Module, in_channels: int = 3) -> list[int]:
    """Channels of each feature map `generator.encode` returns, read off a tiny dry run."""
    if not callable(getattr(generator, "encode", None)):
        raise ValueError(f"generator {type(generator).__name__} has no encode(); the contrastive "
                         "objectives (cut, fastcut) need one: use unet_attn or resnet")
    side = 2 * getattr(generator, "stride", 1)
    parameter = next(generator.parameters())
    with torch.no_grad():
        probe = torch.zeros(1, in_channels, side, side, device=parameter.device)
        return [f.shape[1] for f in generator.encode(probe)]


class PatchProjection(nn.Module):
    """Per encoder layer: sample positions, project with a 2-layer MLP, normalise to length 1."""

    def __init__(self, channels: list[int], out_channels: int = HEAD_CHANNELS) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, out_channels), nn.ReLU(), nn.Linear(out_channels, out_channels))
            for c in channels)

    def forward(self, features: list[torch.Tensor], patches: int = PATCHES,
                positions: list[torch.Tensor] | None = None,
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(projected, positions): projected[i] is (B, P, out_channels), unit length along the
        last axis. `positions` from an earlier call read the same places (source and
        translation); without them each layer draws min(patches, H*W) distinct positions,
        shared by the images of the batch, from torch's global generator."""
        if len(features) != len(self.mlps):
            raise ValueError(f"got {len(features)} feature maps for {len(self.mlps)} heads")
        projected, drawn = [], []
        for i, (feature, mlp) in enumerate(zip(features, self.mlps)):
            flat = feature.flatten(2).transpose(1, 2)  # (B, H*W, C)
            where = positions[i] if positions is not None else torch.randperm(
                flat.shape[1], device=flat.device)[:patches]
            picked = mlp(flat[:, where])  # (B, P, out)
            projected.append(F.normalize(picked.float(), dim=-1))  # float: logits / 0.07 next
            drawn.append(where)
        return projected, drawn

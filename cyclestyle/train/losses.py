"""CycleGAN losses: adversarial, cycle, identity and VGG perceptual terms, plus their weights.

Every loss returns a scalar and never calls .backward(): the trainer combines them with the
lambdas of `LossConfig` and owns the optimisation steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclestyle.models.vgg import VGGFeatures
from cyclestyle.train.config import GAN_MODES, LossConfig

__all__ = ["GAN_MODES", "GANLoss", "LossConfig", "PerceptualLoss", "cycle_loss", "identity_loss",
           "patch_nce_loss"]

PERCEPTUAL_DISTANCES = ("l1", "l2")


class GANLoss(nn.Module):
    """Adversarial loss for one or several (multi-scale) discriminator outputs.

    lsgan: MSE to 1 (real) / 0 (fake), as in CycleGAN. vanilla: BCE with logits.
    hinge: discriminator relu(1 - x) for real, relu(1 + x) for fake; generator -mean(x).
    A list of predictions (one per scale) gives the mean of the per-scale losses.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss mode {mode!r}; valid modes: {list(GAN_MODES)}")
        self.mode = mode

    def forward(
        self,
        prediction: Tensor | list[Tensor],
        target_is_real: bool,
        for_discriminator: bool = True,
    ) -> Tensor:
        predictions = list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]
        if not predictions:
            raise ValueError("GANLoss got an empty list of discriminator predictions")
        losses = [self._single(p, target_is_real, for_discriminator) for p in predictions]
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()

    def _single(self, x: Tensor, target_is_real: bool, for_discriminator: bool) -> Tensor:
        if self.mode == "lsgan":
            return F.mse_loss(x, torch.full_like(x, float(target_is_real)))
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(x, torch.full_like(x, float(target_is_real)))
        if for_discriminator:
            return F.relu(1 - x).mean() if target_is_real else F.relu(1 + x).mean()
        if not target_is_real:
            raise ValueError(
                "hinge generator loss is -mean(D(fake)); call it with target_is_real=True"
            )
        return -x.mean()

    def says_real(self, x: Tensor) -> Tensor:
        """Where a discriminator output calls its patch real: above 0.5 for lsgan's 0/1
        targets, a positive logit or score for vanilla and hinge."""
        return x > (0.5 if self.mode == "lsgan" else 0.0)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def patch_nce_loss(queries: Sequence[Tensor], keys: Sequence[Tensor],
                   temperature: float = 0.07) -> Tensor:
    """PatchNCE (Park et al. 2020), averaged over layers: each query patch (B, P, D) must pick
    its own key patch, the same position in the source image, among the P positions of that
    image: cross-entropy over q_i . k_j / temperature with the positive at j = i. The keys
    carry no gradient (they are the targets). Vectors are expected at unit length."""
    losses = []
    for q, k in zip(queries, keys, strict=True):
        logits = torch.bmm(q.float(), k.detach().float().transpose(1, 2)) / temperature  # (B, P, P)
        batch, patches = logits.shape[:2]
        target = torch.arange(patches, device=logits.device).repeat(batch)
        losses.append(F.cross_entropy(logits.flatten(0, 1), target))
    return torch.stack(losses).mean()


def cycle_loss(reconstructed: Tensor, real: Tensor) -> Tensor:
    """L1 cycle-consistency: ||G_BA(G_AB(a)) - a||_1 (mean over elements)."""
    return F.l1_loss(reconstructed, real)


def identity_loss(same: Tensor, real: Tensor) -> Tensor:
    """L1 identity: ||G_AB(b) - b||_1, keeps colours when the input is already in the target domain."""
    return F.l1_loss(same, real)


class PerceptualLoss(nn.Module):
    """sum over layers of weight * mean distance(phi(x), phi(y)); y is the (detached) target.

    x and y go through VGG in one batched forward. `layer_weights` defaults to 1.0 for every layer
    `vgg` computes; its keys must be among them.
    """

    def __init__(
        self, vgg: VGGFeatures, layer_weights: dict[str, float] | None = None, distance: str = "l1"
    ) -> None:
        super().__init__()
        if distance not in PERCEPTUAL_DISTANCES:
            raise ValueError(
                f"unknown perceptual distance {distance!r}; valid: {list(PERCEPTUAL_DISTANCES)}"
            )
        if layer_weights is None:
            layer_weights = dict.fromkeys(vgg.layer_names, 1.0)
        missing = [layer for layer in layer_weights if layer not in vgg.layer_names]
        if missing:
            raise ValueError(
                f"perceptual layers {missing} are not computed by the VGG features module, which "
                f"returns {list(vgg.layer_names)}"
            )
        negative = {k: w for k, w in layer_weights.items() if w < 0}
        if negative:
            raise ValueError(f"perceptual layer weights must be >= 0, got {negative}")
        self.vgg = vgg
        self.layer_weights = dict(layer_weights)
        self.distance = distance

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.many([x], y)[0]

    def many(self, xs: Sequence[Tensor], y: Tensor) -> list[Tensor]:
        """The loss of each x in `xs` against the same target y, with ONE VGG forward for all
        (the trainer's cycle-perceptual and content terms share their target)."""
        for x in xs:
            if x.shape != y.shape:
                raise ValueError(
                    f"PerceptualLoss needs inputs of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
                )
        n = y.shape[0]
        features = self.vgg(torch.cat([*xs, y.detach()]))  # ((len(xs) + 1) * N, C, H, W) per layer
        dist = F.l1_loss if self.distance == "l1" else F.mse_loss
        totals = [y.new_zeros(()) for _ in xs]
        for layer, weight in self.layer_weights.items():
            phi_y = features[layer][-n:].detach()
            for i in range(len(xs)):
                totals[i] = totals[i] + weight * dist(features[layer][i * n:(i + 1) * n], phi_y)
        return totals

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, distance={self.distance!r}"

"""Building blocks shared by the networks: norm factory, up-sampling, pad-to-stride, safety checks."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cyclestyle.models.norm_stats import active_pass
from cyclestyle.options import invalid

NORMS = ("instance", "group", "none")
UPSAMPLES = ("resize_conv", "transposed")
MAX_GROUPS = 32  # GroupNorm's usual group count (Wu & He, 2018)


def check_choice(argument: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming `argument` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"{argument}={value!r} is not valid; choose one of {list(choices)}")


def check_positive(argument: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument}={value!r} is not valid; expected an integer >= 1")


def check_probability(argument: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{argument}={value!r} is not valid; expected a float in [0, 1)")


def group_count(channels: int) -> int:
    """Largest divisor of `channels` up to 32 that still leaves >= 2 channels per group.

    With one channel per group GroupNorm is just InstanceNorm, so we keep groups of at least two
    whenever the channel count allows it (64 -> 32 groups of 2, 8 -> 4 groups of 2, 3 -> 1 group).
    """
    limit = max(1, min(MAX_GROUPS, channels // 2))
    return next(g for g in range(limit, 0, -1) if channels % g == 0)


def make_norm(norm: str, channels: int, affine: bool = True) -> nn.Module:
    """Normalization over (H, W) per sample: "instance", "group" or "none".

    No BatchNorm: CycleGAN trains at batch size 1, where batch statistics are per-image anyway
    and differ between training and evaluation. Both norms are the torch ones with flat feature
    maps kept out of the backward pass (see `stop_flat_gradient`).
    """
    check_choice("norm", norm, NORMS)
    if norm == "instance":
        return InstanceNorm2d(channels, affine=affine)
    if norm == "group":
        return GroupNorm(group_count(channels), channels, affine=affine)
    return nn.Identity()


# A map is flat when its values span less than this fraction of sqrt(eps): normalised, they span
# less than 0.1, rounding noise included. Real image features span orders of magnitude more; a
# solid-colour image's span exactly 0 in every layer. (A span, not a variance: one min/max pass
# costs ~2% of the norm's own forward and backward, torch's var over (H, W) ~140%.)
FLAT_SPAN = 0.1


class _MaskGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `keep` (broadcast, (B, C, 1, 1))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(keep)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def stop_flat_gradient(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """`x` (B, C, H, W) unchanged, but no gradient flows back through a flat group of channels.

    Why: normalising a map of variance v multiplies the gradient by 1/sqrt(v + eps), which is
    1/sqrt(1e-5) = 316 for a constant map. A solid-colour image (or a 1x1 one, upscaled) stays
    exactly constant through every reflect-padded conv, nearest upsample and attention layer of
    a generator, so each of its norms multiplies by 316 again: 14 norms in unet_attn, twice per
    cycle, overflow float32 (316^16 > 3e38) and the backward turns inf into NaN, while the
    forward and the loss stay finite. The forward is unchanged (a flat map normalises to the
    norm's bias), and the norm's own weight and bias still get their gradients.
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x  # inference: no cost
    batch, channels = x.shape[:2]
    with torch.no_grad():
        maps = x.detach().reshape(batch, groups, -1)
        span = maps.amax(-1).float() - maps.amin(-1).float()  # (B, G); aminmax is 20x slower
        keep = (span >= FLAT_SPAN * eps**0.5).to(x.dtype)
        keep = keep.repeat_interleave(channels // groups, dim=1)[..., None, None]  # (B, C, 1, 1)
    return _MaskGradient.apply(x, keep)


class InstanceNorm2d(nn.InstanceNorm2d):
    """torch's InstanceNorm2d; a constant map passes no gradient back (`stop_flat_gradient`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # exported models only run forward
            supplied = active_pass()
            if supplied is not None:  # statistics from elsewhere (cyclestyle.models.norm_stats)
                return supplied.apply(self, x, self.num_features)
            x = self._stop_flat(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    @torch.jit.unused
    def _stop_flat(self, x: torch.Tensor) -> torch.Tensor:
        return stop_flat_gradient(x, self.num_features, self.eps)


class GroupNorm(nn.GroupNorm):
    """torch's GroupNorm; a constant group passes no gradient back (`stop_flat_gradient`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            supplied = active_pass()
            if supplied is not None:
                return supplied.apply(self, x, self.num_groups)
            x = self._stop_flat(x)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    @torch.jit.unused
    def _stop_flat(self, x: torch.Tensor) -> torch.Tensor:
        return stop_flat_gradient(x, self.num_groups, self.eps)


def make_upsample(mode: str, in_channels: int, out_channels: int) -> nn.Module:
    """Double H and W while mapping in_channels -> out_channels.

    "resize_conv": nearest-neighbour resize then a 3x3 conv; every output pixel sees the same
    number of kernel taps, so it avoids the checkerboard artifacts of strided transposed convs
    (Odena et al., 2016). "transposed": the reference CycleGAN's ConvTranspose2d(k=3, s=2).
    Both have the same parameter count.
    """
    check_choice("upsample", mode, UPSAMPLES)
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect"),
    )


class Crop(NamedTuple):
    """Where the original image sits inside a padded one."""

    top: int
    left: int
    height: int
    width: int


def _split(total: int) -> tuple[int, int]:
    """Split padding between both sides so the image stays centred."""
    return total // 2, total - total // 2


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 1) -> tuple[torch.Tensor, Crop]:
    """Pad (B, C, H, W) so H and W are multiples of `multiple` and at least `min_size`.

    Reflect padding keeps image statistics at the border; it needs each pad < the side it
    mirrors, so tiny images (down to 1x1) fall back to replicate padding.
    """
    height, width = x.shape[-2:]
    target_h = max(math.ceil(height / multiple) * multiple, min_size)
    target_w = max(math.ceil(width / multiple) * multiple, min_size)
    top, bottom = _split(target_h - height)
    left, right = _split(target_w - width)
    crop = Crop(top, left, height, width)
    if target_h == height and target_w == width:
        return x, crop
    fits = max(top, bottom) < height and max(left, right) < width
    padded = F.pad(x, (left, right, top, bottom), mode="reflect" if fits else "replicate")
    return padded, crop


def crop_to(x: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Undo pad_to_multiple: cut (B, C, H', W') back to the original (B, C, H, W)."""
    return x[..., crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]


def instance_norms_as_group_norms(model: nn.Module) -> nn.Module:
    """Replace each InstanceNorm2d by the same normalisation as a GroupNorm with one group per
    channel, in place (same parameters, same state-dict keys).

    Why: on CPU, InstanceNorm2d copies channels_last tensors to contiguous and back, and at batch
    1 its channels_last input gradients are wrong in torch 2.14.1; GroupNorm works in channels_last
    directly, and its gradients match the contiguous InstanceNorm's to 1e-5 relative (checked by
    tests/test_models.py for resnet and unet_attn at batch 1 and 4).
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.InstanceNorm2d) and not child.track_running_stats:
                group = GroupNorm(child.num_features, child.num_features, eps=child.eps,
                                  affine=child.affine)
                if child.affine:
                    group.load_state_dict(child.state_dict())
                    group.to(child.weight.device)
                setattr(parent, name, group.train(child.training))
    return model


def channels_last_is_safe(model: nn.Module, device: torch.device | str, batch_size: int) -> bool:
    """Whether `model` may run in channels_last memory format.

    Reported for torch 2.14.1: on CPU, channels_last + InstanceNorm at batch size 1 gives wrong
    input gradients. The trainer asks this before converting; the models themselves never use
    channels_last internally.
    """
    on_cpu = torch.device(device).type == "cpu"
    has_instance_norm = any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in model.modules())
    return not (on_cpu and has_instance_norm and batch_size == 1)


def statistics_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of `model` whose statistics `norm_stats.norm_statistics` can supply."""
    return [m for m in model.modules() if isinstance(m, (InstanceNorm2d, GroupNorm))]


def is_per_input_norm(module: nn.Module) -> bool:
    """A norm that normalises each input with that input's own statistics (torch's or ours)."""
    return isinstance(module, nn.GroupNorm) or (
        isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats)


def check_statistics_supported(model: nn.Module) -> None:
    """Refuse a network whose per-input norms are torch's own classes: under
    `norm_stats.norm_statistics` they would silently keep computing their own statistics."""
    for name, module in model.named_modules():
        if is_per_input_norm(module) and not isinstance(module, (InstanceNorm2d, GroupNorm)):
            raise invalid(name, type(module).__name__, "torch's own norm class cannot be given "
                          "statistics", "build norms with cyclestyle.models.layers.make_norm")

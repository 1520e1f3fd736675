"""Gatys et al. (2015) neural style: optimise the pixels of one image against a frozen VGG.

    image* = argmin  content_weight * sum_l Lc_l + style_weight * sum_l Ls_l + tv_weight * TV

Normalisation (chosen so that one set of weights works for any VGG weights file and layer):

* Gram matrix of a layer with features F (C x HW): G = F F^T / (C H W), as in the PyTorch
  tutorial and jcjohnson's neural-style (`models.vgg.gram_matrix`, shared with the style
  metrics); it does not depend on image size, so style and content images may differ in size
  and aspect ratio.
* Style loss of a layer: ||G(x) - G_target||^2 / ||G_target||^2 (relative squared error).
  Several styles blend by weight: G_target = sum_k w_k G(style_k), weights summing to 1.
* Content loss of a layer: ||F(x) - F(content)||^2 / ||F(content)||^2.
* TV: mean squared difference of horizontally and vertically adjacent pixels (in [-1, 1]).

The classic recipes scale features by the VGG's input range (Caffe 0-255 versus ImageNet
mean/std), so their weights only suit one weights file; relative errors do not.

Speed: targets are computed once per stage; VGG runs only to the deepest layer needed, in
channels_last layout (oneDNN's native format; about 1.5-2x faster on CPU than NCHW); each style
layer's loss and its gradient cost one matmul each (`_StyleLoss`), against autograd's three.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclestyle.gatys.color import match_color, transfer_luminance
from cyclestyle.gatys.config import GatysConfig, min_image_side
from cyclestyle.models.vgg import VGGFeatures, gram_matrix
from cyclestyle.options import ConfigError, check, invalid
from cyclestyle.runtime import resolve_precision

__all__ = ["GatysLoss", "blend_weights", "finish", "initial_image", "load_vgg", "optimise",
           "resize_longest", "total_variation", "transfer"]

class _StyleLoss(torch.autograd.Function):
    """||F F^T / n - T||^2 * scale for one image's features, with a hand-written gradient.

    d/dF = 4 scale / n * (G - T) F, since G - T is symmetric: one matmul backward, where
    autograd through mm(F, F^T) needs two plus an add. channels_last features (C, HW) with
    strides (1, C) are used in place (BLAS transposes), and the gradient keeps that layout.
    """

    @staticmethod
    def forward(ctx, features: Tensor, target: Tensor, scale: float) -> Tensor:
        _, c, h, w = features.shape
        flat = features.reshape(c, h * w)
        n = c * h * w
        diff = torch.mm(flat, flat.t()).div_(n).sub_(target)
        ctx.save_for_backward(flat, diff)
        ctx.coefficient = 4 * scale / n
        ctx.shape = features.shape
        return diff.square().sum() * scale

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        flat, diff = ctx.saved_tensors
        coefficient = grad_output * ctx.coefficient
        if flat.stride(0) == 1:  # channels_last: build (HW, C) and view it back transposed
            grad = torch.mm(flat.t(), diff).mul_(coefficient).t()
        else:
            grad = torch.mm(diff, flat).mul_(coefficient)
        return grad.view(ctx.shape), None, None


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference of neighbouring pixels, horizontally plus vertically."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.square().mean() + dy.square().mean()


class GatysLoss(nn.Module):
    """Content + style + TV objective with fixed targets, computed once at construction.

    `styles` may have any sizes; `style_blend` weights them (normalised to sum to 1; styles
    with weight 0 are skipped). forward(image) returns (total, {"content", "style", "tv"}): the
    parts, detached and already weighted, sum to the total. `config.precision` "auto" is
    resolved for the content's device (`runtime.resolve_precision`).
    """

    def __init__(self, vgg: VGGFeatures, content: Tensor, styles: Sequence[Tensor],
                 config: GatysConfig, style_blend: Sequence[float] | None = None) -> None:
        super().__init__()
        self.vgg, self.config = vgg, config
        self.precision = resolve_precision(config.precision, content.device)[0]
        blend = blend_weights(len(styles), style_blend)
        layer_weights = config.layer_weights
        with torch.no_grad():
            content_feats = self._features(content)
            self.content_targets = {
                name: content_feats[name].detach().clone() for name in config.content_layers}
            grams = {name: 0 for name in config.style_layers}
            for style, weight in zip(styles, blend):
                if weight == 0:
                    continue
                feats = self._features(style)
                for name in config.style_layers:
                    grams[name] = grams[name] + weight * gram_matrix(feats[name].float())[0]
        self.style_targets = grams
        # Relative errors: divide by the target's squared norm (see the module docstring).
        self.content_scales = {
            name: config.content_weight * layer_weights.get(name, 1.0)
            / max(t.float().square().sum().item(), 1e-12)
            for name, t in self.content_targets.items()}
        self.style_scales = {
            name: config.style_weight * layer_weights.get(name, 1.0)
            / max(g.square().sum().item(), 1e-12) for name, g in grams.items()}

    def _features(self, image: Tensor) -> dict[str, Tensor]:
        image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(image.device.type, dtype=_AUTOCAST[self.precision],
                            enabled=self.precision != "fp32"):
            return self.vgg(image)

    def forward(self, image: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        feats = self._features(image)
        content = sum(
            (feats[name].float() - target).square().sum() * self.content_scales[name]
            for name, target in self.content_targets.items())
        style = sum(
            _StyleLoss.apply(feats[name].float(), target, self.style_scales[name])
            for name, target in self.style_targets.items())
        tv = total_variation(image) * self.config.tv_weight
        total = content + style + tv
        parts = {"content": content, "style": style, "tv": tv}
        return total, {k: torch.as_tensor(v).detach() for k, v in parts.items()}


_AUTOCAST = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def blend_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """Style blend weights normalised to sum to 1 (equal when `weights` is None)."""
    if count == 0:
        raise invalid("--style", [], "no style image", "give at least one style image")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    check(len(weights) == count, "--style-weights", weights,
          f"{len(weights)} style weights for {count} style images", "give one per style image")
    check(all(w >= 0 and math.isfinite(w) for w in weights) and sum(weights) > 0,
          "--style-weights", weights, "negative, not finite or all 0",
          "expected numbers >= 0 with a positive sum")
    return [w / sum(weights) for w in weights]


def _make_optimizer(image: Tensor, config: GatysConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam([image], lr=config.learning_rate)
    # One iteration per step() call (so we can log and save between them); the history
    # persists across calls, so this equals one call with max_iter=iterations.
    return torch.optim.LBFGS([image], lr=1, max_iter=1, history_size=config.lbfgs_history,
                             tolerance_grad=-1, tolerance_change=-1)


def optimise(image: Tensor, loss_fn: GatysLoss, iterations: int, config: GatysConfig,
             callback=None) -> Tensor:
    """Run `iterations` optimiser steps from `image`; returns the best image evaluated.

    L-BFGS without a line search (as in the tutorial and neural-style) can overshoot now and
    then on this quartic objective, so the lowest-loss image seen is kept (without a device
    sync) and the final iterate is evaluated too. callback(iteration, image, parts) runs after
    each iteration with the detached losses of the image that iteration evaluated.
    """
    # NCHW-contiguous: LBFGS flattens parameters with .view(-1); VGG gets a channels_last copy.
    image = image.detach().clone().contiguous()
    image.requires_grad_(True)
    optimizer = _make_optimizer(image, config)
    best = {"loss": torch.tensor(math.inf, device=image.device), "image": image.detach().clone()}
    last: dict[str, Tensor] = {}

    def keep_if_best(total: Tensor) -> None:
        better = total < best["loss"]
        best["loss"] = torch.where(better, total, best["loss"])
        best["image"] = torch.where(better, image.detach(), best["image"])

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        total, parts = loss_fn(image)
        total.backward()
        keep_if_best(total.detach())
        last.update(parts, total=total.detach())
        return total

    for iteration in range(1, iterations + 1):
        optimizer.step(closure)
        if callback is not None:
            callback(iteration, image.detach(), dict(last))
    if iterations:
        with torch.no_grad():
            keep_if_best(loss_fn(image)[0])
    return best["image"].contiguous()


def initial_image(init: str | Tensor, content: Tensor, seed: int) -> Tensor:
    """The starting point: the content, seeded noise, or a given image resized to the content."""
    if isinstance(init, Tensor):
        return F.interpolate(init.to(content), size=content.shape[-2:], mode="bicubic",
                             align_corners=False).clamp(-1, 1)
    if init == "content":
        return content.clone()
    if init == "random":
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(content.shape, generator=gen) * 0.25).clamp(-1, 1).to(content)
    raise invalid("--init", init, "neither content, random nor an image",
                  "expected content, random or an image tensor")


def resize_longest(image: Tensor, longest: int) -> Tensor:
    """Resize (1, 3, H, W) so that its longest side is `longest` (antialiased bicubic)."""
    h, w = image.shape[-2:]
    scale = longest / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False,
                         antialias=scale < 1).clamp(-1, 1)



def load_vgg(config: GatysConfig, weights: str | os.PathLike = "torchvision",
             device: str | torch.device = "cpu") -> VGGFeatures:
    """The frozen VGG19, truncated after the deepest content/style layer, in channels_last."""
    layers = list(dict.fromkeys([*config.content_layers, *config.style_layers]))
    try:
        vgg = VGGFeatures(layers, weights=weights)
    except RuntimeError as err:  # torchvision's weights cannot be fetched (offline)
        if weights != "torchvision":
            raise
        raise _offline_error(err.__cause__ or err) from err
    return vgg.to(device=device, memory_format=torch.channels_last)


def _offline_error(cause: BaseException) -> ConfigError:
    """VGGFeatures' offline advice names the train config key; here it is a flag."""
    from torchvision.models import VGG19_Weights

    file = os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", file)
    return invalid("--vgg-weights", "torchvision", f"the ImageNet weights could not be loaded "
                   f"({type(cause).__name__}: {cause})", f"place {file} at {cached}, or pass "
                   "--vgg-weights FILE.pth (a torchvision vgg19 state dict or the "
                   "normalised-VGG prefix layout)")


def transfer(vgg: VGGFeatures, content: Tensor, styles: Sequence[Tensor], config: GatysConfig,
             style_blend: Sequence[float] | None = None, init: str | Tensor = "content",
             callback=None) -> Tensor:
    """Stylise `content` with the (blended) `styles`, coarse to fine over `config.sizes`.

    Inputs are (1, 3, H, W) images in [-1, 1] at any size (each stage resizes them). Stage k > 0
    starts from stage k-1's result upsampled. callback(stage, iteration, image, parts) runs
    after every iteration. Returns (1, 3, h, w) in [-1, 1], longest side `config.sizes[-1]`.
    """
    config.validate()
    image: Tensor | None = None
    for stage, (size, iterations) in enumerate(zip(config.sizes, config.stage_iterations())):
        stage_content = resize_longest(content, size)
        stage_styles = [resize_longest(s, config.style_side(size)) for s in styles]
        _check_short_sides(config, size, stage_content, stage_styles)
        if config.match_color:
            stage_styles = [match_color(s, stage_content) for s in stage_styles]
        loss_fn = GatysLoss(vgg, stage_content, stage_styles, config, style_blend)
        start = initial_image(init if image is None else image, stage_content, config.seed)
        step = None if callback is None else functools.partial(callback, stage)
        image = optimise(start, loss_fn, iterations, config, step).clamp(-1, 1)
        del loss_fn
    return finish(image, stage_content, config)


def _check_short_sides(config: GatysConfig, size: int, content: Tensor,
                       styles: Sequence[Tensor]) -> None:
    """`validate` checks the longest sides; an elongated image's short side may still be too
    small for the VGG layers (a cryptic padding or pooling error otherwise)."""
    low = min_image_side([*config.content_layers, *config.style_layers])
    for key, value, what, image in [("--scales", config.sizes, "content", content),
                                    *(("--style-scale", config.style_scale, "style", s)
                                      for s in styles)]:
        h, w = image.shape[-2:]
        check(min(h, w) >= low, key, value, f"the {what} image becomes {w}x{h} at scale "
              f"{size}, its short side below {low}, the smallest the VGG layers accept",
              "expected a larger scale or shallower layers")


def finish(image: Tensor, content: Tensor, config: GatysConfig) -> Tensor:
    """Clamp, and with `original_colors` put the content's chroma back."""
    image = image.clamp(-1, 1)
    return transfer_luminance(image, content) if config.original_colors else image


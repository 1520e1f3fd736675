"""`GatysConfig`: the settings of one Gatys optimisation, each written once as a dataclass field
with its command-line help (`cyclestyle gatys` builds its flags from it).

Errors name the flag (`--lbfgs-history: 0 is invalid: below 1; expected an integer >= 1`):
these settings reach users as command-line options. No torch here: `cyclestyle gatys --help`
must stay instant.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from cyclestyle.options import check, check_finite, invalid, option
from cyclestyle.runtime import PRECISIONS

__all__ = ["OPTIMIZERS", "GatysConfig", "min_image_side"]

OPTIMIZERS = ("lbfgs", "adam")
_VGG_LAYER = re.compile(r"^(?:conv|relu)(\d)_\d$|^pool(\d)$")


def min_image_side(layers: list[str]) -> int:
    """The smallest image side VGG19 accepts when running to the deepest of `layers`.

    A layer of block B (conv3_1 .. relu3_4, pool3: B = 3) sits behind B - 1 poolings, each
    halving the side (floor), and its 3x3 convs pad by reflection with the normalised weights,
    which needs 2 pixels: 2^B. (Zero padding, torchvision's, would take 2^(B-1) before poolB.)
    Unknown names count as block 0 here; VGGFeatures rejects them with the valid names.
    """
    blocks = [int(m[1] or m[2]) for m in map(_VGG_LAYER.match, layers) if m]
    return 2 ** max(blocks, default=0)


@dataclass
class GatysConfig:
    """Settings of one optimisation (every stage of a multi-scale run shares them)."""

    content_layers: list[str] = option(lambda: ["relu4_2"], metavar="L1,..",
                                       help="VGG19 layers whose features the result keeps")
    style_layers: list[str] = option(
        lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"], metavar="L1,..",
        help="VGG19 layers whose Gram matrices the result matches")
    content_weight: float = option(1.0, help="weight of the content loss")
    # With relative losses, style ~ 1e3 x content lets the style dominate texture while the
    # content loss stays well below 1 (the features remain recognisably the content's).
    style_weight: float = option(1e3, help="weight of the style loss")
    tv_weight: float = option(1.0, help="weight of the total-variation (smoothness) loss")
    sizes: list[int] = option(lambda: [512], flag="--scales", metavar="S1,S2,..",
                              help="longest side per stage, coarse to fine, e.g. 256,512,1024")
    iterations: list[int] = option(lambda: [500], metavar="N[,N..]",
                                   help="iterations per stage, or one number for every stage")
    style_scale: float = option(1.0, help="style images' longest side relative to the stage's")
    original_colors: bool = option(False, help="keep the content's colours (transfer the "
                                   "luminance only)")
    match_color: bool = option(False, help="recolour the styles to the content's colour mean "
                               "and covariance first")
    optimizer: str = option("lbfgs", choices=OPTIMIZERS, help="pixel optimiser")
    lbfgs_history: int = option(100, help="L-BFGS history size")  # torch's and neural-style's
    learning_rate: float = option(0.02, help="Adam step size, in [-1, 1] pixel units")
    init: str = option("content", help="start from: content, random, or an image path")
    seed: int = option(0, help="seed of the random start")
    precision: str = option("auto", choices=PRECISIONS,
                            help="VGG autocast precision; auto: bf16 where it is fast, else fp32")
    save_every: int = option(0, metavar="N", help="also log losses (and save a snapshot, in the "
                             "CLI) every N iterations; 0: only at the end")
    # Per-layer multipliers of the content/style weights; library only (no flag).
    layer_weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        check(self.optimizer in OPTIMIZERS, "--optimizer", self.optimizer, "not an optimizer",
              "expected " + " or ".join(OPTIMIZERS))
        check(self.precision in PRECISIONS, "--precision", self.precision, "not a precision",
              "expected " + " | ".join(PRECISIONS))
        if not self.content_layers and not self.style_layers:
            raise invalid("--content-layers", self.content_layers, "empty, and so is "
                          "--style-layers", "give at least one content or style layer")
        for key, value in (("--content-weight", self.content_weight),
                           ("--style-weight", self.style_weight), ("--tv-weight", self.tv_weight)):
            check_finite(key, value)
            check(value >= 0, key, value, "negative", "expected a number >= 0")
        self._validate_stages()
        for key, value, low in (("--lbfgs-history", self.lbfgs_history, 1),
                                ("--save-every", self.save_every, 0)):
            check(value >= low, key, value, f"below {low}", f"expected an integer >= {low}")
        check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "--learning-rate",
              self.learning_rate, "not a positive number", "expected a number > 0")
        self._validate_layer_weights()

    def _validate_stages(self) -> None:
        check(bool(self.sizes), "--scales", self.sizes, "empty", "expected sizes, e.g. 256,512")
        count = len(self.sizes)
        check(len(self.iterations) in (1, count), "--iterations", self.iterations,
              f"neither one number nor one per scale ({count} scales {self.sizes})",
              f"expected 1 or {count} numbers")
        check(all(n >= 0 for n in self.iterations), "--iterations", self.iterations,
              "a negative count", "expected integers >= 0")
        check_finite("--style-scale", self.style_scale)
        check(self.style_scale > 0, "--style-scale", self.style_scale, "not positive",
              "expected a number > 0")
        layers = [*self.content_layers, *self.style_layers]
        low, deepest = min_image_side(layers), _deepest(layers)
        for size in self.sizes:
            check(size >= low, "--scales", self.sizes, f"{size} is below {low}, the smallest "
                  f"image side VGG layer {deepest!r} accepts", f"expected sides >= {low} (or "
                  "shallower layers)")
            style_side = self.style_side(size)
            check(style_side >= low, "--style-scale", self.style_scale, f"the style's side "
                  f"at scale {size} would be {style_side}, below {low}, the smallest image side "
                  f"VGG layer {deepest!r} accepts", f"expected a scale >= {low / size:.3g}")

    def _validate_layer_weights(self) -> None:
        used = {*self.content_layers, *self.style_layers}
        for name, weight in self.layer_weights.items():
            check(name in used, "layer_weights", name, "not a content or style layer",
                  "expected one of " + ", ".join(sorted(used)))
            check(math.isfinite(weight) and weight >= 0, f"layer_weights.{name}", weight,
                  "negative or not finite", "expected a number >= 0")

    def style_side(self, size: int) -> int:
        """The style images' longest side at a stage of longest side `size`."""
        return max(1, round(size * self.style_scale))

    def stage_iterations(self) -> list[int]:
        its = self.iterations
        return list(its) * len(self.sizes) if len(its) == 1 else list(its)


def _deepest(layers: list[str]) -> str:
    """The layer of `layers` in the deepest block (the one `min_image_side` is set by)."""
    return max(layers, key=lambda name: min_image_side([name]))

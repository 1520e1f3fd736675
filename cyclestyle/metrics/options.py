"""Settings of `cyclestyle evaluate`: each field is one flag (`kid_subsets` -> `--kid-subsets`)
with its default and help written here once. torch-free, so `cyclestyle evaluate --help` is
instant."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cyclestyle.metrics.resize import RESIZE_MODES
from cyclestyle.options import check, invalid, option

__all__ = ["BEST_BY", "DIRECTIONS", "METRICS", "EvaluateOptions", "parse_metrics"]

METRICS = ("fid", "kid", "style", "content")
# Held-out scoring during training (metrics.training.TrainingFID, config key eval.best): each
# direction's FID, or their mean, picks best.pt.
DIRECTIONS = ("a2b", "b2a")
BEST_BY = ("mean", *DIRECTIONS)


@dataclass
class EvaluateOptions:
    """Settings of `cyclestyle evaluate`; recorded with the results."""

    # A path (TorchScript), an nn.Module / FeatureExtractor from Python, or None (torchmetrics').
    inception_weights: Any = option(
        None, metavar="PATH", help="TorchScript Inception file (NCHW [-1, 1] at 299x299 -> "
        "2048-d); default: $CYCLESTYLE_INCEPTION_WEIGHTS when set, else torchmetrics' own "
        "Inception (torch-fidelity's weights, fetched once into the torch hub cache)")
    resize: str = option(
        "pil_bicubic", choices=sorted(RESIZE_MODES), help="resize to the Inception input: "
        + "; ".join(f"{k}: {v}" for k, v in RESIZE_MODES.items()))
    batch_size: int = option(32, help="images per Inception / VGG batch")
    kid_subsets: int = option(100, help="random subsets KID is averaged over")
    # 1000 as in the KID paper and torchmetrics; smaller sets get half the smaller set (see
    # fid.kernel_inception_distance) so that the subsets, and the std, vary.
    kid_subset_size: int = option(1000, help="images per KID subset; when a set is not larger, "
                                  "half the smaller set, with a warning")
    seed: int = option(0, help="KID subset RNG seed")
    vgg_weights: str | os.PathLike = option(
        "torchvision", help="VGG19 weights for style metrics: 'torchvision' or a state-dict "
        "path, e.g. the normalised prefix vgg19_normalised_to_relu3_1.pth")
    style_image_size: int = option(256, help="side of the centre crop the style metrics see")
    cache_dir: str | os.PathLike | None = option(
        None, metavar="DIR", help="feature cache folder (default: ~/.cache/cyclestyle/features)")
    use_cache: bool = option(True, flag="--cache", help="read and write the feature cache")
    lpips: bool = option(True, help="LPIPS content distance (when its weights are present)")
    device: str = option("cpu", help="torch device")

    def validate(self) -> None:
        """Refuse values no metric can use; keys are the command's flags."""
        check(self.resize in RESIZE_MODES, "--resize", self.resize, "not a known resize mode",
              "one of " + ", ".join(RESIZE_MODES))
        check(self.batch_size >= 1, "--batch-size", self.batch_size, "below 1",
              "an integer >= 1")
        check(self.kid_subsets >= 1, "--kid-subsets", self.kid_subsets, "below 1",
              "an integer >= 1 (100 is usual)")
        check(self.kid_subset_size >= 2, "--kid-subset-size", self.kid_subset_size,
              "the unbiased MMD needs 2 images per subset", "an integer >= 2 (1000 is usual)")
        # relu5_1 sits behind four 2x poolings
        check(self.style_image_size >= 16, "--style-image-size", self.style_image_size,
              "too small for VGG's poolings", "an integer >= 16")


def parse_metrics(metrics: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """(metrics to run, whether they were named): None means all, each skipped with a reason
    when it cannot run; named metrics fail loudly instead."""
    if metrics is None:
        return list(METRICS), False
    raw = metrics
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        why = f"unknown metric(s) {', '.join(unknown)}" if unknown else "no metric named"
        raise invalid("--metrics", raw if isinstance(raw, str) else ",".join(raw), why,
                      "a comma-separated subset of " + ",".join(METRICS))
    return list(dict.fromkeys(metrics)), True

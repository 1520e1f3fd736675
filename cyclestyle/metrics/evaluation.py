"""evaluate(): every metric for one translated set, with the settings behind each number."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cyclestyle import __version__
from cyclestyle.imageio import find_images
from cyclestyle.metrics.content import evaluate_content, pair_by_relative_path
from cyclestyle.metrics.features import (
    RESIZE_MODES,
    FeatureCache,
    extract_features,
    load_inception,
)
from cyclestyle.metrics.fid import fid_from_features, kernel_inception_distance
from cyclestyle.metrics.report import write_json, write_report
from cyclestyle.metrics.style import evaluate_style

__all__ = ["METRICS", "EvaluateOptions", "evaluate"]

log = logging.getLogger(__name__)

METRICS = ("fid", "kid", "style", "content")


@dataclass
class EvaluateOptions:
    """Settings of `cyclestyle evaluate`; recorded with the results."""

    inception_weights: str | os.PathLike | nn.Module | None = None  # None: torchmetrics' own
    resize: str = "pil_bicubic"
    batch_size: int = 32
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    cache_dir: str | os.PathLike | None = None  # None: ~/.cache/cyclestyle/features
    use_cache: bool = True
    vgg_weights: str | os.PathLike = "torchvision"
    style_image_size: int = 256
    lpips: bool = True
    device: str = "cpu"


def _parse_metrics(metrics: Sequence[str] | None) -> tuple[list[str], bool]:
    if metrics is None:
        return list(METRICS), False
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown or metrics!r}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(metrics)), True


def _fid_kid(real: Path, fake: Path, wanted: list[str], opts: EvaluateOptions) -> dict:
    extractor = load_inception(opts.inception_weights)
    cache = FeatureCache(opts.cache_dir) if opts.use_cache else None
    kwargs = {"extractor": extractor, "resize": opts.resize, "batch_size": opts.batch_size,
              "device": opts.device, "cache": cache}
    real_features = extract_features(real, **kwargs)
    fake_features = extract_features(fake, **kwargs)
    common = {"n_real": real_features.shape[0], "n_fake": fake_features.shape[0],
              "extractor": extractor.describe(), "resize": opts.resize,
              "resize_description": RESIZE_MODES[opts.resize]}
    out = {}
    if "fid" in wanted:
        out["fid"] = {"value": fid_from_features(real_features, fake_features), **common,
                      "statistics": "float64 mean and unbiased covariance",
                      "sqrt_trace": "eigenvalues of R^T S2 R, S1 = R R^T (pivoted Cholesky "
                                     "of the lower-rank covariance)"}
    if "kid" in wanted:
        kid = kernel_inception_distance(real_features, fake_features, opts.kid_subsets,
                                        opts.kid_subset_size, opts.seed)
        out["kid"] = {"mean": kid.mean, "std": kid.std, "subsets": kid.subsets,
                      "subset_size": kid.subset_size, "requested_subset_size": opts.kid_subset_size,
                      "seed": kid.seed, **common,
                      "kernel": "(x.y / d + 1)^3, unbiased MMD^2 (torchmetrics poly_mmd)"}
    return out


def evaluate(real: str | os.PathLike, fake: str | os.PathLike,
             source: str | os.PathLike | None = None, metrics: Sequence[str] | None = None,
             out_dir: str | os.PathLike | None = None,
             options: EvaluateOptions | None = None) -> dict:
    """Compute the metrics; with `out_dir`, also write metrics.json and report.html there.

    `metrics=None` means all of them, skipping (with the reason recorded under "skipped") those
    whose inputs or weights are unavailable; metrics named explicitly raise instead.
    """
    opts = options or EvaluateOptions()
    wanted, explicit = _parse_metrics(metrics)
    if opts.resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {opts.resize!r}; valid: {sorted(RESIZE_MODES)}")
    real, fake = Path(real), Path(fake)
    results = {
        "cyclestyle_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"real": {"path": str(real), "n": len(find_images(real))},
                   "fake": {"path": str(fake), "n": len(find_images(fake))},
                   "source": ({"path": str(source), "n": len(find_images(source))}
                              if source is not None else None)},
        "options": {k: v if isinstance(v, (int, float, bool, type(None))) else str(v)
                    for k, v in vars(opts).items()},
        "metrics": {}, "skipped": {},
    }

    def attempt(names: list[str], compute) -> None:
        try:
            results["metrics"].update(compute())
        except (RuntimeError, FileNotFoundError) as err:
            if explicit:
                raise
            for name in names:
                results["skipped"][name] = str(err)
            log.warning("skipping %s: %s", "/".join(names), err)

    inception_metrics = [m for m in wanted if m in ("fid", "kid")]
    if inception_metrics:
        attempt(inception_metrics, lambda: _fid_kid(real, fake, inception_metrics, opts))
    if "style" in wanted:
        attempt(["style"], lambda: {"style": evaluate_style(
            fake, real, opts.vgg_weights, opts.style_image_size, device=opts.device)})
    pairs = None
    if "content" in wanted:
        if source is None:
            if explicit:
                raise ValueError("metric 'content' needs --source DIR (the untranslated images)")
            results["skipped"]["content"] = "no source folder given (--source DIR)"
        else:
            pairs = pair_by_relative_path(source, fake)
            results["metrics"]["content"] = evaluate_content(source, fake, opts.lpips, opts.device)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(results, out_dir / "metrics.json")
        write_report(results, out_dir, pairs)
    return results

"""evaluate(): every metric for one translated set, with the settings behind each number.

What would otherwise fail after all the computing is checked before the first image is embedded:
an output folder that is a file, cannot be written or lies inside an input folder (its
samples.png would be scored as an image of that set next time), and sets too small for a metric
(that metric is skipped with the reason, or refused when named). An unwritable feature cache is
a warning: the features are computed without it.
"""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cyclestyle import __version__
from cyclestyle.imageio import find_images
from cyclestyle.metrics.content import evaluate_content, pair_by_relative_path
from cyclestyle.metrics.features import FeatureCache, extract_features, load_inception
from cyclestyle.metrics.fid import fid_from_features, kernel_inception_distance
from cyclestyle.metrics.options import METRICS, EvaluateOptions, parse_metrics
from cyclestyle.metrics.report import write_json, write_report
from cyclestyle.metrics.resize import RESIZE_MODES
from cyclestyle.metrics.style import evaluate_style
from cyclestyle.options import invalid

__all__ = ["METRICS", "EvaluateOptions", "evaluate", "check_out_dir"]

log = logging.getLogger(__name__)

# FID needs a covariance and KID an unbiased MMD^2 of each set: 2 images per set at least.
# Style and content are defined for a single image (and find_images refuses empty folders).
_MIN_PER_SET = {"fid": 2, "kid": 2}


def _write_problem(folder: Path) -> str | None:
    """Why files cannot be written into `folder` (None: they can); creates nothing that stays."""
    folder = folder.expanduser().absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return ("an existing file, not a folder" if existing == folder else
                f"{str(existing)!r} is a file, so no folder can be made inside it")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        where = "" if existing == folder else f" (nor is its parent {str(existing)!r})"
        return f"not writable{where}: {err.strerror or err}"
    return None


def check_out_dir(out_dir: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output folder that is a file, is not writable, or lies inside an input
    folder (`inputs`: {"--fake": path, ...}); ConfigError naming both paths."""
    out_dir = Path(out_dir)
    out = out_dir.expanduser().resolve()
    for flag, folder in inputs.items():
        if folder is None:
            continue
        inside = Path(folder).expanduser().resolve()
        if out == inside or inside in out.parents:
            raise invalid("--out", str(out_dir), f"it is inside {flag} {str(folder)!r}, so its "
                          "samples.png would count as an image of that set on the next run",
                          "choose a folder outside --real, --fake and --source")
    problem = _write_problem(out_dir)
    if problem:
        raise invalid("--out", str(out_dir), problem, "a folder that can be created and written")


def _open_cache(opts: EvaluateOptions) -> tuple[FeatureCache | None, dict]:
    """The feature cache, or None when it is off or cannot be written (warned)."""
    if not opts.use_cache:
        return None, {"folder": None, "note": "not used (--no-cache)"}
    cache = FeatureCache(opts.cache_dir)
    problem = _write_problem(cache.folder)
    if problem:
        log.warning("--cache-dir %s: %s; computing features without the cache", cache.folder,
                    problem)
        return None, {"folder": str(cache.folder), "note": f"not used: {problem}"}
    return cache, {"folder": str(cache.folder)}


def _too_small(wanted: list[str], sets: dict[str, tuple[Path, int]]) -> dict[str, str]:
    """{metric: why} for the metrics a set has too few images for."""
    reasons = {}
    for name in wanted:
        need = _MIN_PER_SET.get(name, 1)
        small = [f"--{kind} {str(path)!r} has {n}" for kind, (path, n) in sets.items()
                 if n < need]
        if small:
            reasons[name] = f"needs at least {need} images per set; {', '.join(small)}"
    return reasons


def _fid_kid(real: Path, fake: Path, wanted: list[str], opts: EvaluateOptions,
             cache: FeatureCache | None) -> dict:
    extractor = load_inception(opts.inception_weights)
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
        out["kid"] = {"mean": kid.mean, "std": kid.std, "mean_x1e3": kid.mean_x1e3,
                      "std_x1e3": kid.std_x1e3, "std_method": kid.std_method,
                      "subsets": kid.subsets, "subset_size": kid.subset_size,
                      "requested_subset_size": kid.requested_subset_size, "seed": kid.seed,
                      **common,
                      "kernel": "(x.y / d + 1)^3, unbiased MMD^2 (torchmetrics poly_mmd)"}
    return out


def evaluate(real: str | os.PathLike, fake: str | os.PathLike,
             source: str | os.PathLike | None = None, metrics: Sequence[str] | None = None,
             out_dir: str | os.PathLike | None = None,
             options: EvaluateOptions | None = None) -> dict:
    """Compute the metrics; with `out_dir`, also write metrics.json and report.html there.

    `metrics=None` means all of them, skipping (with the reason recorded under "skipped") those
    whose inputs, weights or set sizes do not allow them; metrics named explicitly raise
    instead, and before anything is computed where that can be known.
    """
    opts = options or EvaluateOptions()
    opts.validate()
    wanted, explicit = parse_metrics(metrics)
    real, fake = Path(real), Path(fake)
    source = Path(source) if source is not None else None
    sets = {"real": (real, len(find_images(real))), "fake": (fake, len(find_images(fake)))}
    if out_dir is not None:
        check_out_dir(out_dir, {"--real": real, "--fake": fake, "--source": source})
    pairs = None
    if "content" in wanted and source is not None:
        pairs = pair_by_relative_path(source, fake)
    elif "content" in wanted and explicit:
        raise invalid("--metrics", ",".join(wanted), "content needs --source DIR (the "
                      "untranslated images)", "give --source, or leave content out")
    results = {
        "cyclestyle_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {kind: {"path": str(path), "n": n} for kind, (path, n) in sets.items()},
        "options": {k: v if isinstance(v, (int, float, bool, type(None))) else str(v)
                    for k, v in vars(opts).items()},
        "metrics": {}, "skipped": {},
    }
    results["inputs"]["source"] = ({"path": str(source), "n": len(find_images(source))}
                                   if source is not None else None)
    for name, why in _too_small(wanted, sets).items():
        if explicit:
            raise invalid("--metrics", ",".join(wanted), f"{name} {why}",
                          "add images, or leave " + name + " out")
        results["skipped"][name] = why
        log.warning("skipping %s: %s", name, why)
    wanted = [m for m in wanted if m not in results["skipped"]]

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
        cache, results["feature_cache"] = _open_cache(opts)
        attempt(inception_metrics, lambda: _fid_kid(real, fake, inception_metrics, opts, cache))
    if "style" in wanted:
        attempt(["style"], lambda: {"style": evaluate_style(
            fake, real, opts.vgg_weights, opts.style_image_size, opts.batch_size, opts.device)})
    if "content" in wanted:
        if source is None:
            results["skipped"]["content"] = "no source folder given (--source DIR)"
        else:
            results["metrics"]["content"] = evaluate_content(source, fake, opts.lpips, opts.device)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(results, out_dir / "metrics.json")
        write_report(results, out_dir, pairs)
    return results

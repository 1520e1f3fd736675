"""Benchmark the FID machinery, side by side in one run, and write the numbers as JSON.

1. The Fréchet distance of two 2048-d Gaussians: ours (`cyclestyle.metrics.fid`: Cholesky
   factor of the lower-rank covariance, pivoted when singular, then the eigenvalues of a
   symmetric matrix) against the usual `scipy.linalg.sqrtm(sigma1 @ sigma2)`, alternating,
   median of `--repeats` timings each. Two
   cases: full-rank statistics (5000 images) and rank-deficient ones (120 images, the size of
   horse2zebra's test set: singular covariances). Accuracy: the relative difference between
   the two results and, for the rank-deficient case, each one's error against the exact value
   (a nuclear norm, see `exact_fid`).
2. Feature extraction with the TorchScript Inception at batch 32: median images/s over
   `--batches` timed batches.

    .venv/bin/python scripts/bench_metrics.py \\
        --inception ../shared/weights/inception-2015-12-05-torchscript.pt --out bench_metrics.json

Peak RSS of the process is in the JSON. On 2 cores the whole run takes about 2 minutes;
`--quick` (64-d statistics, 2 batches of 4) is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch

from cyclestyle.metrics.fid import feature_stats, frechet_distance


def features(dim: int, count: int, seed: int) -> torch.Tensor:
    """Correlated, non-negative features like pool3 activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return (torch.randn(count, dim, generator=g, dtype=torch.float64) @ mix.T).relu()


def exact_fid(x1: torch.Tensor, x2: torch.Tensor) -> float:
    """For fewer images than dimensions: with centred features, tr sqrt(S1 S2) is the nuclear
    norm of X1 X2^T / sqrt((n1-1)(n2-1)), an n1 x n2 SVD, so the distance is known exactly."""
    a, b = feature_stats(x1), feature_stats(x2)
    c1, c2 = x1 - a.mean, x2 - b.mean
    root = torch.linalg.svdvals(c1 @ c2.T).sum() / ((len(x1) - 1) * (len(x2) - 1)) ** 0.5
    return float((a.mean - b.mean).square().sum() + a.cov.trace() + b.cov.trace() - 2 * root)


def scipy_fid(a, b) -> float:
    root = scipy.linalg.sqrtm(a.cov.numpy() @ b.cov.numpy())
    return float((a.mean - b.mean).square().sum() + a.cov.trace() + b.cov.trace()
                 - 2 * np.trace(root).real)


def ours_fid(a, b) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def bench_distance(dim: int, count: int, repeats: int) -> dict:
    x1, x2 = features(dim, count, 0), features(dim, count, 1)
    a, b = feature_stats(x1), feature_stats(x2)
    times: dict[str, list[float]] = {"ours": [], "scipy_sqrtm": []}
    values: dict[str, float] = {}
    for i in range(repeats):
        order = [("ours", ours_fid), ("scipy_sqrtm", scipy_fid)]
        for name, fn in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
            start = time.perf_counter()
            values[name] = fn(a, b)
            times[name].append(time.perf_counter() - start)
    ours_s, ref_s = (statistics.median(times[k]) for k in ("ours", "scipy_sqrtm"))
    errors = {}
    if count <= dim:
        exact = exact_fid(x1, x2)
        errors = {"exact": exact, **{f"{k}_relative_error": abs(v - exact) / abs(exact)
                                     for k, v in values.items()}}
    return {"dim": dim, "samples_per_set": count, "full_rank": count > dim, "repeats": repeats,
            "ours_s": times["ours"], "scipy_sqrtm_s": times["scipy_sqrtm"],
            "ours_median_s": round(ours_s, 4), "scipy_sqrtm_median_s": round(ref_s, 4),
            "speedup": round(ref_s / ours_s, 1), "ours": values["ours"],
            "scipy_sqrtm": values["scipy_sqrtm"],
            "relative_difference": abs(values["ours"] - values["scipy_sqrtm"])
            / abs(values["scipy_sqrtm"]), **errors}


def bench_extraction(path: str, batch: int, batches: int) -> dict:
    from cyclestyle.metrics.features import torchscript_inception

    extractor = torchscript_inception(path)
    pixels = torch.rand(batch, 3, 299, 299) * 255
    seconds = []
    with torch.inference_mode():
        extractor(pixels[:2])  # warm-up
        for _ in range(batches):
            start = time.perf_counter()
            extractor(pixels)
            seconds.append(time.perf_counter() - start)
    return {"batch_size": batch, "batches": batches, "seconds_per_batch": seconds,
            "images_per_s_median": round(batch / statistics.median(seconds), 2),
            "threads": torch.get_num_threads(), "extractor_sha256": extractor.sha256}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048)")
    parser.add_argument("--samples", default="5000,120",
                        help="images per set, one case each (default 5000,120)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per method (median)")
    parser.add_argument("--inception", help="TorchScript Inception file; without it extraction "
                        "is not measured")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 64-d, small batches")
    parser.add_argument("--out", type=Path, help="write the JSON here (it is printed either way)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.samples, args.repeats = 64, "200,20", 1
        args.batch_size, args.batches = 4, 2
    cases = [int(s) for s in args.samples.split(",") if s.strip()]
    result = {
        "benchmark": "metrics", "torch": torch.__version__, "scipy": scipy.__version__,
        "numpy": np.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "frechet_distance": [bench_distance(args.dim, count, args.repeats) for count in cases],
    }
    if args.inception:
        result["feature_extraction"] = bench_extraction(args.inception, args.batch_size,
                                                        args.batches)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()

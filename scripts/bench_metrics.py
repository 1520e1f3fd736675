"""Benchmark: Fréchet distance for 2048-d statistics (ours vs scipy.linalg.sqrtm) and Inception
feature extraction throughput at batch 32. Prints JSON.

    .venv/bin/python scripts/bench_metrics.py --inception ../shared/weights/inception-2015-12-05-torchscript.pt
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy
import scipy.linalg
import torch

from cyclestyle.metrics.fid import feature_stats, frechet_distance


def statistics(dim: int, count: int, seed: int):
    """Realistic-ish statistics: correlated, non-negative features like pool3 activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    x = (torch.randn(count, dim, generator=g, dtype=torch.float64) @ mix.T).relu()
    return feature_stats(x)


def scipy_fid(a, b) -> float:
    root = scipy.linalg.sqrtm(a.cov.numpy() @ b.cov.numpy())
    return float((a.mean - b.mean).square().sum() + a.cov.trace() + b.cov.trace()
                 - 2 * np.trace(root).real)


def bench_distance(dim: int, count: int) -> dict:
    a, b = statistics(dim, count, 0), statistics(dim, count, 1)
    t = time.perf_counter()
    ours = frechet_distance(a.mean, a.cov, b.mean, b.cov)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    ref = scipy_fid(a, b)
    ref_s = time.perf_counter() - t
    return {"dim": dim, "samples_per_set": count, "ours_s": round(ours_s, 3),
            "scipy_sqrtm_s": round(ref_s, 3), "speedup": round(ref_s / ours_s, 1),
            "ours": ours, "scipy_sqrtm": ref, "relative_difference": abs(ours - ref) / abs(ref),
            "scipy_version": scipy.__version__}


def bench_extraction(path: str, batch: int, batches: int) -> dict:
    from cyclestyle.metrics.features import torchscript_inception

    extractor = torchscript_inception(path)
    pixels = torch.rand(batch, 3, 299, 299) * 255
    with torch.inference_mode():
        extractor(pixels[:2])  # warm-up
        t = time.perf_counter()
        for _ in range(batches):
            extractor(pixels)
        seconds = time.perf_counter() - t
    return {"batch_size": batch, "images_per_s": round(batch * batches / seconds, 2),
            "threads": torch.get_num_threads(), "extractor_sha256": extractor.sha256}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--inception", help="TorchScript Inception file (skip extraction if absent)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2)
    args = parser.parse_args()
    result = {"frechet_distance": bench_distance(args.dim, args.samples)}
    if args.inception:
        result["feature_extraction"] = bench_extraction(args.inception, args.batch_size,
                                                        args.batches)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

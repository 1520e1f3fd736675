"""Fréchet distance (FID) and kernel distance (KID) between two sets of features, in float64.

FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2). The last trace is computed without a
matrix square root of a non-symmetric matrix (scipy's `sqrtm`: slow, and its signature changed in
SciPy 1.18): with S1 = R R^T (Cholesky, or the eigh square root when S1 is singular), S1 S2 is
similar to the symmetric PSD matrix R^T S2 R, so tr sqrt(S1 S2) = sum_i sqrt(lambda_i(R^T S2 R)).

KID is the unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3 (torchmetrics'
`poly_mmd`), averaged over random subsets drawn with a seeded generator; the subset size shrinks
to the smaller set when a set has fewer images than requested (with a warning).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics.image.kid import poly_mmd

__all__ = ["FeatureStats", "feature_stats", "trace_sqrt_product", "frechet_distance",
           "fid_from_features", "KIDResult", "kernel_inception_distance"]


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and unbiased covariance (D, D) of N feature vectors, float64."""

    mean: Tensor
    cov: Tensor
    count: int


def feature_stats(features: Tensor) -> FeatureStats:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors of shape (N, D), got "
                         f"{tuple(features.shape)}")
    x = features.double()
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    return FeatureStats(mean, cov, x.shape[0])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; round-off negative eigenvalues -> 0."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """tr sqrt(sigma1 @ sigma2) for symmetric PSD matrices, in float64, by eigenvalues.

    sigma1 @ sigma2 is similar to the symmetric PSD matrix R^T sigma2 R for any R with
    sigma1 = R R^T, so the trace is the sum of square roots of that matrix's eigenvalues. R is
    the Cholesky factor when sigma1 is positive definite (one factorisation plus eigenvalues
    only: the fast path), else the eigh square root (singular covariances: fewer images than
    feature dimensions). NumPy's LAPACK: its eigvalsh is ~2x faster than torch's on CPU.
    """
    s1 = sigma1.detach().double().cpu().numpy()
    s2 = sigma2.detach().double().cpu().numpy()
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    try:
        factor = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        factor = _psd_sqrt(s1)
    inner = factor.T @ s2 @ factor
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return torch.tensor(np.sqrt(values.clip(min=0)).sum(), dtype=torch.float64)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (squared, as FID reports)."""
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
                         f"sigma {tuple(sigma1.shape)} / {tuple(sigma2.shape)}")
    mean_term = (mu1.double() - mu2.double()).square().sum()
    value = (mean_term + sigma1.double().trace() + sigma2.double().trace()
             - 2 * trace_sqrt_product(sigma1, sigma2))
    # Rounding can take a distance of identical sets a hair below zero.
    return max(float(value), 0.0)


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    a, b = feature_stats(real), feature_stats(fake)
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature dimensions differ: real {a.mean.shape[0]}, fake "
                         f"{b.mean.shape[0]} (same extractor for both sets?)")
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std: float
    subsets: int
    subset_size: int
    seed: int


def kernel_inception_distance(real: Tensor, fake: Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> KIDResult:
    """KID mean and std over `subsets` random subsets (without replacement within a subset)."""
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets}, "
                         f"{subset_size}")
    n_real, n_fake = real.shape[0], fake.shape[0]
    if min(n_real, n_fake) < 2:
        raise ValueError(f"KID needs at least 2 images per set, got real {n_real}, fake {n_fake}")
    size = min(subset_size, n_real, n_fake)
    if size < subset_size:
        warnings.warn(f"KID subset size reduced from {subset_size} to {size} (real set has "
                      f"{n_real} images, fake set {n_fake}); compare KIDs only at equal subset "
                      "sizes", stacklevel=2)
    generator = torch.Generator().manual_seed(seed)
    real, fake = real.double(), fake.double()
    scores = []
    for _ in range(subsets):
        r = real[torch.randperm(n_real, generator=generator)[:size]]
        f = fake[torch.randperm(n_fake, generator=generator)[:size]]
        scores.append(poly_mmd(r, f))
    values = torch.stack(scores)
    std = float(values.std(unbiased=False)) if subsets > 1 else math.nan
    return KIDResult(float(values.mean()), std, subsets, size, seed)

"""Fréchet distance (FID) and kernel distance (KID) between two sets of features, in float64.

FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2). The last trace is computed without a
matrix square root of a non-symmetric matrix (scipy's `sqrtm`: slow, and its signature changed in
SciPy 1.18): with S1 = R R^T, S1 S2 is similar to the symmetric PSD matrix R^T S2 R, so
tr sqrt(S1 S2) = sum_i sqrt(lambda_i(R^T S2 R)). R is a Cholesky factor (pivoted when singular),
d x r for a covariance of rank r, of whichever matrix has the lower rank: a test set of n < d
images gives r = n - 1 and an r x r eigenproblem (120 images, 2048-d: 0.36 s and exact, where
an eigh square root took 2.3 s and was 1e-7 off; scripts/bench_metrics.py).

KID is the unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3 (torchmetrics'
`poly_mmd`), averaged over random subsets drawn with a seeded generator, each without
replacement. Its std is the spread over those subsets; see `kernel_inception_distance` for what
happens when a set is not larger than the requested subset size.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import blas, lapack
from torch import Tensor
from torchmetrics.image.kid import poly_mmd

__all__ = ["FeatureStats", "feature_stats", "trace_sqrt_product", "frechet_distance",
           "fid_from_features", "KIDResult", "kid_subset_size", "kernel_inception_distance"]


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


def _cholesky(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(L, p) with matrix[p][:, p] = L L^T (p None: no pivoting), L lower trapezoidal d x r and
    r the numerical rank. Only the lower triangle of `matrix` is read.

    Plain Cholesky (dpotrf) when the matrix is positive definite; otherwise, say a covariance of
    fewer images than dimensions, LAPACK's pivoted Cholesky (dpstrf), which stops at the first
    pivot below d * eps * max diagonal, so directions that are zero up to round-off (or
    slightly negative) count as zero."""
    factor, info = lapack.dpotrf(matrix, lower=1, clean=1)
    if info == 0:
        return factor, None
    factor, pivots, rank, info = lapack.dpstrf(matrix, lower=1)
    if info < 0:
        raise ValueError(f"dpstrf rejected argument {-info}")
    return np.tril(factor[:, :rank]), pivots - 1


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """tr sqrt(sigma1 @ sigma2) for symmetric PSD matrices, in float64, by eigenvalues.

    With sigma1[p][:, p] = L L^T, sigma1 @ sigma2 is similar to the symmetric PSD matrix
    L^T sigma2[p][:, p] L, so the trace is the sum of square roots of its eigenvalues; the
    trace is the same with the roles swapped, so L comes from the matrix of lower rank (an
    r x r eigenproblem). At full rank L is triangular: two triangular multiplies. Only lower
    triangles are read (covariances are symmetric up to round-off).
    """
    s1 = sigma1.detach().double().cpu().numpy()
    s2 = sigma2.detach().double().cpu().numpy()
    dim = s1.shape[0]
    # Factor both and use the lower rank: besides the smaller problem, this keeps the
    # eigenvalues that must be zero (rank of the product < size of L) out of the sum, where
    # their round-off would add sqrt(eps * lambda_max) each.
    factor, order, other = min((*_cholesky(s1), s2), (*_cholesky(s2), s1),
                               key=lambda entry: entry[0].shape[1])
    if order is not None:
        other = other[order][:, order]
    if factor.shape[1] == dim:
        half = blas.dtrmm(1.0, factor, other, side=0, lower=1, trans_a=1)  # L^T S
        inner = blas.dtrmm(1.0, factor, half, side=1, lower=1)  # (L^T S) L
    else:
        inner = factor.T @ (other @ factor)
    values = np.linalg.eigvalsh(inner)  # lower triangle
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
    """KID over random subsets; `std_method` says what `std` measures (nan when nothing)."""

    mean: float
    std: float
    subsets: int
    subset_size: int
    seed: int
    requested_subset_size: int = 0
    std_method: str = ""

    @property
    def mean_x1e3(self) -> float:
        """KID x 10^3, the scale papers report."""
        return self.mean * 1e3

    @property
    def std_x1e3(self) -> float:
        return self.std * 1e3


def kid_subset_size(requested: int, n_real: int, n_fake: int, subsets: int = 2) -> int:
    """The subset size KID uses: `requested` when both sets are larger, else half the smaller
    set (at least 2). A subset as large as a set is that whole set every time, so the spread
    over subsets (the reported std) would be exactly 0 and mean nothing. One subset has no
    spread to protect: it is the smaller set itself."""
    smaller = min(n_real, n_fake)
    if requested < smaller:
        return requested
    return smaller if subsets == 1 else max(2, smaller // 2)


def kernel_inception_distance(real: Tensor, fake: Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> KIDResult:
    """KID mean and std over `subsets` random subsets of `subset_size` images per set.

    Each subset is drawn without replacement (within the subset) by a generator seeded with
    `seed`. The mean is the unbiased MMD^2 averaged over subsets: unbiased at any subset size,
    and as the subsets grow in number it tends to the full-set MMD^2. The std is the population
    std over subsets, i.e. the sampling spread of a KID computed from `subset_size` images per
    set. When a set is not larger than `subset_size`, subsets of half the smaller set are used
    instead (with a warning): then the std is an honest but conservative uncertainty of the
    full-set value (an estimate from half the images spreads about sqrt(2)-2x more). With one
    subset (then of the whole smaller set), or 2 images (no two distinct subsets of 2), the std
    is nan. `std_method` says which.
    """
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets}, "
                         f"{subset_size}")
    n_real, n_fake = real.shape[0], fake.shape[0]
    if min(n_real, n_fake) < 2:
        raise ValueError(f"KID needs at least 2 images per set, got real {n_real}, fake {n_fake}")
    size = kid_subset_size(subset_size, n_real, n_fake, subsets)
    if size != subset_size:
        why = ("the smaller set" if subsets == 1 else
               "half the smaller set, so that subsets differ and the std means something")
        warnings.warn(f"KID subset size reduced from {subset_size} to {size}, {why} (real set "
                      f"has {n_real} images, fake set {n_fake}); compare KIDs only at equal "
                      "subset sizes", stacklevel=2)
    generator = torch.Generator().manual_seed(seed)
    real, fake = real.double(), fake.double()
    scores = []
    for _ in range(subsets):
        r = real[torch.randperm(n_real, generator=generator)[:size]]
        f = fake[torch.randperm(n_fake, generator=generator)[:size]]
        scores.append(poly_mmd(r, f))
    values = torch.stack(scores)
    varies = subsets > 1 and size < min(n_real, n_fake)
    std = float(values.std(unbiased=False)) if varies else math.nan
    return KIDResult(float(values.mean()), std, subsets, size, seed, subset_size,
                     _std_method(subsets, size, n_real, n_fake, subset_size))


def _std_method(subsets: int, size: int, n_real: int, n_fake: int, requested: int) -> str:
    if subsets == 1:
        return "none: one subset (nan)"
    if size >= min(n_real, n_fake):
        return "none: 2 images per set allow no distinct subsets (nan)"
    how = (f"population std of the unbiased MMD^2 over {subsets} random subsets of {size} "
           "images per set, each drawn without replacement")
    if size < requested:
        how += (f"; {size} = half the smaller set (requested {requested}), so this is a "
                "conservative uncertainty of the full-set KID")
    return how

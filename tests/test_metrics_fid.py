"""FID and KID arithmetic against hand-computed values and independent implementations."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from cyclestyle.metrics.features import module_extractor, resize_to
from cyclestyle.metrics.fid import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    trace_sqrt_product,
)


def random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    return a @ a.T / (2 * d) + 0.01 * torch.eye(d, dtype=torch.float64)


def test_fid_of_a_set_against_itself_is_zero():
    features = torch.randn(300, 64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_rank_deficient_set_against_itself_is_zero():
    # Fewer images than dimensions (the usual small-test-set case): singular covariances.
    features = torch.randn(20, 128, generator=torch.Generator().manual_seed(1))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)


def test_equal_covariances_give_squared_mean_distance():
    sigma = random_spd(32, seed=2)
    mu1 = torch.randn(32, dtype=torch.float64)
    mu2 = mu1 + torch.linspace(-1, 2, 32, dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum())
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9)


def test_agrees_with_scipy_sqrtm_on_random_64d_statistics():
    for seed in range(3):
        s1, s2 = random_spd(64, seed), random_spd(64, seed + 100)
        mu1, mu2 = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
        root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())
        reference = (float((mu1 - mu2).square().sum()) + float(s1.trace() + s2.trace())
                     - 2 * float(np.trace(root).real))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-6)
        assert float(trace_sqrt_product(s1, s2)) == pytest.approx(np.trace(root).real, rel=1e-9)


@pytest.mark.parametrize(("dim", "n1", "n2"), [(256, 30, 37), (512, 40, 25)])
def test_small_sets_match_the_exact_nuclear_norm(dim, n1, n2):
    """Fewer images than dimensions (any real test set against 2048-d features): the covariances
    are singular. With centred features X1, X2, S1 S2 has the eigenvalues of
    (X1 X2^T)(X1 X2^T)^T / ((n1-1)(n2-1)), so tr sqrt(S1 S2) is the nuclear norm of X1 X2^T
    over sqrt((n1-1)(n2-1)): exact, from an n1 x n2 SVD. An eigh square root of S1 was 6e-8
    off here; scipy's sqrtm 2e-7."""
    g = torch.Generator().manual_seed(dim)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    x1, x2 = ((torch.randn(n, dim, generator=g, dtype=torch.float64) @ mix.T).relu()
              for n in (n1, n2))
    x1, x2 = x1 - x1.mean(0), x2 - x2.mean(0)
    exact = torch.linalg.svdvals(x1 @ x2.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    ours = trace_sqrt_product(feature_stats(x1).cov, feature_stats(x2).cov)
    assert float(ours) == pytest.approx(float(exact), rel=1e-12)


def test_diagonal_covariances_by_hand():
    # tr sqrt(diag(a) diag(b)) = sum sqrt(a_i b_i)
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    mu = torch.zeros(3)
    expected = float(a.sum() + b.sum() - 2 * (a * b).sqrt().sum())  # 14 + 6 - 2*(2+2+3) = 6
    assert expected == 6.0
    assert frechet_distance(mu, torch.diag(a), mu, torch.diag(b)) == pytest.approx(6.0)


def test_mismatched_statistics_are_refused():
    with pytest.raises(ValueError, match="mismatched statistics"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        feature_stats(torch.zeros(1, 5))


def test_matches_torchmetrics_fid_with_the_same_custom_extractor():
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 4, stride=4), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten())
    net.num_features = 24
    g = torch.Generator().manual_seed(3)
    real = torch.rand(40, 3, 32, 32, generator=g) * 2 - 1
    fake = (torch.rand(40, 3, 32, 32, generator=g) * 2 - 1) * 0.7 + 0.2
    reference = FrechetInceptionDistance(feature=net, normalize=True)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    extractor = module_extractor(net, input_size=32)
    # The extractor takes 0..255 floats; unrounded, since torchmetrics hands a custom net the
    # [-1, 1] floats as they are (to_uint8 would quantise them).
    with torch.no_grad():
        ours = fid_from_features(extractor((real + 1) * 127.5), extractor((fake + 1) * 127.5))
    assert ours == pytest.approx(float(reference.compute()), rel=1e-4)


def brute_force_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def replay_kid_subsets(real, fake, subsets: int, size: int, seed: int) -> list[float]:
    """Brute-force MMD^2 on the subsets the documented sampling draws."""
    rng = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        r = real[torch.randperm(len(real), generator=rng)[:size]].numpy()
        f = fake[torch.randperm(len(fake), generator=rng)[:size]].numpy()
        scores.append(brute_force_unbiased_mmd2(r, f))
    return scores


def test_kid_is_the_mean_and_std_of_brute_force_mmds_on_the_seeded_subsets():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(30, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(25, 8, generator=g, dtype=torch.float64) * 1.3 + 0.4
    result = kernel_inception_distance(real, fake, subsets=4, subset_size=12, seed=7)
    scores = replay_kid_subsets(real, fake, 4, 12, seed=7)
    assert result.subset_size == result.requested_subset_size == 12
    assert result.mean == pytest.approx(np.mean(scores), rel=1e-9)
    assert result.std == pytest.approx(np.std(scores), rel=1e-6)
    assert result.mean_x1e3 == pytest.approx(1e3 * result.mean)
    assert result.std_method.startswith("population std of the unbiased MMD^2 over 4 random")


def test_kid_of_sets_smaller_than_the_subset_uses_half_the_smaller_set():
    """A subset as large as the set is the whole set every time: std exactly 0, meaningless.
    Half the smaller set (15 and 11 images -> 5) makes the subsets differ."""
    g = torch.Generator().manual_seed(5)
    real = torch.randn(15, 6, generator=g, dtype=torch.float64)
    fake = torch.randn(11, 6, generator=g, dtype=torch.float64) + 0.5
    with pytest.warns(UserWarning, match="subset size reduced from 50 to 5, half the smaller"):
        result = kernel_inception_distance(real, fake, subsets=4, subset_size=50, seed=7)
    assert result.subset_size == 5 and result.requested_subset_size == 50
    scores = replay_kid_subsets(real, fake, 4, 5, seed=7)
    assert result.mean == pytest.approx(np.mean(scores), rel=1e-9)
    assert result.std == pytest.approx(np.std(scores), rel=1e-6)
    assert "half the smaller set (requested 50)" in result.std_method


def test_kid_std_at_8_plus_8_images_is_positive_and_says_how_it_was_computed():
    g = torch.Generator().manual_seed(8)
    real = torch.randn(8, 16, generator=g, dtype=torch.float64)
    fake = torch.randn(8, 16, generator=g, dtype=torch.float64) + 0.3
    with pytest.warns(UserWarning, match="reduced from 1000 to 4"):
        result = kernel_inception_distance(real, fake)
    assert result.subset_size == 4 and result.std > 0
    assert "100 random subsets of 4 images per set, each drawn without replacement" in \
        result.std_method
    # The subset average is an unbiased estimate of the full-set MMD^2 it scatters around.
    full = brute_force_unbiased_mmd2(real.numpy(), fake.numpy())
    assert abs(result.mean - full) < 3 * result.std / 10  # 100 subsets: sd of the mean ~ std/10


def test_kid_without_distinct_subsets_reports_nan_std_with_the_reason():
    g = torch.Generator().manual_seed(9)
    real, fake = torch.randn(2, 4, generator=g), torch.randn(5, 4, generator=g)
    with pytest.warns(UserWarning):
        two = kernel_inception_distance(real, fake, subsets=5)
    assert math.isnan(two.std) and two.std_method.startswith("none: 2 images")
    one = kernel_inception_distance(fake, fake, subsets=1, subset_size=3)
    assert math.isnan(one.std) and one.std_method == "none: one subset (nan)"


def test_kid_is_reproducible_by_seed():
    g = torch.Generator().manual_seed(6)
    real, fake = torch.randn(40, 5, generator=g), torch.randn(40, 5, generator=g) + 0.3
    a = kernel_inception_distance(real, fake, subsets=10, subset_size=20, seed=1)
    b = kernel_inception_distance(real, fake, subsets=10, subset_size=20, seed=1)
    c = kernel_inception_distance(real, fake, subsets=10, subset_size=20, seed=2)
    assert a == b and a.mean != c.mean


def test_tf1_bilinear_resize_by_hand():
    # 1 -> 2 columns per pixel: TF1 samples at x = i * in/out (0, 0.5, 1, 1.5), clamping the edge.
    row = np.array([[[0, 0, 0], [100, 100, 100]]], dtype=np.uint8).repeat(2, axis=0)
    out = resize_to(row, 4, "tf1_bilinear")
    assert out[0, 0].tolist() == [0.0, 50.0, 100.0, 100.0]
    # Downsampling without antialiasing picks every other pixel of a stripe pattern...
    stripes = np.zeros((8, 8, 3), dtype=np.uint8)
    stripes[:, 1::2] = 200
    assert resize_to(stripes, 4, "tf1_bilinear")[0].unique().tolist() == [0.0]
    # ...while the antialiased default averages it.
    assert resize_to(stripes, 4, "pil_bicubic")[0].mean().item() == pytest.approx(100, abs=5)


def test_unknown_resize_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="pil_bicubic"):
        resize_to(np.zeros((4, 4, 3), dtype=np.uint8), 2, "nearest")


def test_metrics_benchmark_quick_run(tmp_path, shared_inception):
    """scripts/bench_metrics.py keeps working: both methods timed on full-rank and
    rank-deficient statistics, agreeing, and extraction measured with the shared Inception."""
    out = tmp_path / "bench.json"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "scripts/bench_metrics.py", "--quick", "--inception",
                    str(shared_inception), "--out", str(out)], cwd=repo, check=True,
                   capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    cases = result["frechet_distance"]
    assert [c["full_rank"] for c in cases] == [True, False]
    assert cases[1]["ours_relative_error"] < 1e-12  # against the exact nuclear-norm value
    for case in cases:
        assert case["relative_difference"] < 1e-6 and case["ours"] > 0
        assert case["ours_median_s"] > 0 and case["speedup"] > 0
    extraction = result["feature_extraction"]
    assert extraction["images_per_s_median"] > 0 and len(extraction["seconds_per_batch"]) == 2
    assert extraction["extractor_sha256"].startswith("7ff4a85c")
    assert result["peak_rss_mib"] > 100

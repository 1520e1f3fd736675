"""Normalisation statistics from a chosen extent (cyclestyle.models.norm_stats): exact when the
statistics are the input's own, for every registered generator; used as given; per thread;
averaged over frames; pooled over tiles."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from cyclestyle.models import create_generator, list_generators
from cyclestyle.models.layers import (
    GroupNorm,
    InstanceNorm2d,
    check_statistics_supported,
    statistics_layers,
)
from cyclestyle.models.norm_stats import (
    FixedStatistics,
    Moments,
    OwnStatistics,
    PooledStatistics,
    RecordStatistics,
    RunningStatistics,
    norm_statistics,
    own_moments,
)
from cyclestyle.translate.tiling import plan_tiles
from cyclestyle.translate.translator import to_fast_cpu_layout

SMALL = {"unet_attn": dict(base_channels=8, channel_mults=[1, 2], depth=2,
                           attention_resolutions=[2, 4]),
         "resnet": dict(base_channels=4, n_blocks=2),
         "cut_resnet": dict(base_channels=4, n_blocks=2),
         "reference_unet": dict(base_channels=4, num_downs=5, norm="instance")}


def small_generator(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    generator = create_generator(name, **{**SMALL.get(name, {}), **overrides}).eval()
    with torch.no_grad():
        for param in generator.parameters():  # random attention output too (it starts at zero)
            param.add_(0.1 * torch.randn_like(param))
    return generator


@pytest.mark.parametrize("fast_layout", [False, True], ids=["plain", "channels_last"])
@pytest.mark.parametrize("name", list_generators())
def test_the_inputs_own_statistics_reproduce_the_normal_forward(name, fast_layout):
    generator = small_generator(name)
    if fast_layout:  # the Translator's CPU form: GroupNorm for InstanceNorm, channels_last
        generator = to_fast_cpu_layout(copy.deepcopy(generator))
    images = torch.rand(2, 3, 37, 45) * 2 - 1
    with torch.no_grad():
        expected = generator(images)
        record = RecordStatistics()
        with norm_statistics(record):
            recorded = generator(images)
        with norm_statistics(FixedStatistics(record.recorded)):
            supplied = generator(images)
    assert len(record.recorded) == len(statistics_layers(generator)) > 0
    assert expected.std() > 0.05
    assert (recorded - expected).abs().max() < 5e-5
    assert (supplied - expected).abs().max() < 5e-5


def test_batchnorm_generators_have_no_statistics_to_supply():
    """reference_unet's default BatchNorm uses fixed running statistics in eval mode: tiles and
    frames already share them, so the mechanism has nothing to do there."""
    generator = small_generator("reference_unet", norm="batch")
    assert statistics_layers(generator) == []
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad(), norm_statistics(OwnStatistics()):
        assert torch.equal(generator(images), generator(images))


@pytest.mark.parametrize("name", ["unet_attn", "resnet"])
def test_statistics_of_another_image_change_the_output(name):
    generator = small_generator(name)
    bright, dark = torch.rand(1, 3, 32, 32) * 0.5 + 0.5, torch.rand(1, 3, 32, 32) * 0.5 - 1
    with torch.no_grad():
        record = RecordStatistics()
        with norm_statistics(record):
            generator(bright)
        with norm_statistics(FixedStatistics(record.recorded)):
            borrowed = generator(dark)
        own = generator(dark)
    assert (borrowed - own).abs().mean() > 0.05


@pytest.mark.parametrize("layer", [InstanceNorm2d(4, affine=True), GroupNorm(2, 4)])
def test_a_norm_layer_normalises_with_exactly_the_supplied_statistics(layer):
    groups = 4 if isinstance(layer, InstanceNorm2d) else 2
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        layer.bias.copy_(torch.tensor([0.0, 1.0, 0.5, -2.0]))
    x = torch.randn(2, 4, 5, 6)
    mean, var = torch.randn(2, groups), torch.rand(2, groups) + 0.5
    with torch.no_grad(), norm_statistics(FixedStatistics([(layer, Moments(mean, var))])):
        out = layer(x)
    per_channel = 4 // groups
    m = mean.repeat_interleave(per_channel, 1)[..., None, None]
    v = var.repeat_interleave(per_channel, 1)[..., None, None]
    expected = (x - m) / torch.sqrt(v + layer.eps) * layer.weight[:, None, None] + layer.bias[
        :, None, None]
    assert torch.allclose(out, expected, atol=1e-5)


def test_statistics_apply_to_the_calling_thread_only():
    layer = InstanceNorm2d(3)
    x = torch.randn(1, 3, 8, 8)
    fixed = FixedStatistics([(layer, Moments(torch.full((1, 3), 5.0), torch.ones(1, 3)))])
    seen = {}
    with norm_statistics(fixed):
        other = threading.Thread(target=lambda: seen.setdefault("out", layer(x)))
        other.start()
        other.join()
        supplied = layer(x)
    assert torch.allclose(seen["out"], torch.nn.functional.instance_norm(x, eps=layer.eps), atol=1e-6)
    assert supplied.mean() < -3  # normalised with mean 5


def test_fixed_statistics_refuse_another_network():
    record = RecordStatistics()
    with norm_statistics(record):
        InstanceNorm2d(3)(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="recorded on another network"), \
            norm_statistics(FixedStatistics(record.recorded)):
        InstanceNorm2d(3)(torch.randn(1, 3, 8, 8))


def test_torchs_own_norm_classes_are_refused_by_name():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.InstanceNorm2d(4))
    with pytest.raises(ValueError, match=r"^1: 'InstanceNorm2d' is invalid: torch's own norm"):
        check_statistics_supported(model)
    check_statistics_supported(create_generator("resnet", base_channels=2, n_blocks=1))


# ---------------------------------------------------------------- running statistics


def frames_with_means(*means: float) -> torch.Tensor:
    """(T, 1, 4, 4) frames: a fixed zero-mean pattern of variance 1 plus each frame's mean."""
    pattern = torch.tensor([[1.0, -1.0] * 2, [-1.0, 1.0] * 2] * 2)
    return torch.stack([pattern + m for m in means])[:, None]


def test_running_statistics_average_means_and_second_moments_over_frames():
    layer, frames = InstanceNorm2d(1, eps=0.0), frames_with_means(0.0, 2.0, 4.0)
    running = RunningStatistics(window=3)  # weight 2 / (3 + 1) = 0.5 per new frame
    with norm_statistics(running.batch([True, False, False])):
        out = layer(frames)
    # Frame 1: mean 0.5 * 0 + 0.5 * 2 = 1; E[x^2] = 0.5 * 1 + 0.5 * (1 + 4) = 3; var = 2.
    # Frame 2: mean 0.5 * 1 + 0.5 * 4 = 2.5; E[x^2] = 0.5 * 3 + 0.5 * 17 = 10; var = 3.75.
    assert torch.allclose(out[0], frames[0], atol=1e-6)  # the first frame: its own statistics
    assert torch.allclose(out[1], (frames[1] - 1) / 2**0.5, atol=1e-5)
    assert torch.allclose(out[2], (frames[2] - 2.5) / 3.75**0.5, atol=1e-5)


def test_running_statistics_carry_over_between_batches_and_restart_at_scene_cuts():
    layer, frames = InstanceNorm2d(1), frames_with_means(0.0, 2.0, 4.0, 9.0)
    whole = RunningStatistics(window=4)
    with norm_statistics(whole.batch([True, False, False, False])):
        together = layer(frames)
    halves = RunningStatistics(window=4)
    with norm_statistics(halves.batch([True, False])):
        first = layer(frames[:2])
    with norm_statistics(halves.batch([False, False])):
        second = layer(frames[2:])
    assert torch.allclose(together, torch.cat([first, second]), atol=1e-6)
    cut = RunningStatistics(window=4)
    with norm_statistics(cut.batch([True, False, True, False])):
        restarted = layer(frames)
    assert torch.allclose(restarted[2], layer(frames[2:3])[0], atol=1e-5)  # its own statistics
    assert not torch.allclose(restarted[3], together[3], atol=1e-3)


def test_a_window_of_one_frame_is_per_frame_statistics():
    generator = small_generator("resnet")
    frames = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        with norm_statistics(RunningStatistics(window=1).batch([True, False, False])):
            running = generator(frames)
        assert (running - generator(frames)).abs().max() < 5e-5
    with pytest.raises(ValueError, match=r"^window: 0 is invalid"):
        RunningStatistics(window=0)


def run_pass(generator, frames, source, results, key):
    try:
        with torch.no_grad(), norm_statistics(source):
            results[key] = generator(frames)
    except RuntimeError as err:
        results[key] = err


def test_a_later_pass_started_first_waits_layer_by_layer_for_the_earlier_one():
    """Passes on several threads (the video runner's streams) compute exactly what one after
    another would: here the second pass even starts first and must wait at every layer."""
    generator = small_generator("unet_attn")
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    sequential = RunningStatistics(window=3)
    expected = {}
    for t in range(2):
        run_pass(generator, frames[t:t + 1], sequential.batch([t == 0]), expected, t)
    running, results = RunningStatistics(window=3), {}
    first, second = running.batch([True]), running.batch([False])
    later = threading.Thread(target=run_pass, args=(generator, frames[1:], second, results, 1))
    later.start()
    later.join(timeout=0.2)
    assert later.is_alive() and 1 not in results  # waiting for pass 0's first layer
    run_pass(generator, frames[:1], first, results, 0)
    later.join()
    assert torch.equal(results[0], expected[0]) and torch.equal(results[1], expected[1])
    assert not torch.allclose(results[1], generator(frames[1:]), atol=1e-3)  # not per-frame


def test_a_failed_pass_releases_the_passes_waiting_for_it():
    generator = small_generator("resnet")
    running, results = RunningStatistics(window=3), {}
    running.batch([True])  # taken, never run: its thread failed before starting
    waiting = threading.Thread(target=run_pass, args=(
        generator, torch.rand(1, 3, 32, 32), running.batch([False]), results, "late"))
    waiting.start()
    running.abort()
    waiting.join(timeout=30)
    assert isinstance(results["late"], RuntimeError)
    assert "an earlier pass failed" in str(results["late"])


# ---------------------------------------------------------------- pooled statistics


def test_statistics_pooled_over_the_tiles_owned_regions_are_the_whole_images():
    """Overlapping tiles, each counted over the part it owns: every pixel counts once, so the
    pooled statistics of a full-resolution layer are the whole image's."""
    image = torch.randn(1, 4, 70, 93) + torch.linspace(-2, 3, 93)  # not stationary
    layer = GroupNorm(2, 4)
    pool = PooledStatistics(OwnStatistics())
    for tile in plan_tiles(1, 70, 93, 32, 8):
        crop = image[..., tile.top:tile.top + tile.height, tile.left:tile.left + tile.width]
        with norm_statistics(pool.regions([tile.owned])):
            layer(crop)
    (pooled_layer, pooled), = pool.pooled()
    whole = own_moments(image, 2)
    assert pooled_layer is layer
    assert torch.allclose(pooled.mean, whole.mean, atol=1e-5)
    assert torch.allclose(pooled.var, whole.var, atol=1e-4)

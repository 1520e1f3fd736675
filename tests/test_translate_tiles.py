"""Tiles that agree: `translate --tile N` normalises every tile with whole-image statistics by
default, calibration rounds bring them to the untiled run's, --tile-stats tile is per-tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.cli import main
from cyclestyle.models import create_generator
from cyclestyle.models.norm_stats import FixedStatistics, RecordStatistics, RunningStatistics
from cyclestyle.translate.tiling import downscale_to_tile, plan_tiles
from cyclestyle.translate.translator import Translator


def contrasting_image(width: int = 192, height: int = 128) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]: a dark left half and a bright right half, both textured, so
    each tile's own statistics differ from the whole image's."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    texture = 0.25 * torch.sin(xx / 3.0 + torch.arange(3)[:, None, None]) * torch.cos(yy / 4.0)
    level = torch.where(xx < width // 2, -0.6, 0.5)
    return (level + texture)[None].clamp(-1, 1)


def trained_like_generator() -> torch.nn.Module:
    """A small U-Net with random non-zero weights everywhere (attention output too)."""
    torch.manual_seed(0)
    generator = create_generator("unet_attn", base_channels=8, channel_mults=[1, 2], depth=2,
                                 attention_resolutions=[], num_res_blocks=1)
    with torch.no_grad():
        for param in generator.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return generator


def mean_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() * 127.5)


def test_whole_image_statistics_keep_tiles_close_to_the_untiled_output():
    """Per-tile statistics stretch the dark and the bright half alike; whole-image statistics
    from the downscaled pass do not; calibration closes most of the remaining gap to tiles given
    the untiled run's exact statistics (what is left then: tile borders, seen without context)."""
    image = contrasting_image()
    plain = Translator(trained_like_generator(), device="cpu", precision="fp32", tile=64,
                       tile_overlap=16)
    with torch.inference_mode():
        exact = RecordStatistics()
        untiled = plain.forward(image, exact).clamp(-1, 1)
        floor = mean_levels(plain._tiled(image, FixedStatistics(exact.recorded)).clamp(-1, 1),
                            untiled)
    tiled = {}
    for stats, calibration in (("tile", 0), ("image", 0), ("image", 2)):
        translator = Translator(trained_like_generator(), device="cpu", precision="fp32",
                                tile=64, tile_overlap=16, tile_stats=stats,
                                tile_calibration=calibration)
        tiled[(stats, calibration)] = mean_levels(translator.translate_tensor(image), untiled)
    per_tile, whole, calibrated = tiled[("tile", 0)], tiled[("image", 0)], tiled[("image", 2)]
    assert whole < 0.5 * per_tile, tiled
    assert calibrated - floor < 0.25 * (whole - floor), (tiled, floor)


def test_a_generator_without_norms_is_tiled_without_a_statistics_pass(monkeypatch):
    """norm: none (the demo's generator) has no statistics to share: whole-image statistics
    would cost a downscaled pass and change nothing, so tiles and video frames skip it."""
    torch.manual_seed(0)
    generator = create_generator("unet_attn", base_channels=8, channel_mults=[1, 2], depth=2,
                                 attention_resolutions=[4], num_res_blocks=1, norm="none")
    translator = Translator(generator, device="cpu", precision="fp32", tile=64, tile_overlap=16)
    assert not translator.has_statistics
    passes = []
    original = translator.forward
    monkeypatch.setattr(translator, "forward", lambda batch, stats=None: (
        passes.append((tuple(batch.shape), stats)), original(batch, stats))[1])
    image = contrasting_image()
    out = translator.translate_tensor(image)
    frames = translator.translate_frames(image.repeat(2, 1, 1, 1), RunningStatistics().batch(
        [True, False]))
    tiles = len(plan_tiles(1, 128, 192, 64, 16))
    assert len(passes) == 3 * tiles  # the image's tiles, then each frame's: no extra pass
    assert all(stats is None for _, stats in passes)
    with torch.inference_mode():
        torch.testing.assert_close(out, translator._tiled(image, None).clamp(-1, 1))
        torch.testing.assert_close(frames[1:], out)
    assert Translator(trained_like_generator(), device="cpu", tile=256).has_statistics


def test_image_statistics_are_the_default_and_validated():
    translator = Translator(trained_like_generator(), device="cpu", tile=256)
    assert translator.tile_stats == "image" and translator.tile_calibration == 0
    with pytest.raises(ValueError, match=r"^tile_stats: 'tiles' is invalid: .*image / tile"):
        Translator(trained_like_generator(), device="cpu", tile=256, tile_stats="tiles")
    with pytest.raises(ValueError, match=r"^tile_calibration: -1 is invalid"):
        Translator(trained_like_generator(), device="cpu", tile=256, tile_calibration=-1)


def test_the_statistics_pass_costs_one_tile_of_memory():
    small = downscale_to_tile(torch.zeros(1, 3, 3000, 4000), 1024)
    assert small.shape[-2:] == (887, 1182)  # 4:3 kept, 1182 x 887 <= 1024^2 pixels
    assert small.shape[-1] * small.shape[-2] <= 1024**2


def test_tiles_own_each_pixel_once():
    tiles = plan_tiles(1, 70, 93, 32, 8)
    owned = np.zeros((70, 93), int)
    for t in tiles:
        top, bottom, left, right = t.owned
        owned[t.top + round(top * t.height):t.top + round(bottom * t.height),
              t.left + round(left * t.width):t.left + round(right * t.width)] += 1
    assert (owned == 1).all()


def test_bad_tile_flags_are_one_line_errors_before_any_work(tmp_path, capsys):
    Image.fromarray((np.random.default_rng(0).uniform(0, 255, (40, 60, 3))).astype(np.uint8)
                    ).save(tmp_path / "p.png")
    argv = ["translate", "--checkpoint", "x", "--input", str(tmp_path / "p.png"), "--output",
            str(tmp_path / "out"), "--tile", "32", "--tile-calibration", "-1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--tile-calibration: -1 is invalid" in err
    with pytest.raises(SystemExit) as stop:
        main(argv[:-2] + ["--tile-stats", "tiles"])
    assert stop.value.code == 2 and "invalid choice: 'tiles'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tiling_benchmark_quick_run_reports_every_case(tmp_path):
    """scripts/bench_tiling.py --quick (640x480, tile 256; ~20 s on 2 idle cores)."""
    from tests.helpers import run_benchmark

    report = run_benchmark("bench_tiling.py", tmp_path / "bench.json", "--quick")
    assert report["host"]["cpu_capability"] and report["tile"] == 256
    cases = {case["case"]: case for case in report["cases"]}
    assert "mean_abs_levels" not in cases["untiled"]
    per_tile = cases["per-tile statistics"]["mean_abs_levels"]
    assert cases["whole-image statistics"]["mean_abs_levels"] < per_tile
    assert all(case["seconds"] > 0 and case["peak_rss_mib"] > 0 for case in cases.values())


def test_a_generator_with_torchs_own_norms_is_refused_only_where_statistics_are_supplied():
    # (The CPU layout turns torch's InstanceNorm2d into ours; its GroupNorm stays torch's.)
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1),
                                    torch.nn.GroupNorm(2, 4), torch.nn.Conv2d(4, 3, 1))
    translator = Translator(generator, device="cpu", tile=32, tile_overlap=8)
    assert translator.translate_tensor(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)
    with pytest.raises(ValueError, match=r"^1: 'GroupNorm' is invalid: torch's own norm"):
        translator.translate_tensor(torch.rand(1, 3, 48, 48))  # tiled: whole-image statistics
    per_tile = Translator(generator, device="cpu", tile=32, tile_overlap=8, tile_stats="tile")
    assert per_tile.translate_tensor(torch.rand(1, 3, 48, 48)).shape == (1, 3, 48, 48)

"""translate knows the scale its generator was trained at: it warns when images are far from it
and rescales to it with --size train / --max-size train."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from cyclestyle.cli import main
from cyclestyle.translate.scale import (
    TrainingScale,
    training_scale,
    warn_if_far_from_training_scale,
)
from tests.helpers import tiny_config, write_images


@pytest.mark.parametrize("data, expected", [
    ({"image_size": 256}, {"side": "short", "pixels": 286}),  # load_size 0: 286/256 of the crop
    ({"image_size": 256, "load_size": 300, "preprocess": "resize_and_crop"},
     {"side": "short", "pixels": 300}),
    ({"image_size": 64, "load_size": 128, "preprocess": "scale_width"},
     {"side": "width", "pixels": 128}),
    ({"image_size": 64, "preprocess": "scale_width_and_crop"}, {"side": "width", "pixels": 72}),
    ({"image_size": 64, "preprocess": "crop"}, None),  # the images' own scale
    ({"image_size": 64, "preprocess": "none"}, None),
])
def test_training_scale_follows_the_preprocessing(data, expected):
    assert training_scale(data) == expected


def test_rescaling_to_the_training_scale_keeps_the_aspect():
    short, width = TrainingScale("short", 36), TrainingScale("width", 36)
    assert short.rescaled(200, 150) == (48, 36)
    assert width.rescaled(150, 200) == (36, 48)
    assert short.rescaled(24, 18) == (48, 36)  # --size train also enlarges
    assert short.rescaled(24, 18, shrink_only=True) == (24, 18)  # --max-size train does not
    assert short.rescaled(200, 150, shrink_only=True) == (48, 36)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One-step runs at 32-px crops: resize_and_crop (load_size 36) and crop."""
    from cyclestyle.train.trainer import train

    tmp = tmp_path_factory.mktemp("scale")
    dirs = write_images(tmp / "A", 2, seed=1), write_images(tmp / "B", 2, seed=2)
    runs = {}
    for mode in ("resize_and_crop", "crop"):
        runs[mode] = tmp / mode
        train(tiny_config(dirs, runs[mode], "train.max_steps=1", "train.sample_every=5",
                          f"data.preprocess={mode}", "data.load_size=36"))
    return runs


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (200, 150), "teal").save(folder / "big.png")  # short side 150: 4.2x 36
    Image.new("RGB", (40, 30), "olive").save(folder / "near.png")  # 30: 0.83x
    return folder


def _translate(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    return main(["translate", "--checkpoint", str(checkpoint), "--input", str(inputs),
                 "--output", str(out), "--device", "cpu", "--workers", "0", "--no-progress",
                 *extra])


def _sizes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: Image.open(p).size for p in sorted(folder.iterdir())}


def test_images_far_from_the_training_scale_are_warned_about(checkpoints, inputs, tmp_path,
                                                              caplog):
    with caplog.at_level(logging.WARNING, logger="cyclestyle.translate.scale"):
        assert _translate(checkpoints["resize_and_crop"], inputs, tmp_path / "out") == 0
    (warning,) = [r.getMessage() for r in caplog.records if "training scale" in r.getMessage()]
    assert warning.startswith("1 of 2 input image(s) checked are more than 2x off the training "
                              "scale (short side 36 px), e.g. ")
    assert "big.png at 200x150 is 4.2x" in warning and "--size train" in warning
    assert _sizes(tmp_path / "out") == {"big.png": (200, 150), "near.png": (40, 30)}


def test_size_train_rescales_to_the_training_scale_without_a_warning(checkpoints, inputs,
                                                                     tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cyclestyle.translate.scale"):
        assert _translate(checkpoints["resize_and_crop"], inputs, tmp_path / "all",
                          "--size", "train") == 0
        assert _translate(checkpoints["resize_and_crop"], inputs, tmp_path / "larger",
                          "--max-size", "train") == 0
    assert not [r for r in caplog.records if "training scale" in r.getMessage()]
    assert _sizes(tmp_path / "all") == {"big.png": (48, 36), "near.png": (48, 36)}
    assert _sizes(tmp_path / "larger") == {"big.png": (48, 36), "near.png": (40, 30)}


def test_a_release_folder_carries_the_training_scale(checkpoints, inputs, tmp_path):
    release = tmp_path / "release"
    assert main(["export", "--checkpoint", str(checkpoints["resize_and_crop"]), "--format", "hub",
                 "--output", str(release)]) == 0
    assert _translate(release, inputs, tmp_path / "out", "--size", "train") == 0
    assert _sizes(tmp_path / "out")["big.png"] == (48, 36)


def test_size_train_without_a_recorded_scale_is_one_line(checkpoints, inputs, tmp_path, capsys,
                                                         caplog):
    with caplog.at_level(logging.WARNING, logger="cyclestyle.translate.scale"):
        assert _translate(checkpoints["crop"], inputs, tmp_path / "plain") == 0
    assert not [r for r in caplog.records if "training scale" in r.getMessage()]  # own scale
    assert _translate(checkpoints["crop"], inputs, tmp_path / "out", "--size", "train") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "--size: 'train' is invalid: " in err and "records no training scale" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_size_values_are_refused_by_the_parser(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _translate(tmp_path / "any", inputs, tmp_path / "out", "--size", "trian")
    assert info.value.code == 2
    assert "'trian' is invalid: expected an integer number of pixels or train" in \
        capsys.readouterr().err


def test_the_warning_reads_headers_only_and_skips_unreadable_files(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    config = {"training_scale": {"side": "width", "pixels": 100}}
    paths = [tmp_path / "small.png", tmp_path / "broken.png"]
    assert warn_if_far_from_training_scale(paths, config) == 1  # width 20: 0.2x
    assert warn_if_far_from_training_scale(paths, config, lambda w, h: (5 * w, 5 * h)) == 0
    assert warn_if_far_from_training_scale(paths, {"training_scale": {"side": "x"}}) == 0

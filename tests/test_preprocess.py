"""data.preprocess: the sizes the networks see, on real photos of assorted shapes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cyclestyle.train.config import ConfigError, from_dict
from cyclestyle.train.data import UnpairedDataset, find_images, pil_to_tensor, preprocess_image

LOAD, CROP = 72, 64


@pytest.fixture(scope="module")
def photos(shared_photo_dir):
    files = find_images(shared_photo_dir)[:8]
    assert len({Image.open(f).size for f in files}) > 2  # landscape, portrait and square shapes
    return files


@pytest.mark.parametrize("mode", ["resize_and_crop", "crop", "scale_width_and_crop"])
def test_cropping_modes_give_square_crops(photos, mode):
    data = UnpairedDataset(photos, photos, CROP, load_size=LOAD, preprocess=mode)
    for k in range(len(photos)):
        assert data[k]["a"].shape == (3, CROP, CROP)


def test_scale_width_keeps_the_aspect_ratio(photos):
    data = UnpairedDataset(photos, photos, CROP, load_size=LOAD, preprocess="scale_width",
                           flip=False)
    for k in range(len(photos)):
        item = data[k]
        heights = []
        for domain in "ab":
            width, height = Image.open(item[f"path_{domain}"]).size
            heights.append(int(max(LOAD * height / width, CROP)))
            scaled = preprocess_image(Image.open(item[f"path_{domain}"]).convert("RGB"),
                                      "scale_width", LOAD, CROP)
            assert scaled.size == (LOAD, heights[-1])
        # A and B of one item share a size: the smaller height (the width is LOAD for both).
        assert item["a"].shape == item["b"].shape == (3, min(heights), LOAD)


def test_none_keeps_whole_images_at_their_own_size(photos):
    for path in photos:
        photo = Image.open(path).convert("RGB")
        assert preprocess_image(photo, "none", LOAD, CROP).tobytes() == photo.tobytes()
        # One image per domain: the item is that whole image, no resampling, no crop.
        item = UnpairedDataset([path], [path], CROP, load_size=LOAD, preprocess="none",
                               flip=False)[0]
        assert torch.equal(item["a"], pil_to_tensor(photo))  # real photos: 256 px and up


def test_none_upscales_images_smaller_than_the_crop():
    out = preprocess_image(Image.new("RGB", (40, 90)), "none", LOAD, CROP)
    assert out.size == (CROP, round(90 * CROP / 40))  # short side to data.image_size


def test_crop_is_at_the_original_scale(photos):
    photo = Image.open(photos[0]).convert("RGB")
    out = preprocess_image(photo, "crop", LOAD, CROP, 0.0, 0.0)
    assert out.tobytes() == photo.crop((0, 0, CROP, CROP)).tobytes()  # no resampling at all
    resized = preprocess_image(photo, "resize_and_crop", LOAD, CROP, 0.0, 0.0)
    assert resized.tobytes() != out.tobytes()


def test_resize_and_crop_scales_the_short_side_to_load_size(photos):
    photo = Image.open(photos[0]).convert("RGB")
    width, height = photo.size
    # The whole short side is the free crop range LOAD - CROP: the last corner is LOAD - CROP.
    far = preprocess_image(photo, "resize_and_crop", LOAD, CROP, 0.999, 0.999)
    short = min(width, height)
    resized = photo.resize((max(LOAD, round(width * LOAD / short)),
                            max(LOAD, round(height * LOAD / short))), Image.Resampling.BICUBIC)
    x, y = resized.width - CROP, resized.height - CROP
    assert far.tobytes() == resized.crop((x, y, x + CROP, y + CROP)).tobytes()


def test_small_image_is_upscaled_for_crop():
    out = preprocess_image(Image.new("RGB", (40, 90)), "crop", LOAD, CROP)
    assert out.size == (CROP, CROP)


@pytest.mark.parametrize("mode", ["scale_width", "none"])
def test_unknown_mode_and_batched_uncropped_modes_are_named(mode):
    with pytest.raises(ConfigError, match=r"data\.preprocess: 'whole' is invalid: not a known"):
        from_dict({"data": {"preprocess": "whole"}}).data.validate()
    with pytest.raises(ConfigError, match=rf"data\.preprocess: '{mode}' is invalid: its images "
                       r"differ in size, so they cannot be batched \(train\.batch_size=2\)"):
        from_dict({"data": {"preprocess": mode}, "train": {"batch_size": 2}}).validate()


def test_a_run_on_whole_images_of_mixed_sizes(image_dirs, tmp_path):
    """preprocess none end to end: odd sizes through the generator's pad-to-stride, the
    discriminators and the sample grid, with an effective batch of 2 by accumulation."""
    from cyclestyle.train.trainer import Trainer
    from tests.helpers import tiny_config

    trainer = Trainer(tiny_config(image_dirs, tmp_path / "run", "data.preprocess=none",
                                  "train.max_steps=3", "train.grad_accum_steps=2",
                                  "train.sample_every=3", "train.pool_size=2", "data.flip=false"))
    for k in range(5):  # epoch 0 of A: all 5 files, each met by some B image
        item = trainer.dataset[k]
        a, b = (Image.open(item[f"path_{d}"]).convert("RGB") for d in "ab")
        height, width = min(a.height, b.height), min(a.width, b.width)
        assert item["a"].shape == item["b"].shape == (3, height, width)
        if a.size == b.size:  # the whole image, untouched
            assert torch.equal(item["a"], pil_to_tensor(a))
    trainer.fit()  # a small pool: older fakes of other sizes meet the discriminators
    assert trainer.step == 3 and (tmp_path / "run" / "samples" / "step_00000003.png").is_file()
    pooled = [tuple(img.shape) for img in trainer.pool_a.images]
    assert len(set(pooled)) > 1  # so the checkpoint just written held fakes of several sizes
    resumed = Trainer(trainer.config, resume=True)
    assert [tuple(img.shape) for img in resumed.pool_a.images] == pooled

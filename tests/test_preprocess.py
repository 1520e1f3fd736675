"""data.preprocess: the sizes the networks see, on real photos of assorted shapes."""

from __future__ import annotations

import pytest
from PIL import Image

from cyclestyle.train.config import ConfigError, from_dict
from cyclestyle.train.data import UnpairedDataset, find_images, preprocess_image

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
        width, height = Image.open(item["path_a"]).size
        assert item["a"].shape == (3, int(max(LOAD * height / width, CROP)), LOAD)


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


def test_unknown_mode_and_batched_scale_width_are_named():
    with pytest.raises(ConfigError, match=r"data\.preprocess: 'none' is invalid: not a known"):
        from_dict({"data": {"preprocess": "none"}}).data.validate()
    with pytest.raises(ConfigError, match=r"data\.preprocess: 'scale_width' is invalid.*batch"):
        from_dict({"data": {"preprocess": "scale_width"}, "train": {"batch_size": 2}}).validate()

"""Image loading, discovery, and the deterministic unpaired sample stream."""

from __future__ import annotations

import itertools
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.train.data import (
    IMAGE_EXTENSIONS,
    ImageLoadError,
    StepSampler,
    UnpairedDataset,
    build_dataloader,
    find_images,
    load_image,
    pil_to_tensor,
    resolve_domain_dirs,
    tensor_to_pil,
)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def write_noise(path: Path, width: int = 24, height: int = 20, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(width, height, seed).save(path)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def pixel(img: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(img, dtype=int)[xy[1], xy[0]]


# ---------------------------------------------------------------------------------------------
# load_image: broken files


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_raises_naming_it(tmp_path, suffix):
    path = truncate(write_noise(tmp_path / f"broken{suffix}", 64, 64))
    with pytest.raises(ImageLoadError, match="broken") as info:
        load_image(path)
    assert info.value.path == path
    assert "truncated" in info.value.reason


def test_zero_byte_and_missing_files_raise(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.png") as info:
        load_image(empty)
    assert info.value.path == empty
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_image_load_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(ImageLoadError("cannot load x", path="x.png", reason="r")))
    assert (
        isinstance(error, ValueError)
        and error.path == Path("x.png")
        and str(error) == ("cannot load x")
    )


def test_decompression_bomb_limit_is_an_error_with_advice(tmp_path):
    path = write_noise(tmp_path / "big.png", 40, 30)
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"40x30 = 1,200 pixels is above the limit of 1,000 "
                                             r"pixels.*raise the limit: data\.max_image_pixels"):
        load_image(path, max_pixels=1000)
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert load_image(path, max_pixels=1200).size == (40, 30)


# ---------------------------------------------------------------------------------------------
# load_image: image modes


def test_grayscale_and_one_bit_become_rgb(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8), "L").save(tmp_path / "g.png")
    Image.new("1", (2, 1), 1).save(tmp_path / "b.png")
    gray = load_image(tmp_path / "g.png")
    assert gray.mode == "RGB" and np.asarray(gray)[0].tolist() == [[0] * 3, [100] * 3, [255] * 3]
    assert np.asarray(load_image(tmp_path / "b.png")).min() == 255


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(load_image(tmp_path / "rgba.png"), dtype=int)[0]
    assert out[0].tolist() == [255, 255, 255]  # fully transparent -> paper white
    assert out[1].tolist() == [255, 0, 0]
    assert np.abs(out[2] - 127).max() <= 1  # half-transparent black over white

    la = np.array([[[0, 0], [0, 255], [0, 128]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = np.asarray(load_image(tmp_path / "la.png"), dtype=int)[0]
    assert out[0].tolist() == [255] * 3 and out[1].tolist() == [0] * 3
    assert np.abs(out[2] - 127).max() <= 1


def test_palette_transparency_is_white(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png", transparency=1)  # index 1 (blue) is transparent
    out = np.asarray(load_image(tmp_path / "p.png"), dtype=int)[0]
    assert out[0].tolist() == [255, 0, 0] and out[1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_pure_red(tmp_path, suffix):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / f"c{suffix}")
    out = load_image(tmp_path / f"c{suffix}")
    assert out.mode == "RGB"
    assert np.abs(pixel(out, (4, 4)) - [255, 0, 0]).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    # 80 wide x 40 high: left half red, right half blue, top 10 rows green.
    array = np.zeros((40, 80, 3), dtype=np.uint8)
    array[:, :40] = [255, 0, 0]
    array[:, 40:] = [0, 0, 255]
    array[:10] = [0, 255, 0]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(array).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (40, 80)
    # Clockwise: the left edge goes to the top, the top edge to the right.
    assert np.abs(pixel(out, (10, 20)) - [255, 0, 0]).max() < 40
    assert np.abs(pixel(out, (10, 60)) - [0, 0, 255]).max() < 40
    assert np.abs(pixel(out, (36, 60)) - [0, 255, 0]).max() < 40


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", "<u2"), (".tif", ">u2")])
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, suffix, dtype):
    values = np.array([[0, 32768, 65535, 257 * 100]], dtype=dtype)
    Image.fromarray(values).save(tmp_path / f"g16{suffix}")
    out = np.asarray(load_image(tmp_path / f"g16{suffix}"))[0, :, 0]
    assert out.tolist() == [0, 128, 255, 100]


def write_png_rgb16(path: Path, array: np.ndarray) -> None:
    """A 48-bit RGB PNG (PIL cannot write one)."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)


def test_16bit_rgb_png_is_scaled(tmp_path):
    write_png_rgb16(tmp_path / "rgb16.png", np.array([[[65535, 32768, 0], [25700, 0, 65535]]]))
    out = np.asarray(load_image(tmp_path / "rgb16.png"), dtype=int)[0]
    assert out.tolist() == [[255, 128, 0], [100, 0, 255]]


def test_float_image_in_unit_range(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(tmp_path / "f.tif")
    out = np.asarray(load_image(tmp_path / "f.tif"))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_tensor_round_trip_is_exact():
    img = noise_image(7, 5)
    tensor = pil_to_tensor(img)
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    levels = pil_to_tensor(Image.fromarray(np.array([[[0, 255, 51]]], dtype=np.uint8)))
    assert torch.allclose(levels.flatten(), torch.tensor([-1.0, 1.0, -0.6]))
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)), np.asarray(img))
    clamped = tensor_to_pil(torch.full((3, 1, 1), 5.0))
    assert np.asarray(clamped).tolist() == [[[255, 255, 255]]]
    with pytest.raises(ValueError, match="shape"):
        tensor_to_pil(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="mode"):
        pil_to_tensor(img.convert("L"))


# ---------------------------------------------------------------------------------------------
# find_images


def test_find_images_recursive_sorted_and_filtered(tmp_path):
    expected = [
        write_noise(tmp_path / "a.png"),
        write_noise(tmp_path / "b.JPG"),
        write_noise(tmp_path / "nested" / "deeper" / "c.webp"),
        write_noise(tmp_path / "x.jpg" / "inside.png"),  # a folder named like an image
    ]
    write_noise(tmp_path / ".hidden.png")
    write_noise(tmp_path / ".cache" / "d.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert find_images(tmp_path) == sorted(expected, key=lambda p: p.relative_to(tmp_path))
    assert all(p.is_file() for p in find_images(tmp_path))


def test_find_images_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty.*\.jpg.*\.tiff"):
        find_images(tmp_path / "empty")
    assert ".tiff" in IMAGE_EXTENSIONS


# ---------------------------------------------------------------------------------------------
# UnpairedDataset


@pytest.fixture
def domains(tmp_path) -> tuple[list[Path], list[Path]]:
    files_a = [write_noise(tmp_path / "A" / f"a{i}.png", 20 + i, 18, seed=i) for i in range(6)]
    files_b = [write_noise(tmp_path / "B" / f"b{i}.png", 18, 22 + i, seed=50 + i) for i in range(4)]
    return files_a, files_b


def test_items_have_the_documented_shape(domains):
    dataset = UnpairedDataset(*domains, image_size=16, seed=3)
    item = dataset[123456]  # far beyond len(): the stream is infinite
    assert item["a"].shape == item["b"].shape == (3, 16, 16)
    assert item["a"].min() >= -1 and item["a"].max() <= 1
    assert Path(item["path_a"]) in domains[0] and Path(item["path_b"]) in domains[1]
    assert item["skipped"] == 0
    assert len(dataset) == 6
    assert dataset.load_size == 18  # round(16 * 286 / 256)


def test_small_and_non_square_images_are_upscaled(tmp_path):
    tiny = write_noise(tmp_path / "tiny.png", 10, 7)
    wide = write_noise(tmp_path / "wide.png", 90, 30)
    dataset = UnpairedDataset([tiny], [wide], image_size=32)
    for k in range(4):
        item = dataset[k]
        assert item["a"].shape == item["b"].shape == (3, 32, 32)


def test_crop_is_taken_from_the_resized_image(tmp_path):
    path = write_noise(tmp_path / "img.png", 60, 40)
    dataset = UnpairedDataset([path], [path], image_size=16, load_size=20, flip=False)
    resized = pil_to_tensor(load_image(path).resize((30, 20), Image.Resampling.BICUBIC))
    windows = resized.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, 5, 15, 16, 16): every 16x16 crop
    offsets = set()
    for k in range(16):
        crop = dataset[k]["a"]
        matches = (windows == crop[:, None, None]).flatten(3).all(-1).all(0)  # (5, 15)
        assert matches.sum() == 1
        offsets.add(tuple(matches.nonzero()[0].tolist()))
    tops, lefts = {top for top, _ in offsets}, {left for _, left in offsets}
    assert len(tops) > 1 and len(lefts) > 1  # the crop moves in both directions


def test_flip_is_random_and_can_be_disabled(tmp_path):
    path = write_noise(tmp_path / "img.png", 16, 16)
    original = pil_to_tensor(load_image(path))
    flipping = UnpairedDataset([path], [path], image_size=16, load_size=16)
    outputs = [flipping[k]["a"] for k in range(12)]
    assert any(torch.equal(out, original) for out in outputs)
    assert any(torch.equal(out, original.flip(-1)) for out in outputs)
    fixed = UnpairedDataset([path], [path], image_size=16, load_size=16, flip=False)
    assert all(torch.equal(fixed[k]["a"], original) for k in range(12))


def take_batches(dataset, start_step, steps, num_workers, batch_size=3):
    loader = build_dataloader(dataset, batch_size, start_step, num_workers)
    batches = list(itertools.islice(loader, steps))
    del loader
    return batches


def assert_same_batches(left, right):
    assert len(left) == len(right)
    for x, y in zip(left, right):
        assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"])
        assert x["path_a"] == y["path_a"] and x["path_b"] == y["path_b"]


def test_stream_ignores_worker_count_and_resume_point(domains):
    dataset = UnpairedDataset(*domains, image_size=16, seed=7)
    full = take_batches(dataset, start_step=0, steps=6, num_workers=0)
    assert_same_batches(take_batches(dataset, start_step=0, steps=6, num_workers=2), full)
    assert_same_batches(take_batches(dataset, start_step=3, steps=3, num_workers=2), full[3:])
    fresh = UnpairedDataset(*domains, image_size=16, seed=7)  # new process, empty caches
    assert_same_batches(take_batches(fresh, start_step=3, steps=3, num_workers=0), full[3:])
    other_seed = UnpairedDataset(*domains, image_size=16, seed=8)
    assert not torch.equal(take_batches(other_seed, 0, 1, 0)[0]["a"], full[0]["a"])


def stem_numbers(dataset, key, ks):
    return [int(Path(dataset[k][key]).stem[1:]) for k in ks]


def test_epochs_are_permutations_and_b_is_independent_of_a(tmp_path):
    files_a = [write_noise(tmp_path / "A" / f"a{i}.png", 8, 8, seed=i) for i in range(8)]
    files_b = [write_noise(tmp_path / "B" / f"b{i}.png", 8, 8, seed=i) for i in range(8)]
    dataset = UnpairedDataset(files_a, files_b, image_size=8)
    epochs_a = [stem_numbers(dataset, "path_a", range(e * 8, e * 8 + 8)) for e in range(2)]
    epochs_b = [stem_numbers(dataset, "path_b", range(e * 8, e * 8 + 8)) for e in range(2)]
    for order in epochs_a + epochs_b:
        assert sorted(order) == list(range(8))  # every file exactly once per epoch
    assert epochs_a[0] != epochs_a[1]  # reshuffled each epoch
    assert epochs_a[0] != epochs_b[0]  # B does not follow A's order
    pairings = [dict(zip(a, b)) for a, b in zip(epochs_a, epochs_b)]
    assert pairings[0] != pairings[1]  # each A image meets different B images across epochs


def test_bad_image_raises_by_default(domains):
    files_a, files_b = domains
    truncate(files_a[2])
    dataset = UnpairedDataset(files_a, files_b, image_size=16)
    with pytest.raises(ImageLoadError, match="a2.png"):
        for k in range(len(files_a)):
            dataset[k]


def test_skip_bad_images_warns_once_counts_and_continues(domains):
    files_a, files_b = domains
    truncate(files_a[2])
    files_b[1].write_bytes(b"")
    dataset = UnpairedDataset(files_a, files_b, image_size=16, skip_bad_images=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[k] for k in range(24)]  # 4 epochs of A, 6 of B
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("a2.png" in m for m in messages) and any("b1.png" in m for m in messages)
    assert sum(item["skipped"] for item in items) == 4 + 6  # each bad file, once per epoch
    assert not any(
        p.endswith(("a2.png", "b1.png")) for i in items for p in (i["path_a"], i["path_b"])
    )


def test_all_files_bad_is_a_clear_error(tmp_path, domains):
    files_a, files_b = domains
    bad = [tmp_path / "bad0.png", tmp_path / "bad1.png"]
    for path in bad:
        path.write_bytes(b"not an image")
    dataset = UnpairedDataset(files_a, bad, image_size=16, skip_bad_images=True)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="all 2 files of domain B"):
        dataset[0]


def test_invalid_dataset_arguments(domains):
    with pytest.raises(ValueError, match="files_b is empty"):
        UnpairedDataset(domains[0], [], image_size=16)
    with pytest.raises(ValueError, match="load_size"):
        UnpairedDataset(*domains, image_size=16, load_size=8)
    with pytest.raises(IndexError):
        UnpairedDataset(*domains, image_size=16)[-1]


# ---------------------------------------------------------------------------------------------
# StepSampler, resolve_domain_dirs


def test_step_sampler_ranks_are_disjoint_and_resume_exactly():
    batch, world, steps = 4, 3, 5
    per_rank = [
        list(itertools.islice(StepSampler(0, batch, rank=r, world_size=world), steps * batch))
        for r in range(world)
    ]
    assert sorted(sum(per_rank, [])) == list(range(steps * batch * world))
    assert per_rank[1][:batch] == [4, 5, 6, 7]
    resumed = list(itertools.islice(StepSampler(2, batch, rank=1, world_size=world), 3 * batch))
    assert resumed == per_rank[1][2 * batch :]
    with pytest.raises(ValueError, match="rank"):
        StepSampler(0, batch, rank=3, world_size=3)


def test_resolve_domain_dirs_explicit_and_cyclegan_layout(tmp_path):
    for name in ("trainA", "trainB", "testA", "testB", "mine_a", "mine_b"):
        (tmp_path / name).mkdir()
    assert resolve_domain_dirs("", "", root=str(tmp_path)) == (
        tmp_path / "trainA",
        tmp_path / "trainB",
    )
    assert resolve_domain_dirs("", "", root=str(tmp_path), split="test") == (
        tmp_path / "testA",
        tmp_path / "testB",
    )
    explicit = (str(tmp_path / "mine_a"), str(tmp_path / "mine_b"))
    assert resolve_domain_dirs(*explicit) == (tmp_path / "mine_a", tmp_path / "mine_b")


def test_resolve_domain_dirs_errors_name_the_key(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match=r"data\.domain_a.*data\.root"):
        resolve_domain_dirs("", "")
    with pytest.raises(FileNotFoundError, match=r"data\.domain_b"):
        resolve_domain_dirs(str(tmp_path / "a"), str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"data\.domain_b is not set"):
        resolve_domain_dirs(str(tmp_path / "a"), "")
    with pytest.raises(FileNotFoundError, match=r"data\.root.*trainA"):
        resolve_domain_dirs("", "", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        resolve_domain_dirs("", "", root=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not both"):
        resolve_domain_dirs(str(tmp_path / "a"), str(tmp_path / "a"), root=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Real photos


def test_every_shared_photo_and_painting_loads(shared_photo_dir, shared_painting_dir):
    photos, paintings = find_images(shared_photo_dir), find_images(shared_painting_dir)
    dataset = UnpairedDataset(photos, paintings, image_size=64)
    seen_a, seen_b = set(), set()
    for k in range(max(len(photos), len(paintings))):
        item = dataset[k]
        assert item["a"].shape == item["b"].shape == (3, 64, 64)
        for key in ("a", "b"):
            assert torch.isfinite(item[key]).all()
            assert item[key].min() >= -1 and item[key].max() <= 1
        seen_a.add(Path(item["path_a"]))
        seen_b.add(Path(item["path_b"]))
    assert seen_a == set(photos) and seen_b == set(paintings)


# ---------------------------------------------------------------------------------------------
# The loader: errors from workers, unreadable folders


@pytest.mark.parametrize("skip", [False, True])
def test_a_worker_raises_the_same_one_line_error_as_the_main_process(tmp_path, domains, skip):
    """A worker's exception reaches the main process re-created around the worker's whole
    traceback; the loader hands back the original error instead, whatever num_workers is."""
    files_a, files_b = domains
    bad = [tmp_path / "bad0.png", tmp_path / "bad1.png"]
    for path in bad:
        path.write_bytes(b"not an image")
    if skip:  # every file of B bad: the ValueError that ends a skipping run
        files = (files_a, bad)
    else:
        files = ([bad[0]], files_b)
    errors = []
    for num_workers in (0, 2):
        dataset = UnpairedDataset(*files, image_size=16, skip_bad_images=skip)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError) as info:
                take_batches(dataset, start_step=0, steps=1, num_workers=num_workers)
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1])
    assert str(errors[1]) == str(errors[0]) and "\n" not in str(errors[1])
    assert "DataLoader worker" not in str(errors[1]) and "Traceback" not in str(errors[1])
    if not skip:
        assert isinstance(errors[1], ImageLoadError) and errors[1].path == bad[0]
        assert "bad0.png" in str(errors[1]) and "data.skip_bad_images=true" in str(errors[1])


def test_the_cli_reports_a_bad_image_in_one_line_with_workers(tmp_path, image_dirs, capsys):
    from cyclestyle.cli import main
    from tests.helpers import TINY, tiny_overrides

    (image_dirs[0] / "broken.png").write_bytes(b"not an image")
    args = ["train", str(TINY)]
    for item in tiny_overrides(image_dirs, tmp_path / "run", "data.num_workers=2",
                               "train.max_steps=5"):
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0] and "DataLoader worker" not in err[0], err
    assert "Traceback" not in err[0]


def test_unreadable_sub_folders_are_reported(tmp_path, monkeypatch):
    """A sub-folder that cannot be listed (permissions) is warned about and counted, and the
    trainer logs the count; monkeypatched, as root can list any folder."""
    import os

    from cyclestyle.train.data import find_domain_images

    a = tmp_path / "A"
    write_noise(a / "x.png")
    write_noise(a / "locked" / "y.png")
    write_noise(tmp_path / "B" / "z.png")
    scandir = os.scandir

    def refuse_locked(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    unreadable = []
    files_a, files_b = find_domain_images(str(a), str(tmp_path / "B"), unreadable=unreadable)
    assert unreadable == [a / "locked"] and files_a == [a / "x.png"]

    from cyclestyle.train.trainer import Trainer
    from tests.helpers import tiny_config

    out = tmp_path / "run"
    Trainer(tiny_config((a, tmp_path / "B"), out, "train.max_steps=1", "train.log_every=1")).fit()
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["unreadable_folders"] == 1

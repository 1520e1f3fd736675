"""Hostile and broken image files: never a crash or a hang, always a message naming the file.

Every reader of images (load_image, the training dataset, the translate command) meets the same
zoo: zero-byte files, random bytes, truncated PNG/JPEG, text named .png, files with the wrong
extension, decompression bombs (a tiny file declaring 100000x100000 pixels), folders, pipes and
dangling links named like images, and a few hundred seeded mutations of valid files.
"""

from __future__ import annotations

import os
import random
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.imageio import ImageLoadError, load_image, max_image_pixels, set_max_image_pixels
from cyclestyle.train.config import ConfigError, load_config
from cyclestyle.train.data import UnpairedDataset, find_images

REPO = Path(__file__).resolve().parents[1]


# ---- the zoo --------------------------------------------------------------------------------

def _noise(width: int = 40, height: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _encoded(fmt: str, seed: int = 0) -> bytes:
    import io

    buffer = io.BytesIO()
    _noise(seed=seed).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def jpeg_bomb(side: int = 65_000) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to declare side x side pixels."""
    data = bytearray(_encoded("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)  # height, width
    return bytes(data)


BYTES = {  # name -> (file content, loads?)
    "zero_bytes.png": (b"", False),
    "zero_bytes.jpg": (b"", False),
    "text_named.png": (b"this is not an image\n" * 20, False),
    "random.png": (random.Random(1).randbytes(2000), False),
    "random.jpg": (random.Random(2).randbytes(2000), False),
    "random.webp": (random.Random(3).randbytes(2000), False),
    "random.bmp": (random.Random(4).randbytes(2000), False),
    "random.tif": (random.Random(5).randbytes(2000), False),
    "png_signature_then_noise.png": (b"\x89PNG\r\n\x1a\n" + random.Random(6).randbytes(500),
                                     False),
    "truncated.png": (_encoded("PNG")[:600], False),
    "truncated.jpg": (_encoded("JPEG")[:600], False),
    "png_named.jpg": (_encoded("PNG"), True),
    "jpeg_named.png": (_encoded("JPEG"), True),
    "bomb_100000x100000.png": (png_bomb(), False),
    "bomb_65000x65000.jpg": (jpeg_bomb(), False),
}


def make_zoo(folder: Path) -> dict[str, bool]:
    """Write every hostile entry into `folder`; returns name -> whether it should load."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (content, loads) in BYTES.items():
        (folder / name).write_bytes(content)
        expected[name] = loads
    (folder / "folder.png").mkdir()
    _noise(seed=9).save(folder / "folder.png" / "inside.png")  # a real image inside it
    expected["folder.png/inside.png"] = True
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    expected["dangling.png"] = False
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.png")  # opening it to read would block forever
        expected["pipe.png"] = False
    return expected


def _in_thread(fn, timeout: float = 60):
    """fn() in a thread: a hang fails the test instead of freezing the suite."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the test thread
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: a hang"
    if "error" in result:
        raise result["error"]
    return result.get("value")


# ---- load_image -----------------------------------------------------------------------------

ZOO_NAMES = [*BYTES, "folder.png", "dangling.png", "pipe.png"]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_load_image_loads_or_names_the_file(tmp_path, name):
    expected = make_zoo(tmp_path)
    if name not in expected and name != "folder.png":
        pytest.skip(f"{name}: not supported on this platform")
    path = tmp_path / name
    if expected.get(name):
        assert _in_thread(lambda: load_image(path)).mode == "RGB"
        return
    with pytest.raises(ImageLoadError) as info:
        _in_thread(lambda: load_image(path))
    assert str(path) in str(info.value) and info.value.path == path and info.value.reason


@pytest.mark.parametrize(("name", "size"), [("bomb_100000x100000.png", "100000x100000"),
                                            ("bomb_65000x65000.jpg", "65000x65000")])
def test_decompression_bomb_is_refused_from_the_header_with_advice(tmp_path, name, size):
    path = tmp_path / name
    path.write_bytes(BYTES[name][0])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and size in message and "decompression bomb" in message
    assert "data.max_image_pixels" in message and "--max-pixels" in message


def test_folders_pipes_and_links_get_their_own_reason(tmp_path):
    make_zoo(tmp_path)
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path / "folder.png")
    with pytest.raises(ImageLoadError, match="No such file"):
        load_image(tmp_path / "dangling.png")
    if hasattr(os, "mkfifo"):
        with pytest.raises(ImageLoadError, match="not a regular file"):
            _in_thread(lambda: load_image(tmp_path / "pipe.png"))


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        buf = bytearray(data)
        kind = rng.choice(["flip", "truncate", "insert", "delete", "zero"])
        at = rng.randrange(len(buf))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == "delete":
            del buf[at:at + rng.randint(1, 64)]
        else:
            buf[at:at + 32] = bytes(min(32, len(buf) - at))
        out.append(bytes(buf))
    return out


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_fuzzed_files_load_or_fail_naming_the_file(tmp_path, fmt):
    """120 seeded mutations per format: an RGB image or ImageLoadError, nothing else."""
    rng = random.Random(fmt)
    suffix = {"JPEG": ".jpg", "TIFF": ".tif"}.get(fmt, "." + fmt.lower())
    failures = 0
    for i, data in enumerate(_mutations(_encoded(fmt), rng, 120)):
        path = tmp_path / f"m{i:03d}{suffix}"
        path.write_bytes(data)
        try:  # a mutated header can declare a big image: keep decoding small
            image = load_image(path, max_pixels=2_000_000)
        except ImageLoadError as err:
            assert str(path) in str(err) and err.path == path
            failures += 1
        else:
            assert image.mode == "RGB" and image.width * image.height <= 2_000_000
    assert failures > 0  # the mutations do break files


# ---- the bomb limit ------------------------------------------------------------------------

def test_max_image_pixels_option(tmp_path):
    path = tmp_path / "big.png"
    _noise(40, 30).save(path)
    limit_before = Image.MAX_IMAGE_PIXELS
    with max_image_pixels(1000):
        with pytest.raises(ImageLoadError, match="1,200 pixels is above the limit of 1,000"):
            load_image(path)
        assert load_image(path, max_pixels=0).size == (40, 30)  # per call: 0 = no limit
    with max_image_pixels(0):  # 0 = no limit, process-wide
        assert Image.MAX_IMAGE_PIXELS is None and load_image(path).size == (40, 30)
    assert limit_before == Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match=">= 0"):
        set_max_image_pixels(-1)
    assert load_config(None).data.max_image_pixels == 178_956_970
    with pytest.raises(ConfigError, match=r"data\.max_image_pixels: -5 is invalid: .*0 = no limit"):
        load_config(None, ["data.max_image_pixels=-5"])


# ---- the training dataset -------------------------------------------------------------------

def test_dataset_skips_every_bad_file_with_a_warning_naming_it(tmp_path):
    expected = make_zoo(tmp_path / "zoo")
    good_b = tmp_path / "b"
    for i in range(3):
        good_b.mkdir(exist_ok=True)
        _noise(seed=i).save(good_b / f"b{i}.png")
    files = find_images(tmp_path / "zoo")
    assert "folder.png" not in [f.name for f in files]  # a folder is not a file...
    assert tmp_path / "zoo" / "folder.png" / "inside.png" in files  # ...but its images are found
    dataset = UnpairedDataset(files, find_images(good_b), image_size=16, skip_bad_images=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = _in_thread(lambda: [dataset[k] for k in range(2 * len(files))])
    good = {str(tmp_path / "zoo" / n) for n, ok in expected.items() if ok}
    assert {item["path_a"] for item in items} == good
    assert all(item["a"].shape == (3, 16, 16) and torch.isfinite(item["a"]).all() for item in items)
    messages = "\n".join(str(w.message) for w in caught)
    bad = [n for n, ok in expected.items() if not ok]
    assert len(caught) == len(bad)  # once per bad file
    for name in bad:
        assert str(tmp_path / "zoo" / name) in messages, name


def test_dataset_without_skipping_names_the_file_and_the_option(tmp_path):
    bad = tmp_path / "a" / "text_named.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    _noise().save(tmp_path / "b.png")
    dataset = UnpairedDataset([bad], [tmp_path / "b.png"], image_size=16)
    with pytest.raises(ImageLoadError, match=r"text_named\.png.*data\.skip_bad_images=true"):
        dataset[0]


def test_train_cli_stops_with_the_file_named(tmp_path, capsys):
    from cyclestyle.cli import main

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "random.jpg").write_bytes(BYTES["random.jpg"][0])
    (tmp_path / "b").mkdir()
    _noise().save(tmp_path / "b" / "b.png")
    code = main(["train", str(REPO / "configs" / "tiny.yaml"), "--set",
                 f"data.domain_a={tmp_path / 'a'}", "--set", f"data.domain_b={tmp_path / 'b'}",
                 "--set", f"output_dir={tmp_path / 'run'}", "--set", "train.max_steps=1",
                 "--set", "train.progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert str(tmp_path / "a" / "random.jpg") in err and "data.skip_bad_images=true" in err


# ---- the translate command ------------------------------------------------------------------

def test_translate_reports_every_bad_file_and_translates_the_rest(tmp_path):
    from cyclestyle.models import create_generator
    from cyclestyle.translate.runner import plan_jobs, translate_files
    from cyclestyle.translate.translator import Translator

    expected = make_zoo(tmp_path / "zoo")
    torch.manual_seed(0)
    generator = create_generator("unet_attn", base_channels=4, depth=1, channel_mults=[1],
                                 attention_resolutions=[])
    translator = Translator(generator, device="cpu")
    jobs = plan_jobs(tmp_path / "zoo", tmp_path / "out")
    summary = _in_thread(lambda: translate_files(translator, jobs, num_workers=0,
                                                 max_pixels=10_000_000, progress=False))
    failed = {Path(path).relative_to(tmp_path / "zoo").as_posix(): reason
              for path, reason in summary.failed}
    assert set(failed) == {n for n, ok in expected.items() if not ok}
    assert summary.translated == sum(expected.values())
    assert "decompression bomb" in failed["bomb_100000x100000.png"]
    assert all(reason for reason in failed.values())


def _gif_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    _noise().save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "content", "why"), [
    ("anim.gif", _gif_bytes(), "a .gif image, which translate does not read"),
    ("photos", b"\0\x01" + random.Random(7).randbytes(2000), "binary content"),
    ("list.txt", _encoded("PNG"), "binary content"),
    ("latin1.txt", "caf\xe9.png\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset 3\)"),
], ids=["gif", "binary", "png-named-txt", "latin-1-list"])
def test_translate_input_neither_supported_image_nor_text_list_is_one_line(tmp_path, capsys,
                                                                           name, content, why):
    """`--input anim.gif` was read as a list file and failed with "embedded null byte"."""
    import re

    from cyclestyle.cli import main

    path = tmp_path / name
    path.write_bytes(content)
    code = main(["translate", "--checkpoint", str(tmp_path / "never_loaded.pt"), "--input",
                 str(path), "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert re.search(f"--input: {re.escape(repr(str(path)))} is invalid: {why}", err), err
    assert ".jpg, .jpeg, .png" in err and "null byte" not in err
    assert not (tmp_path / "out").exists()

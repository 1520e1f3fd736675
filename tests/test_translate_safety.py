"""`cyclestyle translate` never loses a user's file: inputs, the input tree, existing outputs.

Every input form (an image, a folder, a list file) keeps its outputs out of the input's folders
unless --allow-inside-input, never replaces an input, and leaves an existing output alone
(reported, exit code 1) unless --overwrite or --skip-existing; --skip-existing redoes outputs
that are empty or do not decode. Unreadable sub-folders are reported as failures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.checkpoint import plain_state_dict, save_checkpoint
from cyclestyle.cli import main
from cyclestyle.models import create_generator
from tests.test_translate import make_folder, photo, tree_hashes

TINY_ARGS = {"base_channels": 4, "channel_mults": [1, 1], "depth": 2,
             "attention_resolutions": [], "num_res_blocks": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a tiny conv-only unet_attn with seeded weights (no training needed)."""
    from cyclestyle.train.config import load_config

    config = load_config(None, ["model.generator=unet_attn",
                                f"model.generator_args={json.dumps(TINY_ARGS)}"])
    torch.manual_seed(0)
    models = {name: plain_state_dict(create_generator("unet_attn", **TINY_ARGS))
              for name in ("g_ab", "g_ba")}
    folder = tmp_path_factory.mktemp("tiny_run")
    save_checkpoint({"config": config.to_dict(), "models": models}, folder, step=1, keep=1)
    return folder


def translate(checkpoint: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["translate", "--checkpoint", str(checkpoint), "--input", str(inp), "--output",
                 str(out), "--device", "cpu", "--workers", "0", "--no-progress", *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- the input tree


def test_a_file_input_never_writes_into_its_own_folder(checkpoint, tmp_path, capsys):
    """The reported bug: --input photos/photo.png --output photos --format jpg replaced the
    user's photos/photo.jpg."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(40, 30, seed=1).save(photos / "photo.png")
    photo(40, 30, seed=2).save(photos / "photo.jpg")  # the user's own, unrelated file
    before = tree_hashes(photos)
    for out in (photos, photos / "translated"):
        assert translate(checkpoint, photos / "photo.png", out, "--format", "jpg") == 2
        err = one_line_error(capsys)
        assert f"inside the input folder {photos.resolve()} (the folder of input" in err
        assert "--allow-inside-input" in err
        assert tree_hashes(photos) == before
    # Asked for, the folder may be written to; the existing photo.jpg is still left alone...
    assert translate(checkpoint, photos / "photo.png", photos, "--format", "jpg",
                     "--allow-inside-input") == 1
    assert "EXISTS" in capsys.readouterr().out and tree_hashes(photos) == before
    # ...and no flag ever lets an output replace an input.
    assert translate(checkpoint, photos / "photo.png", photos, "--format", "png",
                     "--allow-inside-input", "--overwrite") == 2
    assert "would overwrite an input image" in one_line_error(capsys)
    assert tree_hashes(photos) == before
    assert translate(checkpoint, photos / "photo.png", photos, "--format", "jpg",
                     "--allow-inside-input", "--overwrite") == 0
    assert tree_hashes(photos)["photo.png"] == before["photo.png"]
    assert tree_hashes(photos)["photo.jpg"] != before["photo.jpg"]  # replaced, as asked


def test_a_list_input_never_writes_into_any_listed_files_folder(checkpoint, tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        photo(40, 30).save(tmp_path / name / f"{name}.png")
    listing = tmp_path / "list.txt"
    listing.write_text("a/a.png\nb/b.png\n")
    before = tree_hashes(tmp_path)
    # b is one listed file's folder; a/out lies under another's; with --format jpg the common
    # root (tmp_path) would put a/a.jpg beside a/a.png.
    for out, extra in ((tmp_path / "b", ()), (tmp_path / "a" / "out", ()),
                       (tmp_path, ("--format", "jpg"))):
        assert translate(checkpoint, listing, out, *extra) == 2, out
        assert "inside the input folder" in one_line_error(capsys)
        assert tree_hashes(tmp_path) == before
    assert translate(checkpoint, listing, tmp_path / "out") == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix()
                  for p in (tmp_path / "out").rglob("*.png")) == ["a/a.png", "b/b.png"]


# ---------------------------------------------------------------- existing outputs


def test_existing_outputs_are_left_alone_and_reported_unless_overwrite(checkpoint, tmp_path,
                                                                      capsys):
    inp = make_folder(tmp_path / "in", 3)
    out = tmp_path / "out"
    out.mkdir()
    photo(40, 30, seed=7).save(out / "p001.png")  # the user's file, where an output would go
    users = (out / "p001.png").read_bytes()
    assert translate(checkpoint, inp, out) == 1
    summary = capsys.readouterr().out
    assert "translated 2 image(s)" in summary and "1 exist (left alone)" in summary
    assert f"EXISTS {out / 'p001.png'}" in summary
    assert "--skip-existing" in summary and "--overwrite" in summary
    assert (out / "p001.png").read_bytes() == users
    assert translate(checkpoint, inp, out, "--overwrite") == 0
    assert "translated 3 image(s)" in capsys.readouterr().out
    assert (out / "p001.png").read_bytes() != users
    assert translate(checkpoint, inp, out, "--overwrite", "--skip-existing") == 2
    assert "--overwrite: True is invalid: given together with --skip-existing" in (
        one_line_error(capsys))


def test_skip_existing_translates_empty_and_undecodable_outputs_again(checkpoint, tmp_path,
                                                                      capsys):
    inp = make_folder(tmp_path / "in", 4)
    out = tmp_path / "out"
    assert translate(checkpoint, inp, out) == 0
    (out / "p001.png").write_bytes(b"")  # zero bytes
    (out / "p003.png").write_bytes((out / "p003.png").read_bytes()[:100])  # truncated
    kept = {p: p.stat().st_mtime_ns for p in (out / "p000.jpg", out / "nested" / "p002.jpg")}
    capsys.readouterr()
    assert translate(checkpoint, inp, out, "--skip-existing") == 0
    assert "translated 2 image(s)" in capsys.readouterr().out
    for name in ("p001.png", "p003.png"):
        with Image.open(out / name) as image:
            image.load()  # complete again
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in kept.items())


# ---------------------------------------------------------------- unreadable sub-folders


def test_an_unreadable_sub_folder_is_reported_as_failed(checkpoint, tmp_path, capsys,
                                                        monkeypatch):
    inp = make_folder(tmp_path / "in", 3)
    locked = inp / "locked"
    locked.mkdir()
    photo(40, 30).save(locked / "hidden.png")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: make the listing fail instead
            real_scandir = os.scandir

            def scandir(path="."):
                if Path(path) == locked:
                    raise PermissionError(13, "Permission denied", str(path))
                return real_scandir(path)

            monkeypatch.setattr(os, "scandir", scandir)
        assert translate(checkpoint, inp, tmp_path / "out") == 1
    finally:
        locked.chmod(0o755)
    summary = capsys.readouterr().out
    assert "translated 3 image(s)" in summary and "1 failed" in summary
    assert f"FAILED {locked}: folder could not be listed" in summary
    assert not (tmp_path / "out" / "locked").exists()


# ---------------------------------------------------------------- the Python API


def test_translate_files_leaves_existing_outputs_alone_by_default(checkpoint, tmp_path):
    from cyclestyle.translate.runner import plan_jobs, translate_files
    from cyclestyle.translate.translator import Translator

    inp = make_folder(tmp_path / "in", 2)
    jobs = plan_jobs(inp, tmp_path / "out")
    jobs[0].target.parent.mkdir(parents=True)
    jobs[0].target.write_bytes(b"mine")
    translator = Translator.from_checkpoint(checkpoint, device="cpu")
    summary = translate_files(translator, jobs, num_workers=0, progress=False)
    assert summary.existing == [str(jobs[0].target)] and summary.translated == 1
    assert jobs[0].target.read_bytes() == b"mine"
    summary = translate_files(translator, jobs, num_workers=0, progress=False, overwrite=True)
    assert summary.translated == 2 and not summary.existing
    assert np.asarray(Image.open(jobs[0].target)).shape == (30, 40, 3)

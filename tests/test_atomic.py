"""Every file the toolkit writes goes through `cyclestyle.atomic`: whole or not at all, with the
permissions a plain open() would give, and an error that names the file."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from cyclestyle import atomic
from cyclestyle import checkpoint as ckpt
from cyclestyle.imageio import save_image_atomic
from cyclestyle.metrics.report import write_json
from cyclestyle.translate.writer import save_atomic


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(atomic.TEMP_SUFFIX))


def test_file_mode_is_what_open_would_give(tmp_path):
    assert 0o666 & ~current_umask() == atomic.FILE_MODE
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic.write_text_atomic(tmp_path / "atomic.txt", "x")
    assert mode(tmp_path / "atomic.txt") == mode(plain)


@pytest.mark.parametrize("writer", ["checkpoint", "metrics_json", "sample_image", "translated"])
def test_every_writer_gives_normal_permissions(tmp_path, writer):
    """mkstemp creates 0600 files: a metrics.json or a translated image nobody else in the
    group can read. Each writer must hand out open()'s permissions instead."""
    image = Image.new("RGB", (4, 4), "red")
    if writer == "checkpoint":
        path = ckpt.save_checkpoint({"models": {"w": torch.ones(2)}}, tmp_path, step=1, keep=1)
    elif writer == "metrics_json":
        path = tmp_path / "metrics.json"
        write_json({"metrics": {"fid": 1.5}}, path)
    elif writer == "sample_image":
        path = tmp_path / "sample.png"
        save_image_atomic(image, path)
    else:
        path = tmp_path / "out" / "a.png"
        save_atomic(image, path, {})
    assert mode(path) == 0o666 & ~current_umask()
    assert leftovers(path.parent) == []


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic.atomic_write(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_write_errors_name_the_target_and_a_full_disk(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as info, atomic.atomic_write(target, "w"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC
    assert f"cannot write {target}" in str(info.value) and "disk may be full" in str(info.value)
    assert not target.exists() and leftovers(tmp_path) == []


def test_unwritable_folder_is_named(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError, match=f"cannot write {blocker / 'x.json'}"):
        atomic.write_text_atomic(blocker / "x.json", "{}")

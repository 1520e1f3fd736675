"""A full disk: every writer fails with a message naming the file, leaves no temp file, and
keeps the previous file intact.

The disk fills up under the real writers (torch.save, PIL): the file object they write to
raises ENOSPC after a few bytes, as the kernel does. torch.save swallows that error and reports
"unexpected pos 1984 vs 1878"; the checkpoint writer must recover the real cause.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle import checkpoint as ckpt
from cyclestyle.imageio import save_image_atomic
from cyclestyle.train.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]


class _FullDisk:
    """A binary file that accepts `budget` bytes, then raises ENOSPC like a full disk."""

    def __init__(self, file, budget: int) -> None:
        self.file, self.budget = file, budget

    def write(self, data) -> int:
        size = len(data.encode()) if isinstance(data, str) else len(memoryview(data).cast("B"))
        if size > self.budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= size
        return self.file.write(data)

    def __getattr__(self, name):  # flush, fileno, seek, tell, close, ...
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture
def full_disk(monkeypatch):
    """After this, files opened with os.fdopen (the atomic writers' temp files) fill up."""
    real = os.fdopen

    def fill_after(budget: int = 100):
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: _FullDisk(real(fd, *a, **kw), budget))

    return fill_after


def _state(value: float) -> dict:
    return {"config": ExperimentConfig().to_dict(), "models": {"w": torch.full((1000,), value)}}


def _assert_disk_full_error(err: OSError, path: Path) -> None:
    assert err.errno == errno.ENOSPC
    assert str(path) in str(err) and "disk may be full" in str(err)


def _no_temp_files(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("budget", [0, 100, 5000], ids=["at-open", "in-header", "in-tensors"])
def test_checkpoint_write_on_a_full_disk(tmp_path, full_disk, budget):
    previous = ckpt.save_checkpoint(_state(1.0), tmp_path, 10, keep=1)
    before = previous.read_bytes()
    full_disk(budget)
    with pytest.raises(OSError) as info:
        ckpt.save_checkpoint(_state(2.0), tmp_path, 20, keep=1)
    _assert_disk_full_error(info.value, ckpt.checkpoint_path(tmp_path, 20))
    folder = ckpt.checkpoint_dir(tmp_path)
    assert _no_temp_files(folder)
    # keep=1 rotation did not run: the previous checkpoint is the one left, byte for byte.
    assert ckpt.list_checkpoints(tmp_path) == [previous] and previous.read_bytes() == before
    assert torch.equal(ckpt.load_checkpoint(tmp_path)["models"]["w"], torch.full((1000,), 1.0))


def test_checkpoint_fsync_failure_is_a_write_error(tmp_path, monkeypatch):
    """Network file systems may report a full disk only at fsync."""
    previous = ckpt.save_checkpoint(_state(1.0), tmp_path, 10, keep=2)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        ckpt.save_checkpoint(_state(2.0), tmp_path, 20, keep=2)
    _assert_disk_full_error(info.value, ckpt.checkpoint_path(tmp_path, 20))
    assert _no_temp_files(previous.parent) and ckpt.list_checkpoints(tmp_path) == [previous]


def test_other_write_errors_name_the_file_without_blaming_the_disk(tmp_path, monkeypatch):
    def broken(obj, f):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match=r"cannot write .*step_00000001\.pt: Input/output error") as info:
        ckpt.save_checkpoint(_state(1.0), tmp_path, 1, keep=1)
    assert "disk may be full" not in str(info.value)
    assert _no_temp_files(ckpt.checkpoint_dir(tmp_path))


def test_sample_grid_on_a_full_disk(tmp_path, full_disk):
    path = tmp_path / "samples" / "step_00000010.png"
    save_image_atomic(Image.new("RGB", (8, 8), "red"), path)
    before = path.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full_disk(100)
    with pytest.raises(OSError) as info:
        save_image_atomic(Image.fromarray(noise), path)
    _assert_disk_full_error(info.value, path)
    assert path.read_bytes() == before and _no_temp_files(path.parent)


def _translate_writer():
    """The translate command's atomic image writer (moving from batch_translate.py)."""
    try:
        from cyclestyle.translate.writer import save_atomic
    except ImportError:
        from cyclestyle.translate.runner import _save_atomic as save_atomic
    return save_atomic


def test_translate_output_on_a_full_disk(tmp_path, full_disk):
    save_atomic = _translate_writer()
    target = tmp_path / "out" / "photo.png"
    save_atomic(Image.new("RGB", (8, 8), "blue"), target, {})
    before = target.read_bytes()
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full_disk(100)
    # An OSError is what the translate writer records as "cannot write" and moves on from.
    with pytest.raises(OSError, match="No space left"):
        save_atomic(Image.fromarray(noise), target, {})
    assert target.read_bytes() == before and _no_temp_files(target.parent)


@pytest.mark.slow
def test_train_cli_reports_a_full_disk_without_a_traceback(image_dirs, tmp_path, full_disk,
                                                          capsys):
    from cyclestyle.cli import main

    full_disk(50_000)  # room for config.yaml and the sample grid, not for a checkpoint
    code = main(["train", str(REPO / "configs" / "tiny.yaml"), "--set",
                 f"data.domain_a={image_dirs[0]}", "--set", f"data.domain_b={image_dirs[1]}",
                 "--set", f"output_dir={tmp_path / 'run'}", "--set", "train.max_steps=1",
                 "--set", "train.sample_every=100", "--set", "train.progress=false"])
    err = capsys.readouterr().err
    assert code == 2
    # The last step writes a sample grid, then a checkpoint: the first write names its file.
    assert "cannot write" in err and "step_00000001" in err and "disk may be full" in err
    assert "Traceback" not in err

"""Atomic file writes: a temp file in the target's folder, renamed over the target when complete.

A crash or a kill at any moment leaves the old file or the new one, never half of one; a failed
write (full disk, quota, read-only folder) removes the temp file and raises an `OSError` that
names the target and, when the disk is full, says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"  # temp names: ".<target name>.<random>.tmp"


def _file_mode() -> int:
    """Permissions a plain open() would give a new file (mkstemp's temp files are 0600).

    Read once at import: flipping the umask while writer threads create files would race."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def _make_temp(path: Path) -> tuple[int, str]:
    """The one temp-name rule: ".<target name>.<random>.tmp" in the target's folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:  # no inodes left, read-only file system, ...
        raise write_error(path, err) from err
    return fd, tmp


def temp_target(name: str) -> str | None:
    """The target's name if `name` is a temp file of an atomic write (else None)."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return None
    target, dot, random_part = name[1:-len(TEMP_SUFFIX)].rpartition(".")
    return target if dot and target and random_part else None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, durable: bool = False) -> Iterator[IO[Any]]:
    """Open a temp file beside `path` for writing; on a clean exit it replaces `path`.

    `durable` also fsyncs the file and its folder, so the new file survives a power cut (for
    checkpoints; images and reports can be written again)."""
    path = Path(path)
    fd, tmp = _make_temp(path)
    with _replace_or_remove(tmp, path):
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
    if durable:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temp path beside `path` for writers that want a file name (ONNX, TorchScript);
    on a clean exit it replaces `path`, on any error it is removed."""
    path = Path(path)
    fd, tmp = _make_temp(path)
    os.close(fd)
    with _replace_or_remove(tmp, path):
        os.chmod(tmp, FILE_MODE)
        yield Path(tmp)


@contextlib.contextmanager
def _replace_or_remove(tmp: str, path: Path) -> Iterator[None]:
    """After the block, rename `tmp` over `path`; on any error remove `tmp` and, for an
    OSError, raise one that names `path`."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_error(path: Path, err: OSError) -> OSError:
    """`err` re-raised with the file it was writing, and what to do when the disk is full."""
    detail = err.strerror or str(err) or type(err).__name__
    message = f"cannot write {path}: {detail}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in detail:
        message += (f"; the disk may be full ({_free_space(path.parent)} free once the partial "
                    "file was removed). Free space or choose another output folder; files "
                    "written before are left as they were")
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB"
    except OSError:
        return "unknown"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one. A
    failed write (full disk, quota) removes the temp file and raises `OSError` naming `path`.
    """
    writer = None
    try:
        with atomic_write(path, durable=True) as f:
            writer = _ErrorRecordingWriter(f)
            import torch

            torch.save(obj, writer)
    except RuntimeError as err:  # torch's writer reports the OSError as a RuntimeError
        if writer is not None and writer.error is not None:
            raise write_error(path, writer.error) from err
        raise


class _ErrorRecordingWriter:
    """A file's `write`, remembering the OSError it raised.

    torch.save's C++ writer swallows it and reports "unexpected pos 1984 vs 1878" instead."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()

"""Checkpoints: atomic writes, safe loads, and networks rebuilt from the config stored inside.

A checkpoint is one `torch.save` file holding only tensors and plain Python values, so it loads
with `weights_only=True`: opening a checkpoint someone sent you cannot execute code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclestyle import __version__

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not a cyclestyle checkpoint."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f"step_{step:08d}.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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


def save_checkpoint(state: dict[str, Any], output_dir: str | Path, step: int,
                    keep: int) -> Path:
    """Save `state` as step_XXXXXXXX.pt and delete all but the newest `keep` checkpoints."""
    state = {"format_version": FORMAT_VERSION, "cyclestyle_version": __version__,
             "step": step, **state}
    path = checkpoint_path(output_dir, step)
    atomic_torch_save(state, path)
    for old in list_checkpoints(output_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints in `output_dir`, oldest first (temp files of interrupted writes excluded)."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing code; clear errors for anything else."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path) or list_checkpoints(path.parent)
        if not found:
            raise CheckpointError(f"no checkpoints (step_*.pt) in {path} or {path}/checkpoints")
        path = found[-1]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for code-carrying files, EOF for truncation
        raise CheckpointError(
            f"cannot load checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}. "
            "cyclestyle loads checkpoints with weights_only=True, so files that carry code or "
            "arbitrary Python objects are refused; a truncated file means an interrupted copy."
        ) from None
    if not isinstance(state, dict) or "format_version" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a cyclestyle checkpoint (no format_version/config)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {state['format_version']}; this "
                              f"cyclestyle ({__version__}) reads up to {FORMAT_VERSION}: upgrade")
    state["path"] = str(path)
    return state


def load_latest(output_dir: str | Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads (a corrupt newest one is skipped with a warning)."""
    import warnings

    for path in reversed(list_checkpoints(output_dir)):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping unreadable checkpoint: {err}", stacklevel=2)
    return None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    state = load_latest(output_dir)
    return Path(state["path"]) if state else None


def build_generators(config: Any) -> tuple[nn.Module, nn.Module]:
    """G_AB and G_BA as the config describes them (config: ExperimentConfig)."""
    from cyclestyle.models import create_generator

    kwargs = config.model.generator_args
    return (create_generator(config.model.generator, **kwargs),
            create_generator(config.model.generator, **kwargs))


def load_generators(path: str | Path) -> tuple[nn.Module, nn.Module, Any]:
    """Rebuild (g_ab, g_ba, config) from a checkpoint alone, in eval mode."""
    from cyclestyle.config import from_dict

    state = load_checkpoint(path)
    config = from_dict(state["config"])
    g_ab, g_ba = build_generators(config)
    g_ab.load_state_dict(state["models"]["g_ab"])
    g_ba.load_state_dict(state["models"]["g_ba"])
    return g_ab.eval(), g_ba.eval(), config

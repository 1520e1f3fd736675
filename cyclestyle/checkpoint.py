"""Checkpoints: atomic writes, safe loads, and networks rebuilt from the config stored inside.

A checkpoint is one `torch.save` file holding only tensors and plain Python values, so it loads
with `weights_only=True`: opening a checkpoint someone sent you cannot execute code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclestyle import __version__
from cyclestyle.atomic import atomic_write, write_error

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")
# Temp files of atomic_torch_save: ".step_00000010.pt.k3j2x1.tmp", ".best.pt.k3j2x1.tmp".
_TEMP_NAME = re.compile(r"^\.(step_\d{8}\.pt|best\.pt)\.[^.]+\.tmp$")
BEST_NAME = "best.pt"  # the step with the lowest held-out FID (eval.every > 0)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not a cyclestyle checkpoint."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f"step_{step:08d}.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one. A
    failed write (full disk, quota) removes the temp file and raises `OSError` naming `path`.
    """
    writer = None
    try:
        with atomic_write(path, durable=True) as f:
            writer = _ErrorRecordingWriter(f)
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


def save_checkpoint(state: dict[str, Any], output_dir: str | Path, step: int,
                    keep: int) -> Path:
    """Save `state` as step_XXXXXXXX.pt, keeping it and the `keep - 1` newest earlier steps.

    The file just written is never deleted, and neither are checkpoints of later steps (left by
    an earlier run in the same folder, or a corrupt newest file a resume skipped): only steps
    before `step` rotate. Temp files of writes a crash interrupted are removed.
    """
    path = checkpoint_path(output_dir, step)
    atomic_torch_save(_with_header(state, step), path)
    found = list_checkpoints(output_dir)
    earlier = [p for p in found if _step_of(p) < step]
    for old in earlier[: max(0, len(earlier) - (keep - 1))]:
        old.unlink(missing_ok=True)
    later = [p.name for p in found if _step_of(p) > step]
    if later and checkpoint_dir(output_dir) not in _WARNED_LATER:
        _WARNED_LATER.add(checkpoint_dir(output_dir))
        log.warning("%s also holds checkpoints of later steps (%s), not from this run's "
                    "history; --resume picks the newest, so move them away if they are stale",
                    checkpoint_dir(output_dir), ", ".join(later))
    remove_stale_temp_files(output_dir)
    return path


_WARNED_LATER: set[Path] = set()


def _step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def remove_stale_temp_files(output_dir: str | Path) -> list[Path]:
    """Delete the temp files of checkpoint writes that a crash or SIGKILL interrupted.

    Only safe while no other process writes to this run's checkpoints (as with rotation)."""
    folder = checkpoint_dir(output_dir)
    stale = [p for p in folder.iterdir() if _TEMP_NAME.match(p.name)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted checkpoint write", path)
    return stale


def save_best_checkpoint(state: dict[str, Any], output_dir: str | Path, step: int) -> Path:
    """Save `state` as best.pt: outside the step_* rotation, so keep-K never deletes it."""
    path = checkpoint_dir(output_dir) / BEST_NAME
    atomic_torch_save(_with_header(state, step), path)
    return path


def _with_header(state: dict[str, Any], step: int) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "cyclestyle_version": __version__,
            "step": step, **state}


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
            f"cannot load checkpoint {path}: {type(err).__name__}: {first_line(err)}. "
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


def load_for_resume(resume: str | Path | bool | None, output_dir: str | Path,
                    model_config: Any) -> dict[str, Any] | None:
    """The state `--resume` continues from: the newest in output_dir (True) or a given file.

    Refuses a checkpoint whose model section differs from `model_config` (a ModelConfig)."""
    if not resume:
        return None
    from cyclestyle.config import ConfigError, from_dict

    # Loaded once: the newest readable checkpoint is found by loading it.
    state = load_latest(output_dir) if resume is True else load_checkpoint(resume)
    if state is None and list_checkpoints(output_dir):
        names = ", ".join(p.name for p in list_checkpoints(output_dir))
        raise CheckpointError(f"--resume: no checkpoint in {checkpoint_dir(output_dir)} can be "
                              f"loaded ({names}; see the warnings above). Move them away to "
                              "start from step 0, or pass --resume FILE with a good copy")
    if state is None:
        log.warning("--resume: no checkpoint in %s yet; starting from step 0",
                    checkpoint_dir(output_dir))
        return None
    saved = from_dict(state["config"])
    if saved.model != model_config:
        raise ConfigError(f"cannot resume from {state['path']}: its model section "
                          f"{saved.model} differs from the config's {model_config}")
    log.info("resuming from %s (step %d)", state["path"], state["step"])
    return state


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies under plain names: torch.compile's `_orig_mod.` prefix is dropped."""
    module = getattr(module, "_orig_mod", module)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message (TorchScript's start with an empty one),
    without its closing full stop."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else "(no message)"

"""Checkpoints: atomic writes, safe loads, and networks rebuilt from the config stored inside.

A checkpoint is one `torch.save` file holding only tensors and plain Python values, so it loads
with `weights_only=True`: opening a checkpoint someone sent you cannot execute code.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclestyle import __version__
from cyclestyle.atomic import atomic_torch_save, temp_target
from cyclestyle.models.factory import ModelConfig, build_generators
from cyclestyle.options import first_line, from_dict

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")
BEST_NAME = "best.pt"  # the step with the lowest held-out FID (eval.every > 0)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not a cyclestyle checkpoint."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f"step_{step:08d}.pt"


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


def _is_checkpoint_name(name: str) -> bool:
    return bool(_NAME.match(name)) or name == BEST_NAME


def _step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def remove_stale_temp_files(output_dir: str | Path) -> list[Path]:
    """Delete the temp files of checkpoint writes that a crash or SIGKILL interrupted.

    Only safe while no other process writes to this run's checkpoints (as with rotation)."""
    folder = checkpoint_dir(output_dir)
    stale = [p for p in folder.iterdir() if _is_checkpoint_name(temp_target(p.name) or "")
             ] if folder.is_dir() else []
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
    """Load a checkpoint without executing code; one-line CheckpointErrors for anything else.

    Checked before unpickling: the file is a torch.save archive at all (a PNG, a YAML file or
    random bytes never reach the unpickler). Checked after: the structure every cyclestyle
    checkpoint has (an integer format_version this version reads, a config and a models dict).
    """
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path) or list_checkpoints(path.parent)
        if not found:
            raise CheckpointError(f"no checkpoints (step_*.pt) in {path} or {path}/checkpoints")
        path = found[-1]
    state = read_torch_file(path)
    _check_structure(state, path)
    state["path"] = str(path)
    return state


def read_torch_file(path: str | Path) -> Any:
    """What a torch.save file holds, loaded with weights_only=True (tensors and plain values
    only: no code runs); a file that is not a torch.save archive never reaches the unpickler."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _check_torch_save_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: never that
        raise CheckpointError(
            f"{path} holds code or Python objects other than tensors and plain values; "
            "refused without running any of it (cyclestyle loads checkpoints with "
            "weights_only=True). Use a checkpoint written by cyclestyle") from None
    except Exception as err:  # RuntimeError from the zip reader, EOFError, ...
        raise CheckpointError(f"{path} is damaged and cannot be read ({_torch_reason(err)}); a "
                              "truncated file usually means an interrupted copy") from None


# torch.save writes a zip archive; before torch 1.6 (or with _use_new_zipfile_serialization=
# False) a pickle that starts with this magic number.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _check_torch_save_file(path: Path) -> None:
    """Refuse files that are not torch.save archives, and TorchScript exports, by their bytes."""
    with path.open("rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a cyclestyle checkpoint; an "
                              "interrupted copy?")
    if not head.startswith(_ZIP_MAGIC) and head != _LEGACY_MAGIC:
        raise CheckpointError(f"{path} is not a cyclestyle checkpoint (not a torch.save file)")
    if head.startswith(_ZIP_MAGIC) and _is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript file (written by `cyclestyle export`), "
                              "not a cyclestyle checkpoint; load it with torch.jit.load")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):  # truncated: torch.load reports it
        return False


def _torch_reason(err: BaseException) -> str:
    """The first sentence of torch's message, without its advice about weights_only."""
    reason = first_line(err).split(". ")[0]
    if "weights_only" in reason:
        return type(err).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: Path | str, key: str, value: Any, why: str, valid: str) -> CheckpointError:
    """The package's error grammar, prefixed with the checkpoint file."""
    return CheckpointError(f"{path}: {key}: {_short(value)} is invalid: {why}; {valid}")


def check_structure(state: Any, path: str | Path) -> None:
    """Refuse what is not a cyclestyle checkpoint this version reads (one-line errors)."""
    _check_structure(state, Path(path))


def _check_structure(state: Any, path: Path) -> None:
    if not isinstance(state, dict) or "format_version" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a cyclestyle checkpoint (no format_version/config)")
    version = state["format_version"]
    readable = f"this cyclestyle ({__version__}) reads formats 1 to {FORMAT_VERSION}"
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad(path, "format_version", version, f"a {type(version).__name__}, not an "
                   "integer", readable)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}; this cyclestyle "
                              f"({__version__}) reads up to {FORMAT_VERSION}: upgrade")
    if version < 1:
        raise _bad(path, "format_version", version, "below 1", readable)
    if not isinstance(state["config"], dict):
        raise _bad(path, "config", state["config"], f"a {type(state['config']).__name__}",
                   "expected the run's config as a mapping")
    if "models" not in state:
        raise CheckpointError(f"{path} is not a complete cyclestyle checkpoint: it has no "
                              "'models' key (the network weights)")
    if not isinstance(state["models"], dict):
        raise _bad(path, "models", state["models"], f"a {type(state['models']).__name__}",
                   "expected a mapping of network name to its state dict")


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


def model_config(state: dict[str, Any]) -> ModelConfig:
    """The model section stored in a loaded checkpoint, validated (errors name the file)."""
    try:
        config = from_dict(state["config"].get("model"), ModelConfig, "model.")
        config.validate()
    except ValueError as err:  # ConfigError: names the key and what is valid
        raise CheckpointError(f"{state.get('path', 'checkpoint')}: {err}") from None
    return config


GENERATORS = ("g_ab", "g_ba")


def load_generators(path: str | Path) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """Rebuild (g_ab, g_ba, stored config as a dict) from a checkpoint alone, in eval mode;
    g_ba is None for a one-way run (model.objective cut or fastcut).

    The exponential moving average of the weights (`state["ema"]`, train.ema_decay > 0) is
    used when the checkpoint holds it: it is what the run kept for translating.
    """
    state = load_checkpoint(path)
    config = model_config(state)
    weights = {name: generator_weights(state, name) for name in stored_generators(state, config)}
    g_ab, *g_ba = generators_from_weights(config, weights, state["path"])
    return g_ab, (g_ba or [None])[0], state["config"]


def stored_generators(state: dict[str, Any], config: ModelConfig) -> tuple[str, ...]:
    """The generators a checkpoint holds: both, or G_AB alone for the one-way objectives."""
    return GENERATORS[:1] if config.one_way else GENERATORS


def generators_from_weights(config: ModelConfig, weights: dict[str, dict[str, torch.Tensor]],
                            where: str) -> tuple[nn.Module, ...]:
    """The generators `config` describes, one per entry of `weights` (name -> state dict), in
    eval mode; `where` prefixes every error (a file, a repo).

    Nothing the weights ask for is allocated before they are checked: the network is first
    built on the `meta` device (shapes only, no memory), every stored tensor is compared with
    it (names, shapes, storage actually in the file) and with finite values, and only then are
    the real networks built. A 3 KB file whose config asks for base_channels=256 used to take
    6 GB of memory before the mismatch was found.
    """
    with torch.device("meta"):
        expected = _build(config, where)[0].state_dict()
    for name, stored in weights.items():
        _check_against(stored, expected, f"{where}: models.{name}")
    for name, stored in weights.items():
        _check_finite(stored, f"{where}: models.{name}")
    networks: list[nn.Module] = []
    while len(networks) < len(weights):  # built in pairs, as a config describes them
        networks += _build(config, where)
    for generator, stored in zip(networks, weights.values()):
        generator.load_state_dict(stored)
    return tuple(generator.eval() for generator in networks[: len(weights)])


def _build(config: ModelConfig, where: str) -> tuple[nn.Module, nn.Module]:
    try:
        return build_generators(config)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:  # a constructor refused
        raise CheckpointError(f"{where}: model section {config.generator!r} with "
                              f"{_short(config.generator_args)} builds no generator "
                              f"({first_line(err)})") from None


def generator_weights(state: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """Generator `name`'s state dict: its EMA weights over the trained ones where the
    checkpoint holds them (`state["ema"][name]`, a state dict or ModelEMA's {"weights": ...})."""
    weights = _tensors(state, f"models.{name}", state["models"].get(name))
    ema = state.get("ema")
    if isinstance(ema, dict) and ema.get(name) is not None:
        averaged = ema[name]
        if isinstance(averaged, dict) and isinstance(averaged.get("weights"), dict):
            averaged = averaged["weights"]
        # Entries the average lacks (buffers it may not keep) come from the trained weights.
        weights = {**weights, **_tensors(state, f"ema.{name}", averaged)}
    return weights


def uses_ema(state: dict[str, Any]) -> bool:
    """Whether `generator_weights` takes the checkpoint's EMA weights."""
    ema = state.get("ema")
    names = [name for name in GENERATORS if name in state.get("models", {})]
    return isinstance(ema, dict) and all(ema.get(name) is not None for name in names)


def _tensors(state: dict[str, Any], key: str, weights: Any) -> dict[str, torch.Tensor]:
    if not isinstance(weights, dict):
        raise _bad(state["path"], key, weights,
                   "missing" if weights is None else f"a {type(weights).__name__}",
                   "expected the generator's state dict (a mapping of names to tensors)")
    for name, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise _bad(state["path"], f"{key}[{name!r}]", value, f"a {type(value).__name__}",
                       "expected a tensor")
    return weights


def _check_against(stored: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   what: str) -> None:
    """Same names and shapes as the network the config builds; each tensor's data present."""
    missing = [key for key in expected if key not in stored]
    if missing:
        raise CheckpointError(f"{what} does not match its model config: {missing[0]!r} is "
                              f"missing ({len(missing)} key(s) missing)")
    unexpected = [key for key in stored if key not in expected]
    if unexpected:
        raise CheckpointError(f"{what} does not match its model config: {unexpected[0]!r} is "
                              f"not in the network the config builds ({len(unexpected)} "
                              "unexpected key(s))")
    for key, want in expected.items():
        got = stored[key]
        if got.shape != want.shape:
            raise CheckpointError(f"{what} does not match its model config: {key!r} has shape "
                                  f"{tuple(got.shape)} in the file, {tuple(want.shape)} in the "
                                  "network the config builds")
        if got.numel() * got.element_size() > got.untyped_storage().nbytes():
            # A stride-0 view: a few bytes in the file posing as a full-size tensor.
            raise CheckpointError(f"{what}: {key!r} has shape {tuple(got.shape)} but the file "
                                  f"holds only {got.untyped_storage().nbytes()} bytes for it")


def _check_finite(stored: dict[str, torch.Tensor], what: str) -> None:
    for key, tensor in stored.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{what}: {key!r} holds NaN or inf values: these weights are "
                                  "broken (a diverged run?); use an earlier checkpoint")


def load_for_resume(resume: str | Path | bool | None, output_dir: str | Path,
                    model_config: ModelConfig) -> dict[str, Any] | None:
    """The state `--resume` continues from: the newest in output_dir (True) or a given file.

    Refuses a checkpoint whose model section differs from `model_config` (a ModelConfig)."""
    if not resume:
        return None
    from cyclestyle.options import ConfigError

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
    saved = from_dict(state["config"].get("model"), ModelConfig, "model.")
    if saved != model_config:
        differ = [f"model.{k}: {getattr(saved, k)!r} there, {getattr(model_config, k)!r} here"
                  for k in vars(saved) if getattr(saved, k) != getattr(model_config, k)]
        raise ConfigError(f"cannot resume from {state['path']}: its model section differs "
                          f"({'; '.join(differ)}); resume with the same model, or start a new "
                          "output_dir")
    log.info("resuming from %s (step %d)", state["path"], state["step"])
    return state


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies under plain names: torch.compile's `_orig_mod.` prefix is dropped."""
    module = getattr(module, "_orig_mod", module)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

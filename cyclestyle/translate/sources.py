"""Generators from anywhere `--checkpoint` (or `Translator.from_pretrained`) may point:

    runs/p2p, runs/p2p/checkpoints/step_00001000.pt   a training checkpoint (EMA weights if kept)
    releases/p2p                                      a release folder (export --format hub)
    hf://user/name, user/name                         a Hugging Face Hub repo holding a release
    pretrained:horse2zebra                            the reference's model zoo (cyclestyle.translate.zoo)
    latest_net_G_A.pth, a folder holding it           pytorch-CycleGAN-and-pix2pix / CUT files

A local path that exists always wins over a repo id of the same spelling. Hub files go into the
Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub) with
huggingface_hub; with HF_HUB_OFFLINE=1 only that cache is read. Both variables are read when a
model is loaded, not when huggingface_hub was imported, so setting them in a running program works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cyclestyle.checkpoint import (
    CheckpointError,
    check_structure,
    generator_weights,
    generators_from_weights,
    load_checkpoint,
    model_config,
    read_torch_file,
    stored_generators,
    uses_ema,
)
from cyclestyle.models.factory import ModelConfig
from cyclestyle.translate import zoo
from cyclestyle.translate.options import HF_PREFIX, REPO_ID
from cyclestyle.translate.release import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    is_release,
    read_release,
    release_config,
    training_summary,
)
from cyclestyle.translate.scale import training_scale

# Reference run folders: CycleGAN saves both directions, pix2pix and CUT one generator.
REFERENCE_PAIR = ("latest_net_G_A.pth", "latest_net_G_B.pth")
REFERENCE_SINGLE = "latest_net_G.pth"


def load_model(source: str | os.PathLike, revision: str | None = None) -> LoadedModel:
    """The generators `source` names (see the module docstring), in eval mode on the CPU."""
    text = os.fspath(source)
    if text.startswith(zoo.PREFIX):
        name = text[len(zoo.PREFIX):]
        entry = zoo.zoo_entry(name)
        return _reference_files({"a2b": zoo.pretrained_path(name)}, text,
                                {"name": name, "url": entry.url}, entry.image_size)
    if text.startswith(HF_PREFIX):
        return load_from_hub(text[len(HF_PREFIX):], revision)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"--revision {revision} applies to Hub repos; {path} is a local path")
        return _load_local(path)
    if REPO_ID.fullmatch(text):
        return load_from_hub(text, revision)
    raise FileNotFoundError(f"checkpoint not found: {path} (neither a local file or folder nor "
                            "a Hub repo id user/name)")


def _load_local(path: Path) -> LoadedModel:
    if path.is_dir():
        if is_release(path):
            return read_release(path)
        if (path / REFERENCE_PAIR[0]).is_file():
            files = {"a2b": path / REFERENCE_PAIR[0]}
            if (path / REFERENCE_PAIR[1]).is_file():
                files["b2a"] = path / REFERENCE_PAIR[1]
            return _reference_files(files, str(path))
        if (path / REFERENCE_SINGLE).is_file():
            return _reference_files({"a2b": path / REFERENCE_SINGLE}, str(path))
        return _from_checkpoint_state(load_checkpoint(path))
    if path.name in (CONFIG_FILE, WEIGHTS_FILE) and is_release(path.parent):
        return read_release(path.parent)
    content = read_torch_file(path)
    if _is_reference(content):
        return _reference_files({"a2b": path}, str(path), content={"a2b": content})
    check_structure(content, path)
    content["path"] = str(path)
    return _from_checkpoint_state(content)


def _is_reference(content: Any) -> bool:
    from cyclestyle.models.reference import is_reference_state_dict

    return is_reference_state_dict(content)


def _from_checkpoint_state(state: dict[str, Any]) -> LoadedModel:
    where = state["path"]
    config = model_config(state)
    names = stored_generators(state, config)
    weights = {name: generator_weights(state, name) for name in names}
    generators = dict(zip(("a2b", "b2a"), generators_from_weights(config, weights, where)))
    data = state["config"].get("data") or {}
    described = release_config(generators["a2b"], training_summary(state),
                               image_size=data.get("image_size"),
                               weights="ema" if uses_ema(state) else "trained",
                               training_scale=training_scale(data))
    return LoadedModel(generators, described, where, state)


def _reference_files(files: dict[str, Path], origin: str, zoo_info: dict | None = None,
                     image_size: int | None = None,
                     content: dict[str, Any] | None = None) -> LoadedModel:
    """Reference generator files (direction -> path) as our networks, checked like ours."""
    from cyclestyle.models.reference import ReferenceFormatError, convert_reference_state_dict

    converted = {}
    for direction, path in files.items():
        state = (content or {}).get(direction)
        state = read_torch_file(path) if state is None else state
        if not _is_reference(state):
            raise CheckpointError(f"{path} is not a generator state dict of "
                                  "pytorch-CycleGAN-and-pix2pix or CUT")
        try:
            converted[direction] = convert_reference_state_dict(state)
        except ReferenceFormatError as err:
            raise CheckpointError(f"{path}: {err}") from None
    first = next(iter(converted.values()))
    if any((c.generator, c.generator_args) != (first.generator, first.generator_args)
           for c in converted.values()):
        raise CheckpointError(f"{origin}: its generator files hold different architectures")
    model = ModelConfig(generator=first.generator, generator_args=first.generator_args)
    networks = generators_from_weights(model, {d: c.state_dict for d, c in converted.items()},
                                       origin)
    generators = dict(zip(converted, networks))
    reference = {"implementation": first.implementation, "netG": first.netg,
                 "file": ", ".join(str(p) for p in files.values()), **(zoo_info or {})}
    # The reference's default --preprocess is resize_and_crop, loading at 286 for 256 crops.
    scale = training_scale({"image_size": image_size}) if image_size else None
    config = release_config(networks[0], reference=reference, image_size=image_size,
                            weights="reference", training_scale=scale)
    return LoadedModel(generators, config, origin)


# --- the Hugging Face Hub ------------------------------------------------------------------

def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    from huggingface_hub import constants

    return _is_true(os.environ.get("HF_HUB_OFFLINE")) or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads, by its own rules, read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return Path(home).expanduser() / "hub"


def load_from_hub(repo_id: str, revision: str | None = None) -> LoadedModel:
    """A release from Hub repo `repo_id` (user/name), through the Hugging Face cache."""
    from cyclestyle import __version__

    if not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"hf://{repo_id}: not a Hub repo id; expected hf://user/name")
    import huggingface_hub
    from huggingface_hub import errors

    offline, cache = hub_offline(), hub_cache_dir()
    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    paths = {}
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            paths[name] = huggingface_hub.hf_hub_download(
                repo_id, name, revision=revision, cache_dir=cache, local_files_only=offline,
                library_name="cyclestyle", library_version=__version__)
        except errors.LocalEntryNotFoundError:
            why = ("HF_HUB_OFFLINE=1 allows no download" if offline
                   else "the Hub could not be reached")
            raise FileNotFoundError(
                f"{where}: {name} is not in the Hugging Face cache ({cache}) and {why}; "
                "download it once online (unset HF_HUB_OFFLINE), or copy the release folder "
                "here and pass its path") from None
        except errors.RepositoryNotFoundError:
            raise FileNotFoundError(f"checkpoint not found: {repo_id} is no local file or "
                                    "folder, and no Hub repository of that name is visible "
                                    "(private? log in with `hf auth login`)") from None
        except errors.RevisionNotFoundError:
            raise ValueError(f"{where}: revision {revision!r} does not exist there") from None
        except errors.EntryNotFoundError:
            raise CheckpointError(f"{where} has no {name}: not a cyclestyle release (made by "
                                  "`cyclestyle export --format hub` or `cyclestyle push`)"
                                  ) from None
    folder = Path(paths[CONFIG_FILE]).parent
    if Path(paths[WEIGHTS_FILE]).parent != folder:  # two revisions: the branch moved between
        raise CheckpointError(f"{where}: the branch changed while downloading; try again")
    return read_release(folder, origin=where)

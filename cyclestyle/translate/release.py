"""Release folders: a trained model in the form the Hugging Face Hub shares models.

    DIR/model.safetensors   both generators, keys prefixed g_ab. / g_ba. (EMA weights if kept)
    DIR/config.json         registry name, constructor arguments, pixel range, training size,
                            directions, package and format versions: all a loader needs
    DIR/README.md           the model card: YAML front matter, how it was trained, evaluation
                            numbers with their N / extractor sha256 / resize, samples, usage
    DIR/metrics.json        the evaluation it reports (when given)
    DIR/samples/            a few translated images (when given)

`write_release` builds the folder beside DIR and moves it in only when complete and read back
identical; `read_release` rebuilds the generators from it with the same checks as a checkpoint
(shapes against a `meta` build before anything is allocated, finite values). safetensors holds
only tensors, so reading a release runs no code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclestyle import __version__
from cyclestyle.atomic import TEMP_SUFFIX
from cyclestyle.checkpoint import CheckpointError, generators_from_weights, plain_state_dict
from cyclestyle.models.factory import ModelConfig
from cyclestyle.options import first_line, from_dict, invalid
from cyclestyle.translate.export import OutputExistsError
from cyclestyle.translate.model_card import model_card
from cyclestyle.translate.options import DIRECTIONS, HF_PREFIX, MAX_SAMPLES, REPO_ID

log = logging.getLogger(__name__)

RELEASE_FORMAT = "cyclestyle-release"
RELEASE_FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
METRICS_FILE, SAMPLES_DIR = "metrics.json", "samples"
RELEASE_ENTRIES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, METRICS_FILE, SAMPLES_DIR)
PREFIXES = {"a2b": "g_ab", "b2a": "g_ba"}  # direction -> key prefix in model.safetensors
PIXEL_RANGE = [-1, 1]


@dataclass
class LoadedModel:
    """Generators from any source (cyclestyle.translate.sources), ready for inference.

    `config` is what a release's config.json holds: registry name, constructor arguments, and
    what is known of the training (`training`) or of the reference file (`reference`)."""

    generators: dict[str, nn.Module]  # direction ("a2b", "b2a") -> network, eval mode
    config: dict[str, Any]
    origin: str  # where it came from, for messages
    state: dict[str, Any] | None = field(default=None, repr=False)  # a training checkpoint's

    def generator(self, direction: str = "a2b") -> nn.Module:
        if direction not in DIRECTIONS:
            raise invalid("direction", direction, "not a direction", "a2b (G_AB) or b2a (G_BA)")
        if direction not in self.generators:
            held = ", ".join(self.generators)
            raise invalid("direction", direction, f"{self.origin} holds one generator ({held})",
                          f"use --direction {held}")
        return self.generators[direction]


def is_release(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


# --- reading -------------------------------------------------------------------------------

def read_release(folder: str | os.PathLike, origin: str | None = None) -> LoadedModel:
    """The generators of a release folder, in eval mode; errors name the folder and the key."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    where = origin or str(folder)
    config = _read_config(folder / CONFIG_FILE, where)
    try:
        model = from_dict({"generator": config["generator"],
                           "generator_args": config["generator_args"]}, ModelConfig, "model.")
        model.validate()
    except ValueError as err:
        raise CheckpointError(f"{where}: {CONFIG_FILE}: {err}") from None
    try:
        tensors = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{where}: {WEIGHTS_FILE} cannot be read ({first_line(err)}); a "
                              "truncated file usually means an interrupted download") from None
    weights = _split_weights(tensors, config["directions"], where)
    networks = generators_from_weights(model, weights, f"{where}: {WEIGHTS_FILE}")
    generators = {direction: net for direction, net in zip(weights, networks)}
    return LoadedModel({d: generators[d] for d in DIRECTIONS if d in generators}, config, where)


def _read_config(path: Path, where: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where}: {CONFIG_FILE} cannot be read ({first_line(err)})") from None
    if not isinstance(config, dict) or config.get("format") != RELEASE_FORMAT:
        raise CheckpointError(f"{where}: {CONFIG_FILE} is not a cyclestyle release config (no "
                              f"\"format\": \"{RELEASE_FORMAT}\")")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{where}: {CONFIG_FILE}: format_version: {version!r} is invalid: "
                              f"not an integer >= 1; this cyclestyle reads 1 to "
                              f"{RELEASE_FORMAT_VERSION}")
    if version > RELEASE_FORMAT_VERSION:
        raise CheckpointError(f"{where}: release format {version}; this cyclestyle ({__version__})"
                              f" reads up to {RELEASE_FORMAT_VERSION}: upgrade")
    directions = config.get("directions")
    if (not isinstance(directions, dict) or not directions
            or any(d not in PREFIXES or PREFIXES[d] != p for d, p in directions.items())):
        raise CheckpointError(f"{where}: {CONFIG_FILE}: directions: {directions!r} is invalid: "
                              f"expected a subset of {PREFIXES}")
    if not isinstance(config.get("generator"), str) or not isinstance(
            config.get("generator_args"), dict):
        raise CheckpointError(f"{where}: {CONFIG_FILE} names no generator (\"generator\" and "
                              "\"generator_args\")")
    return config


def _split_weights(tensors: dict[str, torch.Tensor], directions: dict[str, str],
                   where: str) -> dict[str, dict[str, torch.Tensor]]:
    weights: dict[str, dict[str, torch.Tensor]] = {d: {} for d in directions}
    by_prefix = {prefix: d for d, prefix in directions.items()}
    for key, tensor in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix not in by_prefix or not name:
            raise CheckpointError(f"{where}: {WEIGHTS_FILE}: key {key!r} is not under a "
                                  f"direction's prefix ({', '.join(p + '.' for p in by_prefix)})")
        weights[by_prefix[prefix]][name] = tensor
    empty = [d for d, w in weights.items() if not w]
    if empty:
        raise CheckpointError(f"{where}: {WEIGHTS_FILE} holds no weights for {empty[0]} "
                              f"({directions[empty[0]]}.*), which {CONFIG_FILE} lists")
    return weights


# --- writing -------------------------------------------------------------------------------

def check_release_output(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """`output` as a Path: refused when it is a file, or a non-empty folder unless `overwrite`."""
    path = Path(output).expanduser()
    if path.exists() and not path.is_dir():
        raise invalid("--output", str(path), "an existing file", "a release is a folder; give "
                      "a new or empty folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"output {path} is a folder that is not empty; choose another, "
                                "or pass --overwrite to replace the release files in it")
    return path


def write_release(model: LoadedModel, output: str | os.PathLike, *,
                  metrics: str | os.PathLike | None = None,
                  samples: str | os.PathLike | None = None, overwrite: bool = False,
                  repo_id: str | None = None) -> Path:
    """Write `model` as a release folder at `output` (see the module docstring).

    The folder is built beside `output` and checked (read back, every tensor identical) before
    it is moved in; a failure leaves `output` as it was. With `overwrite`, the release's own
    files in an existing folder are replaced and other files are left alone.
    """
    out = check_release_output(output, overwrite)
    metrics_data = read_metrics(metrics) if metrics is not None else None
    sample_files = pick_samples(samples) if samples is not None else []
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent))
    try:
        _write_files(staging, model, metrics_data, sample_files, repo_id)
        _check_written(staging, model)
        _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def push_release(model: LoadedModel, repo_id: str, *, private: bool = False,
                 metrics: str | os.PathLike | None = None,
                 samples: str | os.PathLike | None = None,
                 message: str = "Upload cyclestyle release") -> str:
    """Build `model`'s release in a temporary folder and upload it to Hub repo `repo_id`
    (created if absent, `private` then); returns the repo's URL. Needs a login (`hf auth
    login` or HF_TOKEN)."""
    import huggingface_hub

    repo_id = repo_id.removeprefix(HF_PREFIX)
    if not REPO_ID.fullmatch(repo_id):
        raise invalid("--repo", repo_id, "not a Hub repo id", "user/name")
    with tempfile.TemporaryDirectory(prefix="cyclestyle-push-") as tmp:
        folder = write_release(model, Path(tmp) / "release", metrics=metrics, samples=samples,
                               repo_id=repo_id)
        api = huggingface_hub.HfApi()
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    return str(url)


def _write_files(folder: Path, model: LoadedModel, metrics: dict | None,
                 samples: list[Path], repo_id: str | None) -> None:
    from safetensors.torch import save_file

    tensors = {f"{PREFIXES[d]}.{k}": v.contiguous()
               for d, net in model.generators.items() for k, v in plain_state_dict(net).items()}
    config = {**model.config, "directions": {d: PREFIXES[d] for d in model.generators}}
    save_file(tensors, folder / WEIGHTS_FILE,
              metadata={"format": "pt", "cyclestyle.generator": config["generator"]})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    copied = []
    if samples:
        (folder / SAMPLES_DIR).mkdir()
        for index, path in enumerate(samples, 1):
            target = folder / SAMPLES_DIR / f"{index:02d}_{path.name}"
            shutil.copyfile(path, target)
            copied.append(target.relative_to(folder).as_posix())
    if metrics is not None:
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / CARD_FILE).write_text(model_card(config, metrics, copied, repo_id))


def _check_written(folder: Path, model: LoadedModel) -> None:
    """Read the new release back: every tensor must equal the source's, bit for bit."""
    loaded = read_release(folder, origin=f"the release being written ({folder})")
    for direction, net in model.generators.items():
        ours, theirs = plain_state_dict(net), plain_state_dict(loaded.generators[direction])
        if ours.keys() != theirs.keys() or any(not torch.equal(v, theirs[k])
                                               for k, v in ours.items()):
            raise RuntimeError(f"the release's {direction} weights differ from the source's "
                               "after writing; nothing was written")


def _move_into(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)  # one rename: the folder appears complete
        return
    written = {entry.name for entry in staging.iterdir()}
    for name in RELEASE_ENTRIES:  # the previous release's files this one does not have
        old = out / name
        if name in written:
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for entry in staging.iterdir():
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A metrics.json written by `cyclestyle evaluate` (checked before any work is done)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--metrics: {path} does not exist (expected the metrics.json "
                                "that `cyclestyle evaluate --out DIR` writes)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise invalid("--metrics", str(path), f"not readable JSON ({first_line(err)})",
                      "the metrics.json of `cyclestyle evaluate`") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise invalid("--metrics", str(path), "no \"metrics\" section",
                      "the metrics.json of `cyclestyle evaluate`")
    return data


def pick_samples(folder: str | os.PathLike) -> list[Path]:
    """The first MAX_SAMPLES images of `folder` (recursive, sorted)."""
    from cyclestyle.imageio import find_images

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise invalid("--samples", str(folder), "not a folder", "a folder of translated images")
    return find_images(folder)[:MAX_SAMPLES]


# --- what a release records ----------------------------------------------------------------

def release_config(generator: nn.Module, training: dict[str, Any] | None = None,
                   reference: dict[str, Any] | None = None,
                   image_size: int | None = None, weights: str = "trained",
                   training_scale: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json's content for generators like `generator` (directions are added on write).

    `training_scale`: the scale the images had when the generator saw them
    (cyclestyle.translate.scale), for translate's warning and --size train."""
    config = {
        "format": RELEASE_FORMAT, "format_version": RELEASE_FORMAT_VERSION,
        "cyclestyle_version": __version__,
        "generator": generator.registry_name, "generator_args": dict(generator.config),
        "stride": int(generator.stride),
        "input": "float32 (N, 3, H, W) RGB, any H x W (padded to the stride and cropped back)",
        "pixel_range": PIXEL_RANGE, "image_size": image_size, "weights": weights,
        "training_scale": training_scale,
    }
    if training is not None:
        config["training"] = training
    if reference is not None:
        config["reference"] = reference
    return config


def training_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What a training checkpoint says about its run: data, steps, precision, losses."""
    config = state["config"]
    data, train, loss = (config.get(k) or {} for k in ("data", "train", "loss"))
    return {
        "domains": {"a": _domain(data, "a"), "b": _domain(data, "b")},
        "step": state.get("step"), "max_steps": train.get("max_steps"),
        "batch_size": train.get("batch_size"), "precision": train.get("precision"),
        "ema_decay": train.get("ema_decay", 0.0),
        "loss": {k: loss.get(k) for k in ("gan_mode", "lambda_cycle", "lambda_identity",
                                           "lambda_perceptual") if k in loss},
        "trained_with": state.get("cyclestyle_version"),
    }


def _domain(data: dict[str, Any], side: str) -> dict[str, Any]:
    """A domain's folder name and, when the folder is still there, its image count."""
    from cyclestyle.imageio import find_images

    folder = data.get(f"domain_{side}") or ""
    if not folder and data.get("root"):
        folder = str(Path(data["root"]) / f"{data.get('split', 'train')}{side.upper()}")
    count = None
    if folder and Path(folder).is_dir():
        try:
            count = len(find_images(folder))
        except (OSError, ValueError):  # unreadable or empty: unknown
            count = None
    return {"name": Path(folder).name if folder else None, "images": count}

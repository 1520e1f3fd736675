"""Experiment configuration: one dataclass per component, one root that YAML maps onto 1:1.

Precedence is command line (`--set key=value`) over YAML over the dataclass defaults. Unknown
keys are errors that list the valid ones, and every value is type-checked, so a typo never
silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cyclestyle.losses import LossConfig

MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("none", "wandb", "tensorboard")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key."""


@dataclass
class DataConfig:
    domain_a: str = ""  # folder of domain-A images (searched recursively)
    domain_b: str = ""  # folder of domain-B images
    root: str = ""  # alternative: CycleGAN layout root/{split}A, root/{split}B
    split: str = "train"
    image_size: int = 256  # training crop, square
    load_size: int = 0  # short side before the crop; 0 = image_size * 286/256 as in CycleGAN
    flip: bool = True
    skip_bad_images: bool = False  # warn and count unreadable files instead of failing
    num_workers: int = 2
    # Decompression-bomb guard: a file declaring more pixels than this is refused from its
    # header, before decoding. PIL's own default (89,478,485) only warns up to twice that;
    # this default is that hard limit, so 100-megapixel photos still load. 0 = no limit.
    max_image_pixels: int = 178_956_970

    def validate(self) -> None:
        _check(self.image_size >= 8, "data.image_size", self.image_size, "an integer >= 8")
        _check(self.max_image_pixels >= 0, "data.max_image_pixels", self.max_image_pixels,
               "an integer >= 0 (0 = no limit)")
        _check(self.load_size == 0 or self.load_size >= self.image_size, "data.load_size",
               self.load_size, f"0 (automatic) or >= data.image_size ({self.image_size})")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        _check(self.split in ("train", "test"), "data.split", self.split, "'train' or 'test'")

    @property
    def resolved_load_size(self) -> int:
        return self.load_size or round(self.image_size * 286 / 256)


@dataclass
class ModelConfig:
    generator: str = "unet_attn"
    discriminator: str = "patchgan"
    # Constructor arguments of the chosen networks; checked against their signatures.
    generator_args: dict[str, Any] = field(default_factory=dict)
    discriminator_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from cyclestyle import models

        for kind, name, args, known in (
            ("generator", self.generator, self.generator_args, models.list_generators()),
            ("discriminator", self.discriminator, self.discriminator_args,
             models.list_discriminators()),
        ):
            if name not in known:
                raise ConfigError(f"model.{kind}: unknown {kind} {name!r}; valid: {', '.join(known)}")
            accepted = (models.generator_arguments(name) if kind == "generator"
                        else models.discriminator_arguments(name))
            unknown = sorted(set(args) - set(accepted))
            if unknown:
                raise ConfigError(f"model.{kind}_args: {', '.join(unknown)} not accepted by "
                                  f"{name!r}; valid: {', '.join(sorted(accepted))}")


@dataclass
class TrainConfig:
    max_steps: int = 200_000
    batch_size: int = 1
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    # Constant LR until decay_start, then linear to 0 at max_steps (the paper: 100 + 100 epochs).
    # A value in (0, 1) is a fraction of max_steps.
    decay_start: float = 0.5
    pool_size: int = 50  # history of generated images shown to the discriminators
    grad_accum_steps: int = 1
    mixed_precision: str = "no"
    seed: int = 0
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    tracker: str = "none"
    project: str = "cyclestyle"
    channels_last: bool = False  # ignored where unsafe (InstanceNorm at batch 1 on CPU)
    compile: bool = False
    cpu: bool = False  # force CPU even when a GPU is present
    progress: bool = True
    # A step whose loss is NaN/inf is skipped (no update) and counted; after this many bad steps
    # in a row training stops. 0 turns the check off, which saves one host sync per step on GPU.
    max_bad_steps: int = 10

    def validate(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accum_steps", "checkpoint_every",
                    "keep_checkpoints", "log_every", "sample_every"):
            value = getattr(self, key)
            _check(value >= 1, f"train.{key}", value, "an integer >= 1")
        _check(self.max_bad_steps >= 0, "train.max_bad_steps", self.max_bad_steps,
               "an integer >= 0 (0 = no check)")
        _check(self.pool_size >= 0, "train.pool_size", self.pool_size, "an integer >= 0")
        _check(self.lr > 0, "train.lr", self.lr, "a positive float")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "train.betas",
               self.betas, "two floats in [0, 1)")
        _check(self.decay_start >= 0, "train.decay_start", self.decay_start,
               "a step >= 0 or a fraction in (0, 1)")
        _check(self.mixed_precision in MIXED_PRECISION, "train.mixed_precision",
               self.mixed_precision, " / ".join(MIXED_PRECISION))
        _check(self.tracker in TRACKERS, "train.tracker", self.tracker, " / ".join(TRACKERS))

    @property
    def decay_start_step(self) -> int:
        if 0 < self.decay_start < 1:
            return int(self.decay_start * self.max_steps)
        return int(self.decay_start)


@dataclass
class EvalConfig:
    """FID/KID of G_AB on held-out images during training; the best step is kept as best.pt."""

    every: int = 0  # steps between evaluations; 0 = never
    domain_a: str = ""  # held-out A images to translate; "" = data.root/testA
    domain_b: str = ""  # real B images to compare against; "" = data.root/testB
    # TorchScript Inception (e.g. inception-2015-12-05-torchscript.pt); "" = torchmetrics'
    # Inception, which needs torch-fidelity and its downloaded weights.
    inception_weights: str = ""
    resize: str = "pil_bicubic"  # or tf1_bilinear, comparable with published FIDs
    max_images: int = 0  # per set; 0 = all
    batch_size: int = 16

    def validate(self) -> None:
        from cyclestyle.metrics.features import RESIZE_MODES

        _check(self.every >= 0, "eval.every", self.every, "an integer >= 0 (0 = off)")
        _check(self.max_images >= 0, "eval.max_images", self.max_images, "an integer >= 0 (0 = all)")
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        _check(self.resize in RESIZE_MODES, "eval.resize", self.resize, " / ".join(RESIZE_MODES))
        if self.inception_weights:
            _check(Path(self.inception_weights).is_file(), "eval.inception_weights",
                   self.inception_weights, "an existing TorchScript file, or '' for torchmetrics'")

    def held_out_dirs(self, data: DataConfig) -> tuple[Path, Path]:
        """(held-out A, real B); defaults to the CycleGAN layout's test split."""
        dirs = []
        for key, given, split in (("domain_a", self.domain_a, "testA"),
                                  ("domain_b", self.domain_b, "testB")):
            if not given and not data.root:
                raise ConfigError(f"eval.{key}: required when eval.every > 0 and data.root is "
                                  "not set (expected a folder of held-out images)")
            folder = Path(given) if given else Path(data.root) / split
            if not folder.is_dir():
                raise ConfigError(f"eval.{key}: {folder} is not a folder of images")
            dirs.append(folder)
        return dirs[0], dirs[1]


@dataclass
class ExperimentConfig:
    output_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> ExperimentConfig:
        _check(bool(self.output_dir), "output_dir", self.output_dir, "a non-empty path")
        for part in (self.data, self.model, self.loss, self.train, self.eval):
            try:
                part.validate()
            except ConfigError:
                raise
            except ValueError as err:  # component validators raise plain ValueError
                raise ConfigError(str(err)) from err
        if self.eval.every:
            self.eval.held_out_dirs(self.data)  # fail now, not after hours of training
        self._check_networks_fit()
        return self

    def _check_networks_fit(self) -> None:
        """Build both networks cheaply and run the discriminator once on a data.image_size crop.

        Catches bad network argument values and an image size the discriminator cannot take
        (PatchGAN with many layers or scales), before data loading or training starts."""
        import logging

        import torch

        from cyclestyle import models

        model, size = self.model, self.data.image_size
        with torch.device("meta"):  # no memory, no RNG draws: only the constructors' checks
            try:
                generator = models.create_generator(model.generator, **model.generator_args)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"model.generator_args: {err}") from None
            try:
                discriminator = models.create_discriminator(model.discriminator,
                                                            **model.discriminator_args)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"model.discriminator_args: {err}") from None
        discriminator = discriminator.to_empty(device="cpu").eval()

        channels = model.discriminator_args.get("in_channels", 3)

        def runs(side: int) -> str | None:
            try:
                with torch.no_grad():
                    discriminator(torch.zeros(1, channels, side, side))
            except Exception as err:  # any failure means "does not fit"
                return f"{type(err).__name__}: {err}"
            return None

        # Convolutional nets that run at some size run at every larger one, so probing at most
        # `largest` px bounds time and memory for big training crops.
        largest = 1024
        problem = runs(min(size, largest))
        if problem:
            low, high = min(size, largest), largest + 1  # runs(low) fails
            if runs(largest) is None:
                while high - low > 1:  # smallest side that runs
                    middle = (low + high) // 2
                    low, high = (low, middle) if runs(middle) is None else (middle, high)
            valid = f"an integer >= {high}" if high <= largest else f"more than {largest} px"
            raise ConfigError(
                f"data.image_size: {size} is too small for model.discriminator "
                f"{model.discriminator!r} with {model.discriminator_args or 'its defaults'} "
                f"({problem}); expected {valid}, or a discriminator with fewer layers or scales")
        stride = getattr(generator, "stride", 1)
        if size % stride:
            padded = -(-size // stride) * stride
            logging.getLogger(__name__).warning(
                "data.image_size=%d is not a multiple of %d, the stride of generator %r: every "
                "crop is padded to %d px for it, which costs compute; a multiple of %d avoids it",
                size, stride, model.generator, padded, stride)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: invalid value {value!r}; expected {valid}")


# --- building from plain data ---------------------------------------------------------------

def from_dict(data: dict[str, Any] | None, cls: type = ExperimentConfig, prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, rejecting unknown keys and wrong types."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got "
                          f"{type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)} at {where}; "
                          f"valid keys: {', '.join(prefix + k for k in fields)}")
    values = {name: _coerce(data[name], hints[name], prefix + name)
              for name in fields if name in data}
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce(value, [a for a in typing.get_args(hint) if a is not type(None)][0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted `no` as false: `mixed_precision: no` means "no".
            return "yes" if value else "no"
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"config type {hint!r} of {key} is not supported")  # a bug, not user error


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML (`3`, `true`, `[1, 2]`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.max_steps=100")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                validate: bool = True) -> ExperimentConfig:
    """Read a YAML file (or defaults when `path` is None), apply overrides, check everything."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, train:, "
                              f"...), got a YAML {type(data).__name__}")
    apply_overrides(data, overrides or [])
    try:
        config = from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None
    return config.validate() if validate else config


def flat_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """All dotted keys, e.g. for `--help` and error messages."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += flat_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys

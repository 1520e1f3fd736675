"""Experiment configuration: one dataclass per component, one root that YAML maps onto 1:1.

Precedence is command line (`--set key=value`) over YAML over the dataclass defaults. Unknown
keys are errors that list the valid ones, and every value is type-checked, so a typo never
silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cyclestyle import options
from cyclestyle.imageio import LOAD_TO_CROP_RATIO, MAX_IMAGE_PIXELS
from cyclestyle.models.factory import ModelConfig
from cyclestyle.options import ConfigError, apply_overrides
from cyclestyle.runtime import PRECISIONS

__all__ = ["ConfigError", "DataConfig", "EvalConfig", "ExperimentConfig", "LossConfig",
           "ModelConfig", "TrainConfig", "flat_keys", "from_dict", "load_config", "resolve_epochs"]

TRACKERS = ("none", "wandb", "tensorboard")
GAN_MODES = ("lsgan", "vanilla", "hinge")
DIFF_AUGMENT_POLICIES = ("color", "translation", "cutout")  # cyclestyle.train.augment
# The reference's --preprocess values (see cyclestyle.train.data.preprocess_image).
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
# Modes whose images differ in size from one another, so they cannot share a batch.
UNCROPPED_MODES = ("scale_width", "none")


@dataclass
class DataConfig:
    domain_a: str = ""  # folder of domain-A images (searched recursively)
    domain_b: str = ""  # folder of domain-B images
    root: str = ""  # alternative: CycleGAN layout root/{split}A, root/{split}B
    split: str = "train"
    image_size: int = 256  # training crop, square
    load_size: int = 0  # short side (scale_width*: width) before the crop; 0 = image_size * 286/256
    # How a training image becomes what the networks see (the reference's --preprocess):
    # resize_and_crop | crop | scale_width | scale_width_and_crop | none (whole images at their
    # own size, batch size 1), see data.preprocess_image.
    preprocess: str = "resize_and_crop"
    flip: bool = True
    skip_bad_images: bool = False  # warn and count unreadable files instead of failing
    num_workers: int = 2
    # Decompression-bomb guard: a file declaring more pixels than this is refused from its
    # header, before decoding (the package's one limit, see cyclestyle.imageio). 0 = no limit.
    max_image_pixels: int = MAX_IMAGE_PIXELS

    def validate(self) -> None:
        _check(self.image_size >= 8, "data.image_size", self.image_size, "an integer >= 8")
        _check(self.max_image_pixels >= 0, "data.max_image_pixels", self.max_image_pixels,
               "an integer >= 0 (0 = no limit)")
        _check(self.load_size == 0 or self.load_size >= self.image_size, "data.load_size",
               self.load_size, f"0 (automatic) or >= data.image_size ({self.image_size})")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        _check(self.split in ("train", "test"), "data.split", self.split, "'train' or 'test'",
               why="not a known split")
        _check(self.preprocess in PREPROCESS_MODES, "data.preprocess", self.preprocess,
               " / ".join(PREPROCESS_MODES), why="not a known preprocessing mode")

    @property
    def resolved_load_size(self) -> int:
        return self.load_size or round(self.image_size * LOAD_TO_CROP_RATIO)


@dataclass
class LossConfig:
    """Loss choices and weights (the YAML `loss:` section maps onto these fields 1:1)."""

    gan_mode: str = "lsgan"
    lambda_cycle: float = 10.0
    # Relative, as in the CycleGAN paper/code: the identity term is weighted
    # lambda_identity * lambda_cycle (0.5 * 10 = 5 by default).
    lambda_identity: float = 0.5
    # Cycle-perceptual term: VGG distance between the reconstruction G_BA(G_AB(a)) and a.
    lambda_perceptual: float = 1.0
    # Content term: VGG distance between the translation G_AB(a) and its source a.
    lambda_content: float = 0.0
    # "torchvision", "random" (tests only) or a path; see cyclestyle.models.vgg.VGGFeatures.
    vgg_weights: str = "torchvision"
    # Up to relu3_1 so that the offline prefix weights (vgg19_normalised_to_relu3_1.pth) suffice.
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1"])
    # R1 penalty (Mescheder et al. 2018): gamma/2 * |grad_x D(x)|^2 on real images, applied
    # lazily every r1_every D steps with its weight scaled by r1_every (StyleGAN2). 0 = off.
    r1_gamma: float = 0.0
    r1_every: int = 16
    # model.objective cut/fastcut: weight of PatchNCE between each image and its translation.
    # None takes the objective's own (Park et al. 2020): cut 1.0 (plus PatchNCE on G_AB(B) vs B,
    # averaged in), fastcut 10.0 (no identity term).
    lambda_nce: float | None = None
    nce_temperature: float = 0.07
    nce_patches: int = 256  # positions sampled per encoder layer and image

    def nce_weight(self, objective: str) -> float:
        if self.lambda_nce is not None:
            return self.lambda_nce
        return 10.0 if objective == "fastcut" else 1.0

    def needs_vgg(self, objective: str = "cyclegan") -> bool:
        """Whether any VGG-based term is switched on (else no VGG needs loading). The one-way
        objectives have no reconstruction, so lambda_perceptual does not apply to them."""
        cycle_perceptual = self.lambda_perceptual > 0 and objective == "cyclegan"
        return cycle_perceptual or self.lambda_content > 0

    def validate(self) -> None:
        """Raise ConfigError naming the first bad key (e.g. `loss.gan_mode`) and what is valid."""
        _check(self.gan_mode in GAN_MODES, "loss.gan_mode", self.gan_mode,
               " / ".join(GAN_MODES), why="not a known GAN loss")
        for key in ("lambda_cycle", "lambda_identity", "lambda_perceptual", "lambda_content"):
            value = getattr(self, key)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            _check(is_number, f"loss.{key}", value, "a finite number >= 0", why="not a number")
            _check(math.isfinite(value) and value >= 0, f"loss.{key}", value,
                   "a finite number >= 0")
        _check(bool(self.vgg_weights), "loss.vgg_weights", self.vgg_weights,
               "'torchvision', 'random' or a path to a .pth state dict", why="empty")
        _check(math.isfinite(self.r1_gamma) and self.r1_gamma >= 0, "loss.r1_gamma",
               self.r1_gamma, "a finite number >= 0 (0 = off)")
        _check(self.r1_every >= 1, "loss.r1_every", self.r1_every, "an integer >= 1")
        if self.lambda_nce is not None:
            _check(math.isfinite(self.lambda_nce) and self.lambda_nce >= 0, "loss.lambda_nce",
                   self.lambda_nce, "a finite number >= 0, or null for the objective's own")
        _check(math.isfinite(self.nce_temperature) and self.nce_temperature > 0,
               "loss.nce_temperature", self.nce_temperature, "a finite number > 0 (CUT: 0.07)")
        _check(self.nce_patches >= 1, "loss.nce_patches", self.nce_patches, "an integer >= 1")
        layers = self.perceptual_layers
        _check(bool(layers), "loss.perceptual_layers", layers,
               "a non-empty list of VGG19 layer names", why="empty")
        from cyclestyle.models.vgg import vgg_layer_names

        valid = vgg_layer_names()
        unknown = [layer for layer in layers if layer not in valid]
        _check(not unknown, "loss.perceptual_layers", layers, "names from " + ", ".join(valid),
               why=f"unknown layer(s) {', '.join(unknown)}")


@dataclass
class TrainConfig:
    max_steps: int = 200_000
    # The reference's --n_epochs / --n_epochs_decay, an alternative to max_steps/decay_start:
    # converted to steps from the dataset size by `resolve_epochs` before training. 0 = unused.
    epochs: int = 0
    decay_epochs: int = 0
    batch_size: int = 1
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    # Constant LR until decay_start, then linear to 0 at max_steps (the paper: 100 + 100 epochs).
    # A value in (0, 1) is a fraction of max_steps.
    decay_start: float = 0.5
    pool_size: int = 50  # history of generated images shown to the discriminators
    grad_accum_steps: int = 1
    # fp32 | bf16 | fp16 | auto. auto: bf16 where it is fast (CUDA with bf16, a CPU with
    # AVX512-BF16 or AMX), fp16 on older CUDA GPUs, else fp32 (see cyclestyle.runtime).
    precision: str = "auto"
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
    # Exponential moving average of the generators' weights, used for samples, held-out
    # evaluation, best.pt, translate and export (cyclestyle.train.ema). 0 = off.
    ema_decay: float = 0.0
    # DiffAugment policy for the discriminators' real and fake inputs (small datasets):
    # any of color, translation, cutout. [] = off.
    diff_augment: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accum_steps", "checkpoint_every",
                    "keep_checkpoints", "log_every", "sample_every"):
            value = getattr(self, key)
            _check(value >= 1, f"train.{key}", value, "an integer >= 1")
        for key in ("epochs", "decay_epochs"):
            value = getattr(self, key)
            _check(value >= 0, f"train.{key}", value, "an integer >= 0 (0 = unused)")
        _check(self.max_bad_steps >= 0, "train.max_bad_steps", self.max_bad_steps,
               "an integer >= 0 (0 = no check)")
        _check(self.pool_size >= 0, "train.pool_size", self.pool_size, "an integer >= 0")
        _check(math.isfinite(self.lr) and self.lr > 0, "train.lr", self.lr,
               "a positive finite float")
        _check(self.seed >= 0, "train.seed", self.seed, "an integer >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "train.betas",
               self.betas, "two floats in [0, 1)")
        _check(math.isfinite(self.decay_start) and self.decay_start >= 0, "train.decay_start",
               self.decay_start, "a step >= 0 or a fraction in (0, 1)")
        _check(self.ema_decay == 0 or 0 < self.ema_decay < 1, "train.ema_decay", self.ema_decay,
               "0 (off) or a decay in (0, 1), e.g. 0.999")
        unknown = [p for p in self.diff_augment if p not in DIFF_AUGMENT_POLICIES]
        _check(not unknown, "train.diff_augment", self.diff_augment,
               "a list of " + " / ".join(DIFF_AUGMENT_POLICIES), why="unknown policy")
        _check(self.precision in PRECISIONS, "train.precision", self.precision,
               " / ".join(PRECISIONS), why="not a known precision" + _yaml_bool_hint(self.precision))
        _check(self.tracker in TRACKERS, "train.tracker", self.tracker, " / ".join(TRACKERS),
               why="not a known tracker" + _yaml_bool_hint(self.tracker))

    @property
    def decay_start_step(self) -> int:
        if 0 < self.decay_start < 1:
            return int(self.decay_start * self.max_steps)
        return int(self.decay_start)


# Held-out folders of the CycleGAN layout, first found wins: a validation split, else the test one.
HELD_OUT_SPLITS = ("val", "test")


@dataclass
class EvalConfig:
    """FID/KID on held-out images during training, both directions: G_AB(held-out A) against
    held-out B, and G_BA(held-out B) against held-out A. The best step is kept as best.pt."""

    every: int = 0  # steps between evaluations; 0 = never
    domain_a: str = ""  # held-out A images; "" = data.root/valA, else data.root/testA
    domain_b: str = ""  # held-out B images; "" = data.root/valB, else data.root/testB
    # Which FID decides best.pt: mean (of both directions), a2b (G_AB's) or b2a (G_BA's).
    best: str = "mean"
    # TorchScript Inception (e.g. inception-2015-12-05-torchscript.pt); "" = torchmetrics'
    # Inception, which needs torch-fidelity and its downloaded weights.
    inception_weights: str = ""
    resize: str = "pil_bicubic"  # or tf1_bilinear, comparable with published FIDs
    max_images: int = 0  # per set; 0 = all
    batch_size: int = 16

    def validate(self) -> None:
        from cyclestyle.metrics.options import BEST_BY
        from cyclestyle.metrics.resize import RESIZE_MODES

        _check(self.every >= 0, "eval.every", self.every, "an integer >= 0 (0 = off)")
        _check(self.max_images >= 0, "eval.max_images", self.max_images, "an integer >= 0 (0 = all)")
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        _check(self.resize in RESIZE_MODES, "eval.resize", self.resize, " / ".join(RESIZE_MODES),
               why="not a known resize mode")
        _check(self.best in BEST_BY, "eval.best", self.best, " / ".join(BEST_BY),
               why="not a direction of the held-out FID")
        if self.inception_weights:
            _check(Path(self.inception_weights).is_file(), "eval.inception_weights",
                   self.inception_weights, "an existing TorchScript file, or '' for torchmetrics'",
                   why="no such file")

    def held_out_dirs(self, data: DataConfig, required: bool = True) -> tuple[Path, Path] | None:
        """(held-out A, held-out B): eval.domain_a/b, else data.root's valA/valB, else its
        testA/testB. Missing: a ConfigError naming the key, or None when not `required`."""
        try:
            return self._held_out_dir("a", data), self._held_out_dir("b", data)
        except ConfigError:
            if required:
                raise
            return None

    def _held_out_dir(self, side: str, data: DataConfig) -> Path:
        key, given = f"eval.domain_{side}", getattr(self, f"domain_{side}")
        if given:
            folder = Path(given)
        elif data.root:
            splits = [Path(data.root) / f"{split}{side.upper()}" for split in HELD_OUT_SPLITS]
            folder = next((path for path in splits if path.is_dir()), None)
            if folder is None:
                raise ConfigError(f"{key}: not set and data.root {data.root} has no "
                                  f"{' or '.join(p.name for p in splits)} folder of held-out images")
        else:
            raise ConfigError(f"{key}: required when eval.every > 0 and data.root is not set "
                              "(expected a folder of held-out images)")
        if not folder.is_dir():
            raise ConfigError(f"{key}: {folder} is not a folder of images")
        return folder


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
        # Whole images of different sizes cannot be stacked into one batch; grad_accum_steps
        # gives the larger effective batch instead (size buckets would reorder the stream,
        # which must stay a pure function of (seed, step) for exact resume).
        _check(self.data.preprocess not in UNCROPPED_MODES or self.train.batch_size == 1,
               "data.preprocess", self.data.preprocess,
               "train.batch_size=1 with it (train.grad_accum_steps for a larger effective "
               "batch), or a cropping mode: resize_and_crop / crop / scale_width_and_crop",
               why=f"its images differ in size, so they cannot be batched "
               f"(train.batch_size={self.train.batch_size})")
        self._check_output_outside_data()
        self._check_networks_fit()
        return self

    def _check_output_outside_data(self) -> None:
        """output_dir inside an image folder would make its samples/*.png training (or held-out)
        images of the next run that lists that folder, e.g. on --resume."""
        output = Path(self.output_dir).expanduser().resolve()
        data, root = self.data, Path(self.data.root)
        folders = [("data.domain_a", data.domain_a), ("data.domain_b", data.domain_b)]
        if data.root:  # the image folders are root/{split}A and root/{split}B, not root
            folders += [("data.root", root / f"{data.split}{d}") for d in "AB"]
        held_out = self.eval.held_out_dirs(data, required=False)  # also read for samples
        if held_out:
            folders += [("eval.domain_a", held_out[0]), ("eval.domain_b", held_out[1])]
        for key, folder in folders:
            images = Path(folder).expanduser().resolve() if folder else None
            _check(images is None or not output.is_relative_to(images), "output_dir",
                   self.output_dir, f"a folder outside {images}",
                   why=f"it lies inside the image folder {images} ({key}), so its "
                   "samples/*.png would be read as images of that folder")

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


def resolve_epochs(config: ExperimentConfig, dataset_size: int,
                   world_size: int = 1) -> ExperimentConfig:
    """Convert train.epochs/decay_epochs to train.max_steps/decay_start, in place; returns config.

    As in the reference, an epoch is max(len(A), len(B)) images (`dataset_size`); one step
    consumes the effective batch, batch_size * world_size * grad_accum_steps images, so
    max_steps = ceil((epochs + decay_epochs) * N / batch) and decay_start = ceil(epochs * N /
    batch). A max_steps or decay_start that was set (in the YAML or with --set; in a config
    built in code: one that differs from its default) must agree, else a ConfigError; an
    already resolved config therefore resolves to itself, so calling this twice (CLI, then
    Trainer) is harmless. No epochs: unchanged.
    """
    tc = config.train
    if not (tc.epochs or tc.decay_epochs):
        return config
    _check(dataset_size >= 1, "dataset size", dataset_size, "at least one image per domain")
    batch = tc.batch_size * world_size * tc.grad_accum_steps
    max_steps = math.ceil((tc.epochs + tc.decay_epochs) * dataset_size / batch)
    decay_start = math.ceil(tc.epochs * dataset_size / batch)
    defaults, given = TrainConfig(), options.given_keys(tc)
    form = (f"train.epochs={tc.epochs} + train.decay_epochs={tc.decay_epochs} over {dataset_size} "
            f"images per epoch at an effective batch of {batch} (batch_size {tc.batch_size} x "
            f"{world_size} processes x grad_accum_steps {tc.grad_accum_steps})")
    for key, steps, default in (("max_steps", max_steps, defaults.max_steps),
                                ("decay_start", decay_start, defaults.decay_start)):
        value = getattr(tc, key)
        value_step = tc.decay_start_step if key == "decay_start" else value
        was_set = key in given if given is not None else value != default
        _check(not was_set or value_step == steps, f"train.{key}", value,
               f"{steps} (what {form} give), or only one of the two forms",
               why="disagrees with train.epochs/decay_epochs")
    tc.max_steps, tc.decay_start = max_steps, float(decay_start)
    import logging

    logging.getLogger(__name__).info("%s = train.max_steps=%d, train.decay_start=%d",
                                     form, max_steps, decay_start)
    return config


def _check(ok: bool, key: str, value: Any, valid: str, why: str = "out of range") -> None:
    options.check(ok, key, value, why, "expected " + valid)


def _yaml_bool_hint(value: Any) -> str:
    """Why a string key holds 'no' or 'yes': options reads YAML's booleans back that way."""
    spellings = {"no": "off/no as false", "yes": "on/yes as true"}
    return f" (YAML reads unquoted {spellings[value]}: quote it)" if value in spellings else ""


# --- building from plain data ---------------------------------------------------------------

def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Read configs of cyclestyle 0.1: `train.mixed_precision: no|bf16|fp16` -> `precision`."""
    train = data.get("train")
    if isinstance(train, dict) and "mixed_precision" in train and "precision" not in train:
        train = dict(train)
        old = train.pop("mixed_precision")
        train["precision"] = {"no": "fp32", False: "fp32"}.get(old, old)
        data = {**data, "train": train}
    return data


def from_dict(data: dict[str, Any] | None, cls: type | None = None, prefix: str = "") -> Any:
    """Build `cls` (default: ExperimentConfig) from nested dicts; unknown keys are errors."""
    if cls is None or cls is ExperimentConfig:
        return options.from_dict(_migrate(data or {}), ExperimentConfig, prefix)
    return options.from_dict(data, cls, prefix)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                validate: bool = True) -> ExperimentConfig:
    """Read a YAML file (or defaults when `path` is None), apply overrides, check everything."""
    data = options.read_yaml_mapping(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    try:
        config = from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None
    return config.validate() if validate else config


def flat_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """All dotted keys of the training config, e.g. for `--help` and error messages."""
    return options.flat_keys(cls or ExperimentConfig, prefix)

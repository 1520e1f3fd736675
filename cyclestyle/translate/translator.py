"""Translate images with a trained generator: `Translator` for one image, `translate_files` for
whole folders (cyclestyle/translate/runner.py; its command line: cyclestyle/translate/cli.py).

    translator = Translator.from_checkpoint("runs/p2p", direction="a2b")
    painting = translator.translate(Image.open("photo.jpg"))  # same size, alpha kept
    Translator.from_pretrained("hf://user/photo2painting")  # or a release folder, pretrained:NAME

By default an image is translated at its own size: the generator pads to its stride and crops
back, so the output has exactly the input's width and height. `size`/`max_size` rescale first
(the output then has the rescaled size); `tile` translates big images in blended tiles
normalised with whole-image statistics (cyclestyle/translate/tiling.py). Video frames go
through `translate_frames`, with statistics averaged over frames (cyclestyle/translate/video.py).
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from PIL import Image
from torch import nn

from cyclestyle.imageio import alpha_of, pil_to_tensor, tensor_to_pil, to_rgb
from cyclestyle.models.layers import (
    check_statistics_supported,
    instance_norms_as_group_norms,
    is_per_input_norm,
)
from cyclestyle.models.norm_stats import (
    FixedStatistics,
    RecordStatistics,
    StatisticsSource,
    norm_statistics,
)
from cyclestyle.options import invalid
from cyclestyle.runtime import PRECISIONS, describe_precision, resolve_precision
from cyclestyle.translate.options import DIRECTIONS, MIN_SIDE
from cyclestyle.translate.scale import TrainingScale
from cyclestyle.translate.tiling import (
    TILE_STATS,
    check_tiling,
    downscale_to_tile,
    image_statistics,
    tiled_apply,
)

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_TILE_OVERLAP = 64


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def scaled_size(width: int, height: int, size: int | TrainingScale | None = None,
                max_size: int | TrainingScale | None = None) -> tuple[int, int]:
    """(width, height) after rescaling the long side to `size`, or down to `max_size`; a
    TrainingScale instead rescales to the scale the generator was trained at."""
    if size is not None and max_size is not None:
        raise ValueError("give size or max_size, not both")
    if isinstance(size or max_size, TrainingScale):  # --size train / --max-size train
        return (size or max_size).rescaled(width, height, shrink_only=size is None)
    target = size if size is not None else max_size
    if target is None or (size is None and max(width, height) <= target):
        return width, height
    if target < MIN_SIDE:
        raise ValueError(f"size/max_size={target} is below the minimum of {MIN_SIDE} pixels")
    scale = target / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_image_size(width: int, height: int, what: str = "image") -> None:
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"{what} is {width}x{height}; cyclestyle translates images of at least "
                         f"{MIN_SIDE}x{MIN_SIDE} pixels")


def read_alpha(path: str | os.PathLike) -> Image.Image | None:
    """The file's alpha channel as an upright 'L' image, or None when it has none.

    `load_image` composites transparency onto white for the RGB; this recovers the mask so the
    translated image can carry it again.
    """
    from PIL import ImageOps

    with Image.open(path) as img:
        return alpha_of(ImageOps.exif_transpose(img))


class Translator:
    """A generator ready for inference: device, precision, rescaling and tiling decided once.

    The Translator takes the generator over: it is moved to `device`, set to eval mode, frozen
    and, with `channels_last` (the default on CPU), converted by `to_fast_cpu_layout` in place.
    `batch_size` defaults to 1 on CPU (larger batches were slower there: scripts/
    bench_translate.py) and to 4 on GPU.
    """

    def __init__(self, generator: nn.Module, device: str | torch.device | None = None,
                 precision: str = "auto", tile: int | None = None,
                 tile_overlap: int = DEFAULT_TILE_OVERLAP, size: int | None = None,
                 max_size: int | None = None, batch_size: int | None = None,
                 channels_last: bool | None = None, tile_stats: str = "image",
                 tile_calibration: int = 0) -> None:
        self.device = torch.device(device or default_device())
        on_cpu = self.device.type == "cpu"
        _check_settings(self.device, precision, tile, tile_overlap, batch_size)
        _check_statistics(tile_stats, tile_calibration)
        scaled_size(MIN_SIDE, MIN_SIDE, size, max_size)  # validates the pair
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.channels_last = on_cpu if channels_last is None else channels_last
        if self.channels_last:
            to_fast_cpu_layout(self.generator)
        self.precision, self.precision_reason = resolve_precision(precision, self.device)
        log.info("translate precision: %s", describe_precision(self.precision, self.precision_reason))
        self.tile, self.tile_overlap = tile, tile_overlap
        self.tile_stats, self.tile_calibration = tile_stats, tile_calibration
        self._statistics_checked = False
        # Without per-input norms (e.g. the demo's generator) there are no statistics to share:
        # tiles and frames are translated alone, with no pass to measure statistics.
        self.has_statistics = any(is_per_input_norm(m) for m in self.generator.modules())
        self.size, self.max_size = size, max_size
        self.batch_size = batch_size or (1 if on_cpu else 4)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, direction: str = "a2b",
                        **kwargs) -> Translator:
        """Rebuild G_AB (a2b) or G_BA (b2a) from a checkpoint file or run folder alone."""
        from cyclestyle.checkpoint import load_generators

        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r}; choose 'a2b' (G_AB) or 'b2a' (G_BA)")
        g_ab, g_ba, config = load_generators(path)
        if direction == "b2a" and g_ba is None:
            objective = (config.get("model") or {}).get("objective")
            raise ValueError(f"direction: 'b2a' is invalid: {path} was trained one-way (model."
                             f"objective {objective}) and holds only G_AB; use direction a2b")
        return cls(g_ab if direction == "a2b" else g_ba, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, direction: str = "a2b",
                        revision: str | None = None, **kwargs) -> Translator:
        """G_AB (a2b) or G_BA (b2a) from a training checkpoint, a release folder, a Hub repo
        (`hf://user/name` or `user/name`, at `revision`), `pretrained:NAME` (the reference's
        model zoo) or a pytorch-CycleGAN-and-pix2pix / CUT generator file
        (cyclestyle.translate.sources). Other arguments go to the constructor."""
        from cyclestyle.translate.sources import load_model

        return cls(load_model(path_or_repo_id, revision).generator(direction), **kwargs)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST_DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, batch: torch.Tensor, stats: StatisticsSource | None = None,
                 ) -> torch.Tensor:
        """The generator on a prepared `batch` (N, 3, H, W) in [-1, 1], in the translator's
        layout and precision, its norms given statistics by `stats` (default: their own); no
        tiling, no clamping. Call it under torch.inference_mode()."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if stats is not None and not self._statistics_checked:
            check_statistics_supported(self.generator)  # a norm left out would go unnoticed
            self._statistics_checked = True
        supplied = contextlib.nullcontext() if stats is None else norm_statistics(stats)
        with self._autocast(), supplied:
            return self.generator(batch).float()

    def _tiles_agree(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) translated in tiles normalised with whole-image statistics."""
        stats = image_statistics(self.forward, image, self.tile, self.tile_overlap,
                                 self.tile_calibration, self.batch_size)
        return self._tiled(image, FixedStatistics(stats))

    def _tiled(self, images: torch.Tensor, stats: StatisticsSource | None) -> torch.Tensor:
        return tiled_apply(lambda batch: self.forward(batch, stats), images, self.tile,
                           self.tile_overlap, max_batch=self.batch_size)

    def _needs_tiles(self, images: torch.Tensor) -> bool:
        return self.tile is not None and max(images.shape[-2:]) > self.tile

    @torch.inference_mode()
    def translate_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 3, H, W) float32 in [-1, 1] on the translator's device.

        No rescaling happens here (it is done on the PIL image, before).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        check_image_size(images.shape[3], images.shape[2])
        images = images.to(self.device, torch.float32)
        if not self._needs_tiles(images):
            out = torch.cat([self.forward(chunk) for chunk in images.split(self.batch_size)])
        elif self.tile_stats == "tile" or not self.has_statistics:
            out = self._tiled(images, None)
        else:
            out = torch.cat([self._tiles_agree(image[None]) for image in images])
        return out.clamp_(-1, 1)

    @torch.inference_mode()
    def translate_frames(self, frames: torch.Tensor,
                         stats: StatisticsSource | None = None) -> torch.Tensor:
        """Consecutive video frames (B, 3, H, W) in [-1, 1] as one pass, normalised with
        `stats` (a `RunningStatistics.batch`; None: each frame's own statistics). Frames larger
        than `tile` go in tiles, each normalised with its frame's statistics from one pass over
        the downscaled frames (no calibration)."""
        frames = frames.to(self.device, torch.float32)
        if stats is None or not self.has_statistics:
            return self.translate_tensor(frames)
        if not self._needs_tiles(frames):
            return self.forward(frames, stats).clamp_(-1, 1)
        record = RecordStatistics(stats)
        self.forward(downscale_to_tile(frames, self.tile), record)
        out = [self._tiled(frame[None], FixedStatistics(
            [(layer, moments.select(b)) for layer, moments in record.recorded]))
            for b, frame in enumerate(frames)]
        return torch.cat(out).clamp_(-1, 1)

    def prepare(self, image: Image.Image) -> Image.Image:
        """Rescale as configured (`size`/`max_size`); checks the minimum size."""
        width, height = scaled_size(*image.size, self.size, self.max_size)
        check_image_size(width, height)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        return image

    def translate(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        """Translate one PIL image (alpha kept) or a tensor (3, H, W) / (N, 3, H, W) in [-1, 1].

        Tensors come back with the input's shape, dtype float32, on the input's device.
        """
        if isinstance(image, torch.Tensor):
            batch = image.unsqueeze(0) if image.dim() == 3 else image
            out = self.translate_tensor(batch).to(image.device)
            return out[0] if image.dim() == 3 else out
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or a tensor, got {type(image).__name__}")
        alpha = alpha_of(image)
        rgb = self.prepare(to_rgb(image))
        out = tensor_to_pil(self.translate_tensor(pil_to_tensor(rgb)[None])[0])
        if alpha is not None:
            out.putalpha(alpha.resize(out.size, Image.Resampling.LANCZOS))
        return out


def _check_settings(device: torch.device, precision: str, tile: int | None, tile_overlap: int,
                    batch_size: int | None) -> None:
    if precision not in PRECISIONS:
        raise invalid("precision", precision, "not a known precision", " / ".join(PRECISIONS))
    if precision == "fp16" and device.type != "cuda":
        raise invalid("precision", precision, f"fp16 needs a CUDA device (got {device})",
                      "use auto, bf16 or fp32 on CPU")
    if tile is not None:
        check_tiling(tile, tile_overlap, MIN_SIDE)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")


def _check_statistics(tile_stats: str, tile_calibration: int) -> None:
    if tile_stats not in TILE_STATS:
        raise invalid("tile_stats", tile_stats, "not a statistics extent", " / ".join(TILE_STATS))
    if not isinstance(tile_calibration, int) or tile_calibration < 0:
        raise invalid("tile_calibration", tile_calibration, "not a count of passes",
                      "an integer >= 0")


def to_fast_cpu_layout(generator: nn.Module) -> nn.Module:
    """Channels-last memory format, with each InstanceNorm2d replaced by the same normalisation
    as a GroupNorm (one group per channel); in place, for inference.

    Why, measured on CPU (scripts/bench_translate.py): convolutions run faster in channels_last,
    and unet_attn's attention then takes torch's flash path instead of building the T x T
    matrix (about 3x faster at 1024x1024). But InstanceNorm2d copies channels_last tensors to
    contiguous and back, which costs more than the convolutions gain; GroupNorm works in
    channels_last directly. Outputs agree with the original to float32 rounding (about 1e-5).
    Not for training: channels_last gradients through InstanceNorm at batch 1 are wrong on CPU
    in torch 2.14 (cyclestyle.models.channels_last_is_safe).
    """
    instance_norms_as_group_norms(generator).requires_grad_(False)
    return generator.to(memory_format=torch.channels_last)




"""Finding, loading, converting and saving images: every file becomes an 8-bit RGB PIL image.

This module holds the one conversion between tensors in [-1, 1] and 8-bit pixels
(`to_uint8` / `from_uint8` and their PIL forms), the one alpha rule, the one decompression-bomb
limit (`MAX_IMAGE_PIXELS`), image grids, and the atomic image save. torch is imported only by
the functions that need it, so configs can read the limit without it.

Training, translation and evaluation all read images through `load_image`, so the decisions
about odd files live here once:

- EXIF orientation is applied (phone photos are stored sideways with an orientation tag).
- Transparency (RGBA, LA, PA, palette or colour-key transparency) is composited onto white:
  a transparent background should look like paper, not like whatever colour the hidden RGB
  values happen to hold (often black).
- CMYK is converted with PIL's naive formula; an embedded ICC profile is ignored (as it is for
  RGB files), which can shift colours slightly but never fails.
- 16-bit images ("I;16", "I;16B", "I") are scaled 0..65535 -> 0..255. PIL's own
  convert("L") clips them at 255, turning almost every pixel white. 16-bit RGB PNGs are
  decoded by PIL to 8 bits per channel (high byte), which is already a correct scaling.
- Float images ("F") are taken as 0..1 when every value lies in [0, 1], else as 0..255
  (clipped); NaN becomes 0.
- Decompression bombs (a small file declaring, say, 100000x100000 pixels) are refused from the
  header, before any pixel is decoded, when width x height exceeds the limit: `max_pixels`, or
  else the process-wide one (`set_max_image_pixels`, default PIL's Image.MAX_IMAGE_PIXELS).
- Folders, pipes and devices named like images are refused without being opened (a named pipe
  would block the reader forever).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageOps

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# The decompression-bomb limit of every command: PIL's own default (89,478,485) only warns up to
# twice that, and this is that hard limit, so 100-megapixel photos still load.
MAX_IMAGE_PIXELS = 2 * 89_478_485

# CycleGAN resizes to 286 and crops 256; data.load_size 0 keeps that ratio for other crop sizes
# (training, and translate's idea of the training scale).
LOAD_TO_CROP_RATIO = 286 / 256

# Modes whose alpha channel must be composited away before dropping to RGB (and kept by
# `alpha_of` for outputs that can store it).
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

# Image.MAX_IMAGE_PIXELS is PIL's module-wide bomb limit; we swap it out around Image.open and do
# the check ourselves (one clear error instead of PIL's warning-or-error split).
_PIL_LIMIT_LOCK = threading.Lock()


class ImageLoadError(ValueError):
    """An image file that cannot be decoded; `.path` names it and `.reason` says why.

    The message is the only positional argument so the error survives pickling and
    DataLoader workers re-raising it in the main process.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, reason: str = ""):
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.reason = reason


def find_images(folder: str | os.PathLike, unreadable: list[Path] | None = None,
                extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under `folder` (files named `extensions`: translate adds videos),
    recursively, sorted by relative path.

    Hidden files and folders (name starts with ".") are skipped, as are folders whose name looks
    like an image (`x.jpg/`), though images inside them are found. Symlinked folders are
    followed once each. A sub-folder that cannot be listed is warned about (with a count) and
    appended to `unreadable` when given, never skipped silently.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder; expected a folder of images")
    found: list[Path] = []
    seen_dirs: set[str] = set()
    failed: list[Path] = []

    def not_listed(err: OSError) -> None:
        failed.append(Path(err.filename or root))

    for dirpath, dirnames, filenames in os.walk(root, onerror=not_listed, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink cycle or a second link to the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and name.lower().endswith(extensions)
        ]
    if failed:
        import logging

        shown = ", ".join(str(p) for p in failed[:3]) + (" ..." if len(failed) > 3 else "")
        logging.getLogger(__name__).warning(
            "%d folder(s) under %s could not be read and were skipped (%s): check permissions",
            len(failed), root, shown)
        if unreadable is not None:
            unreadable.extend(failed)
    if not found:
        raise ValueError(
            f"no images found in {root} (searched recursively for "
            f"{', '.join(extensions)}, any case; hidden files are skipped)"
        )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # the process-wide default, for every Image.open


def set_max_image_pixels(limit: int | None) -> int | None:
    """Set the process-wide decompression-bomb limit; returns the previous one (None = no limit).

    0 or None means no limit. This is PIL's own `Image.MAX_IMAGE_PIXELS`, so every `Image.open`
    in the process agrees with `load_image`; DataLoader workers started afterwards (fork)
    inherit it.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"max image pixels must be >= 0 (0 = no limit), got {limit}")
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit or None
    return previous


@contextmanager
def max_image_pixels(limit: int | None) -> Iterator[None]:
    """`set_max_image_pixels(limit)` for the duration of a `with` block."""
    previous = set_max_image_pixels(limit)
    try:
        yield
    finally:
        set_max_image_pixels(previous)


@contextmanager
def _pil_limit_disabled() -> Iterator[int | None]:
    """Disable PIL's bomb check for one Image.open; yields the limit that was in force."""
    with _PIL_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield limit
        finally:
            Image.MAX_IMAGE_PIXELS = limit


_BOMB_ADVICE = (
    "If the file is trusted, raise the limit: data.max_image_pixels in a training config, "
    "--max-pixels for `cyclestyle translate`, max_pixels= in Python; 0 = no limit (default: "
    f"{MAX_IMAGE_PIXELS:,})"
)


def _check_regular_file(path: Path) -> None:
    mode = os.stat(path).st_mode  # a missing file raises FileNotFoundError here
    if stat.S_ISDIR(mode):
        raise ImageLoadError(f"cannot load image {path}: it is a folder, not an image file",
                             path=path, reason="a folder, not an image file")
    if not stat.S_ISREG(mode):
        reason = "not a regular file (a pipe, socket or device; reading it could block forever)"
        raise ImageLoadError(f"cannot load image {path}: {reason}", path=path, reason=reason)


def _open_checked(path: Path, max_pixels: int | None) -> Image.Image:
    _check_regular_file(path)
    with _pil_limit_disabled() as pil_limit:
        img = Image.open(path)
    limit = pil_limit if max_pixels is None else (max_pixels or None)
    width, height = img.size
    if limit is not None and width * height > limit:
        img.close()
        reason = (f"{width}x{height} = {width * height:,} pixels is above the limit of {limit:,} "
                  "pixels that guards against decompression bombs (small files that decode to "
                  f"gigabytes). {_BOMB_ADVICE}")
        raise ImageLoadError(f"cannot load image {path}: {reason}", path=path, reason=reason)
    return img


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Decode `path` fully into an upright 8-bit RGB image (see the module docstring).

    `max_pixels` overrides the decompression-bomb limit for this call (0 = no limit; None =
    the process-wide one, see `set_max_image_pixels`). Any failure, from a missing or truncated
    file to an unsupported mode, raises `ImageLoadError` naming the file and the reason.
    """
    path = Path(path)
    try:
        with _open_checked(path, max_pixels) as img:
            img.load()  # decode now, so a truncated file fails here and not mid-training
            return to_rgb(ImageOps.exif_transpose(img))
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:  # a frame or tile checked by PIL while decoding
        reason = f"a frame or tile is a decompression bomb: {exc} {_BOMB_ADVICE}"
        raise ImageLoadError(f"cannot load image {path}: {reason}", path=path, reason=reason) from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ValueError, ...
        reason = f"{type(exc).__name__}: {exc}"
        raise ImageLoadError(
            f"cannot load image {path}: {reason}", path=path, reason=reason
        ) from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB the way `load_image` makes it (alpha onto white, 16-bit scaled)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img).astype(np.float64).clip(0, 65535) * (255 / 65535)
        return _gray_to_rgb(values)
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            values = values * 255
        return _gray_to_rgb(values.clip(0, 255))
    if has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if mode == "RGB" else img.convert("RGB")


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or "transparency" in img.info


def alpha_of(img: Image.Image) -> Image.Image | None:
    """The alpha channel as an 'L' image, or None for an opaque image."""
    return img.convert("RGBA").getchannel("A") if has_alpha(img) else None


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.rint(values).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")


# --- the one [-1, 1] <-> uint8 conversion ---------------------------------------------------

def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) in 0..255 -> float in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3): clamped, then rounded."""
    scaled = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return scaled.movedim(-3, -1)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float tensor (3, H, W) in [-1, 1]."""
    import torch

    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode!r}; load it with load_image")
    array = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return from_uint8(torch.from_numpy(array.copy()).permute(2, 0, 1))


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> RGB image; values are clamped, then rounded."""
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape (3, H, W), got {tuple(tensor.shape)}")
    return Image.fromarray(to_uint8(tensor.cpu()).numpy(), "RGB")


# --- grids and saving -----------------------------------------------------------------------

def make_grid_image(rows: list[torch.Tensor], labels: list[str] | None = None, pad: int = 2,
                    label_width: int = 110) -> Image.Image:
    """Rows of equal-size images (each (N, 3, H, W) in [-1, 1]) as one picture, labelled."""
    n, _, h, w = rows[0].shape
    left = label_width if labels else 0
    canvas = Image.new("RGB", (left + n * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = pad + r * (h + pad)
        for c, pixels in enumerate(to_uint8(row.cpu()).numpy()):
            canvas.paste(Image.fromarray(pixels), (left + pad + c * (w + pad), y))
        if labels:
            draw.text((4, y + h // 2 - 5), labels[r], fill="black")
    return canvas


def save_image_atomic(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> None:
    """Save through a temp file + rename: an interrupted write never leaves half an image.

    The format follows the file's extension unless `format=` is given. A failed write (full
    disk) removes the temp file and raises `OSError` naming `path`."""
    from cyclestyle.atomic import atomic_write

    path = Path(path)
    fmt = save_kwargs.pop("format", None) or Image.registered_extensions().get(path.suffix.lower())
    with atomic_write(path) as f:
        image.save(f, format=fmt, **save_kwargs)

"""Finding, loading and converting images: every file becomes an 8-bit RGB PIL image.

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

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# Modes whose alpha channel must be composited away before dropping to RGB.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

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


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under `folder`, recursively, sorted by relative path.

    Hidden files and folders (name starts with ".") are skipped, as are folders whose name looks
    like an image (`x.jpg/`), though images inside them are found. Symlinked folders are
    followed once each.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder; expected a folder of images")
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink cycle or a second link to the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if not found:
        raise ValueError(
            f"no images found in {root} (searched recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}, any case; hidden files are skipped)"
        )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


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
    "PIL.Image.MAX_IMAGE_PIXELS)"
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
            return _to_rgb(ImageOps.exif_transpose(img))
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


def _to_rgb(img: Image.Image) -> Image.Image:
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
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if mode == "RGB" else img.convert("RGB")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.rint(values).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float tensor (3, H, W) in [-1, 1]."""
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode!r}; load it with load_image")
    array = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> RGB image; values are clamped, then rounded."""
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape (3, H, W), got {tuple(tensor.shape)}")
    scaled = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return Image.fromarray(scaled.to(torch.uint8).permute(1, 2, 0).numpy(), "RGB")

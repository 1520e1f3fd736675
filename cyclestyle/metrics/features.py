"""Feature extraction for FID/KID: explicit extractors, stated resize modes, an on-disk cache.

Every number FID or KID produces depends on three choices that tools rarely state: which network
(and which weights) embeds the images, how images are resized to its input size, and whether the
resized pixels are quantised again. Here each is explicit and recorded:

* extractor: torchmetrics' own Inception (the default: torch-fidelity's weights, fetched on
  first use into the torch hub cache), a TorchScript Inception file (the offline case:
  ``--inception-weights`` or $CYCLESTYLE_INCEPTION_WEIGHTS), or any ``nn.Module``. Each has a
  ``name`` and a ``sha256`` (of the weights file, or of the module's state dict), recorded with
  every result so numbers of two extractors are never mixed silently.
* resize (see RESIZE_MODES): ``pil_bicubic`` (default, antialiased, in float so nothing is
  re-quantised) or ``tf1_bilinear`` (the original TensorFlow FID graph's ResizeBilinear without
  half-pixel centres or antialiasing; use it to compare with published numbers).
* images enter as 8-bit RGB (files as decoded; generator outputs quantised exactly as a PNG
  would store them), so evaluating saved files and in-memory translations agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from cyclestyle.atomic import atomic_torch_save
from cyclestyle.imageio import find_images, from_uint8, load_image, to_uint8
from cyclestyle.metrics.resize import RESIZE_MODES

__all__ = [
    "RESIZE_MODES", "FeatureExtractor", "FeatureCache", "resize_to", "load_inception",
    "torchscript_inception", "torchmetrics_inception", "module_extractor", "extract_features",
    "features_of_tensors", "file_sha256", "default_cache_dir", "INCEPTION_ENV",
    "ExtractorUnavailable", "torchmetrics_weights_path",
]

log = logging.getLogger(__name__)

# 2: entries record each file's hash, and are checked against the images they are loaded for.
_CACHE_FORMAT = 2


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _state_sha256(module: nn.Module) -> str:
    """Hash of a module's class and state dict: two modules with equal weights hash equal."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureExtractor(nn.Module):
    """An embedding network with the facts FID needs stated: input size, feature dimension, hash.

    forward takes (N, 3, S, S) float RGB in [0, 255] at S = `input_size` (already resized) and
    returns (N, num_features) float. `input_range` says what the wrapped module wants:
    "minus1_1" (float in [-1, 1]) or "uint8" (rounded to 0..255, as torchmetrics' Inception).
    """

    def __init__(self, module: nn.Module, name: str, sha256: str, num_features: int,
                 input_size: int = 299, input_range: str = "minus1_1") -> None:
        super().__init__()
        if input_range not in ("minus1_1", "uint8"):
            raise ValueError(f"input_range must be 'minus1_1' or 'uint8', got {input_range!r}")
        self.module = module
        self.name = name
        self.sha256 = sha256
        self.num_features = int(num_features)
        self.input_size = int(input_size)
        self.input_range = input_range
        self.module.eval()

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "num_features": self.num_features,
                "input_size": self.input_size}

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.ndim != 4 or pixels.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"{self.name} expects (N, 3, {self.input_size}, {self.input_size}) "
                             f"pixels, got {tuple(pixels.shape)}")
        if self.input_range == "uint8":
            x = pixels.round().clamp(0, 255).to(torch.uint8)
        else:
            x = from_uint8(pixels)  # float 0..255 (resized) -> [-1, 1]
        features = self.module(x)
        if isinstance(features, (tuple, list)):
            features = features[0]
        return features.reshape(pixels.shape[0], -1)


def torchscript_inception(path: str | os.PathLike) -> FeatureExtractor:
    """A TorchScript Inception file: NCHW float in [-1, 1] at 299x299 -> (N, 2048) pool3."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights {str(path)!r} do not exist (expected a "
                                "TorchScript file such as inception-2015-12-05-torchscript.pt)")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise ValueError(f"could not load {str(path)!r} as a TorchScript module: {err}") from err
    with torch.inference_mode():
        probe = module(torch.zeros(1, 3, 299, 299))
    if not isinstance(probe, Tensor) or probe.ndim != 2 or probe.shape[0] != 1:
        raise ValueError(f"TorchScript module {str(path)!r} must map (1, 3, 299, 299) to "
                         f"(1, D) features; it returned {getattr(probe, 'shape', type(probe))}")
    return FeatureExtractor(module, f"torchscript:{path.name}", file_sha256(path),
                            probe.shape[1], 299, "minus1_1")


INCEPTION_ENV = "CYCLESTYLE_INCEPTION_WEIGHTS"  # a TorchScript Inception for offline machines
# torch-fidelity's port of the TF FID Inception (torch_fidelity.feature_extractor_inceptionv3).
TORCHMETRICS_WEIGHTS = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                        "weights-inception-2015-12-05-6726825d.pth")


class ExtractorUnavailable(ValueError):
    """No FID/KID extractor can be had: one line saying how to provide one (exit 2)."""


def torchmetrics_weights_url() -> str:
    """The URL torch-fidelity fetches its Inception weights from (its own constant if found)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return TORCHMETRICS_WEIGHTS
    return URL_INCEPTION_V3


def torchmetrics_weights_path() -> Path:
    """Where torch.hub keeps torch-fidelity's Inception weights once fetched."""
    return Path(torch.hub.get_dir()) / "checkpoints" / torchmetrics_weights_url().rsplit("/", 1)[1]


def _how_to_go_offline() -> str:
    return (f"offline, set {INCEPTION_ENV}=PATH or pass --inception-weights PATH to a "
            "TorchScript Inception such as inception-2015-12-05-torchscript.pt")


def torchmetrics_inception() -> FeatureExtractor:
    """torchmetrics' default Inception (torch-fidelity's port of the TF graph), 2048-d pool3.

    Its weights are fetched on first use into the torch hub cache (`torchmetrics_weights_path`);
    the extractor's sha256 is that file's."""
    cached = torchmetrics_weights_path()
    try:
        import torch_fidelity  # noqa: F401  (NoTrainInceptionV3 needs it)
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:
        raise ExtractorUnavailable(
            f"FID/KID need an Inception network: torchmetrics' default needs torch-fidelity, "
            f"which is not installed ({err}); `pip install torch-fidelity`, or "
            f"{_how_to_go_offline()}") from None
    if not cached.is_file():
        _fetch(torchmetrics_weights_url(), cached)
    try:
        module = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except Exception as err:  # a damaged file, ...
        raise RuntimeError(f"torchmetrics' default Inception did not load from {cached} "
                           f"({type(err).__name__}: {err}); delete the file to fetch it "
                           f"again, or {_how_to_go_offline()}") from err
    sha256 = file_sha256(cached) if cached.is_file() else _state_sha256(module)
    return FeatureExtractor(module, "torchmetrics:inception-v3-compat", sha256, 2048, 299, "uint8")


def module_extractor(module: nn.Module, name: str | None = None, input_size: int = 299,
                     input_range: str = "minus1_1") -> FeatureExtractor:
    """Any nn.Module mapping (N, 3, S, S) images to (N, D) features; D is probed once."""
    with torch.inference_mode():
        probe_in = torch.zeros(1, 3, input_size, input_size)
        probe = module(probe_in.to(torch.uint8) if input_range == "uint8" else probe_in)
    if isinstance(probe, (tuple, list)):
        probe = probe[0]
    return FeatureExtractor(module, name or f"module:{type(module).__qualname__}",
                            _state_sha256(module), probe.reshape(1, -1).shape[1], input_size,
                            input_range)


def _fetch(url: str, path: Path) -> None:
    """Download `url` to `path` as torch.hub would, quietly, so that failing offline is one
    line instead of torch.hub's progress output first. (No checksum is enforced: none is
    published; the file's sha256 is recorded with every result instead.)"""
    log.info("fetching torchmetrics' Inception weights (95 MB, once) into %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.download")
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=False)
        os.replace(partial, path)
    except Exception as err:  # URLError (no network), HTTPError, a full disk, ...
        reason = " ".join(f"{type(err).__name__}: {getattr(err, 'reason', None) or err}".split())
        raise ExtractorUnavailable(
            f"FID/KID need an Inception network: torchmetrics' default is not in the torch hub "
            f"cache ({path}) and could not be downloaded ({reason}); {_how_to_go_offline()}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def load_inception(weights: str | os.PathLike | nn.Module | None) -> FeatureExtractor:
    """Choose the FID/KID extractor: a path (TorchScript), a module, or None: the TorchScript
    file $CYCLESTYLE_INCEPTION_WEIGHTS names when set, else torchmetrics' own Inception."""
    if isinstance(weights, FeatureExtractor):
        return weights
    if isinstance(weights, nn.Module):
        return module_extractor(weights)
    if weights is None and os.environ.get(INCEPTION_ENV):
        weights = os.environ[INCEPTION_ENV]
    if weights is None:
        return torchmetrics_inception()
    return torchscript_inception(weights)


# ---------------------------------------------------------------------------------------------
# Resizing


def _tf1_bilinear_axis(x: Tensor, size: int, dim: int) -> Tensor:
    """TF1 ResizeBilinear along one axis: source coordinate = i * in/out, no half-pixel shift."""
    n_in = x.shape[dim]
    coords = torch.arange(size, dtype=torch.float64) * (n_in / size)
    lo = coords.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    shape = [1] * x.ndim
    shape[dim] = size
    frac = (coords - lo).to(x.dtype).view(shape)
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * frac


def resize_to(pixels: np.ndarray, size: int, mode: str = "pil_bicubic") -> Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32 in [0, 255] by the named resize mode."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; valid: {sorted(RESIZE_MODES)}")
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    if mode == "pil_bicubic":
        channels = [
            np.asarray(Image.fromarray(pixels[..., c].astype(np.float32), mode="F")
                       .resize((size, size), Image.BICUBIC))
            for c in range(3)
        ]
        return torch.from_numpy(np.stack(channels)).clamp_(0, 255)
    x = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1)
    return _tf1_bilinear_axis(_tf1_bilinear_axis(x, size, 1), size, 2)


# ---------------------------------------------------------------------------------------------
# Extraction


def _batched_features(pixel_iter: Iterable[Tensor], count: int, extractor: FeatureExtractor,
                      batch_size: int, device: str | torch.device) -> Tensor:
    extractor = extractor.to(device)
    out, batch = [], []
    with torch.inference_mode():
        for pixels in pixel_iter:
            batch.append(pixels)
            if len(batch) == batch_size:
                out.append(extractor(torch.stack(batch).to(device)).double().cpu())
                batch = []
        if batch:
            out.append(extractor(torch.stack(batch).to(device)).double().cpu())
    features = torch.cat(out) if out else torch.empty(0, extractor.num_features, dtype=torch.float64)
    assert features.shape[0] == count, (features.shape, count)
    return features


def _image_paths(images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(images, (str, os.PathLike)):
        return find_images(images)
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("no images given to extract features from")
    return paths


def extract_features(images: str | os.PathLike | Sequence[str | os.PathLike],
                     extractor: FeatureExtractor, resize: str = "pil_bicubic",
                     batch_size: int = 32, device: str | torch.device = "cpu",
                     cache: FeatureCache | None = None, workers: int = 4) -> Tensor:
    """(N, D) float64 features of a folder (recursive, sorted) or a list of image files.

    With a `cache`, features are looked up by (file contents, extractor sha256, resize mode)
    first, used only if the entry matches these images (see FeatureCache), and stored after
    computing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; valid: {sorted(RESIZE_MODES)}")
    paths = _image_paths(images)
    key = hashes = None
    if cache is not None:
        hashes = cache.hashes(paths)
        key = cache.key(hashes, extractor, resize)
        cached = cache.load(key, hashes, extractor, resize)
        if cached is not None:
            log.info("features of %d images from cache %s", len(paths), cache.path(key))
            return cached

    def prepare(path: Path) -> Tensor:
        pixels = np.asarray(load_image(path), dtype=np.uint8)  # the process-wide pixel limit
        return resize_to(pixels, extractor.input_size, resize)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        features = _batched_features(pool.map(prepare, paths), len(paths), extractor,
                                     batch_size, device)
    if cache is not None:
        cache.store(key, features, hashes, extractor, resize)
    return features


def features_of_tensors(images: Tensor, extractor: FeatureExtractor, resize: str = "pil_bicubic",
                        batch_size: int = 32, device: str | torch.device = "cpu") -> Tensor:
    """Features of (N, 3, H, W) images in [-1, 1] (e.g. generator outputs), quantised to 8 bits
    exactly as saving them as PNG would, then resized like files."""
    pixels = to_uint8(images.detach().cpu()).numpy()
    return _batched_features((resize_to(p, extractor.input_size, resize) for p in pixels),
                             len(pixels), extractor, batch_size, device)


# ---------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cyclestyle" / "features"


class FeatureCache:
    """Features of image sets on disk, one file per (set contents, extractor, resize mode).

    The key hashes every file's bytes (in the set's sorted order), so renaming a file keeps the
    entry, editing one pixel invalidates it, and a different extractor or resize never collides.
    An entry is trusted only when it matches the images it is loaded for: one row per image,
    the same per-file hashes in the same order, the extractor's sha256 and feature size and the
    resize mode; anything else (a damaged, copied or older-format file) is recomputed. The cache
    is only a shortcut: an entry that cannot be written is a warning, not an error.
    """

    def __init__(self, folder: str | os.PathLike | None = None,
                 hasher: Callable[[Path], str] = file_sha256) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self._hasher = hasher

    def hashes(self, paths: Sequence[Path]) -> list[str]:
        return [self._hasher(path) for path in paths]

    def key(self, hashes: Sequence[str], extractor: FeatureExtractor, resize: str) -> str:
        digest = hashlib.sha256(json.dumps(
            {"format": _CACHE_FORMAT, "extractor": extractor.sha256, "resize": resize,
             "input_size": extractor.input_size}, sort_keys=True).encode())
        for file_hash in hashes:
            digest.update(file_hash.encode())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def load(self, key: str, hashes: Sequence[str], extractor: FeatureExtractor,
             resize: str) -> Tensor | None:
        """The entry's (N, D) features if it matches these images, else None (recompute)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features, info = entry["features"].double(), json.loads(entry["info"])
        except Exception as err:  # a damaged entry is recomputed, not fatal
            log.warning("ignoring unreadable feature cache entry %s: %s", path, err)
            return None
        problem = _entry_problem(features, info, hashes, extractor, resize)
        if problem:
            log.warning("ignoring feature cache entry %s: %s; recomputing", path, problem)
            return None
        return features

    def store(self, key: str, features: Tensor, hashes: Sequence[str],
              extractor: FeatureExtractor, resize: str) -> None:
        info = {"format": _CACHE_FORMAT, "count": len(hashes), "file_sha256": list(hashes),
                "extractor": extractor.describe(), "resize": resize}
        try:
            atomic_torch_save({"features": features.cpu(), "info": json.dumps(info)},
                              self.path(key))
        except OSError as err:
            log.warning("feature cache: not stored (%s); the features are still used", err)


def _entry_problem(features: Tensor, info: dict, hashes: Sequence[str],
                   extractor: FeatureExtractor, resize: str) -> str | None:
    """Why a cache entry does not describe these images (None: it does)."""
    if info.get("format") != _CACHE_FORMAT:
        return f"format {info.get('format')!r}, not {_CACHE_FORMAT}"
    if features.ndim != 2 or features.shape[0] != len(hashes):
        return f"{tuple(features.shape)} features for {len(hashes)} images"
    if info.get("file_sha256") != list(hashes):
        return "its per-file hashes differ from these images'"
    if features.shape[1] != extractor.num_features:
        return f"{features.shape[1]}-d features, the extractor gives {extractor.num_features}"
    described = info.get("extractor", {})
    if described.get("sha256") != extractor.sha256 or info.get("resize") != resize:
        return "made by another extractor or resize mode"
    return None

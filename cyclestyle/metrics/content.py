"""Content preservation: how much of each source image survives in its translation.

Source and translated images are paired by relative path without the extension (a translator
may write `city/a.jpg` as `city/a.png`). SSIM and PSNR (scikit-image, 8-bit RGB) and, when its
backbone weights are present, LPIPS (torchmetrics) are averaged over pairs. When a translation's
size differs from its source, the source is resized (PIL bicubic) to the translation's size.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cyclestyle.imageio import find_images, load_image, pil_to_tensor

__all__ = ["pair_by_relative_path", "ssim_psnr", "lpips_model", "evaluate_content"]

log = logging.getLogger(__name__)


def _by_stem(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in find_images(folder):
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in index:
            raise ValueError(f"{str(folder)!r} holds two images with relative path {stem!r} "
                             f"({index[stem].name} and {path.name}); pairing by relative path "
                             "needs them to be unique regardless of extension")
        index[stem] = path
    return index


def pair_by_relative_path(source_dir: str | os.PathLike,
                          fake_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """[(source, translation)] matched by relative path minus extension; every file must match."""
    source, fake = _by_stem(Path(source_dir)), _by_stem(Path(fake_dir))
    missing_fake = sorted(set(source) - set(fake))
    missing_source = sorted(set(fake) - set(source))
    if missing_fake or missing_source:
        def show(names: list[str]) -> str:
            return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        problems = []
        if missing_fake:
            problems.append(f"{len(missing_fake)} source image(s) have no translation in "
                            f"{str(fake_dir)!r}: {show(missing_fake)}")
        if missing_source:
            problems.append(f"{len(missing_source)} translation(s) have no source in "
                            f"{str(source_dir)!r}: {show(missing_source)}")
        raise ValueError("cannot pair source and translated images by relative path: "
                         + "; ".join(problems))
    return [(source[k], fake[k]) for k in sorted(source)]


def _pair_pixels(source: Path, fake: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    src, out = load_image(source), load_image(fake)
    resized = src.size != out.size
    if resized:
        src = src.resize(out.size, Image.BICUBIC)
    return np.asarray(src), np.asarray(out), resized


def ssim_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """SSIM (Gaussian-free 7x7 window, RGB channels) and PSNR in dB of two (H, W, 3) uint8 images."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    win = min(7, *a.shape[:2])
    win -= 1 - win % 2  # odd window, at most the image side
    ssim = structural_similarity(a, b, channel_axis=2, data_range=255, win_size=max(win, 1))
    if np.array_equal(a, b):
        return float(ssim), math.inf
    return float(ssim), float(peak_signal_noise_ratio(a, b, data_range=255))


def lpips_model(net: str = "alex"):
    """torchmetrics' LPIPS, or (None, reason) when the backbone's ImageNet weights are absent."""
    try:
        from torchvision.models import get_model_weights

        weights = get_model_weights({"alex": "alexnet", "vgg": "vgg16",
                                     "squeeze": "squeezenet1_1"}[net]).IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():  # never try a download in the middle of an evaluation
            return None, (f"LPIPS needs torchvision's {net} ImageNet weights at {cached} "
                          "(not present; place the file there to enable LPIPS)")
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="mean"), None
    except Exception as err:
        return None, f"LPIPS unavailable: {type(err).__name__}: {err}"


def evaluate_content(source_dir: str | os.PathLike, fake_dir: str | os.PathLike,
                     lpips: bool = True, device: str | torch.device = "cpu") -> dict:
    pairs = pair_by_relative_path(source_dir, fake_dir)
    model, reason = lpips_model() if lpips else (None, "LPIPS not requested")
    if model is not None:
        model = model.to(device)
    ssims, psnrs, lpipses, resized = [], [], [], 0
    for source, fake in pairs:
        a, b, was_resized = _pair_pixels(source, fake)
        resized += was_resized
        ssim, psnr = ssim_psnr(a, b)
        ssims.append(ssim)
        psnrs.append(psnr)
        if model is not None:
            with torch.inference_mode():
                x = pil_to_tensor(Image.fromarray(a))[None].to(device)
                y = pil_to_tensor(Image.fromarray(b))[None].to(device)
                lpipses.append(float(model(x, y)))
    finite = [p for p in psnrs if math.isfinite(p)]
    result = {
        "n_pairs": len(pairs),
        "ssim": float(np.mean(ssims)),
        "psnr": float(np.mean(finite)) if finite else math.inf,
        "psnr_identical_pairs": len(psnrs) - len(finite),
        "lpips": float(np.mean(lpipses)) if lpipses else None,
        "pairing": "relative path without extension",
        "resized_sources": resized,
        "ssim_settings": "scikit-image structural_similarity, 8-bit RGB, 7x7 uniform window",
        "psnr_settings": "scikit-image peak_signal_noise_ratio, data_range 255; mean over pairs "
                         "that differ (identical pairs counted separately)",
    }
    if model is None:
        result["lpips_skipped"] = reason
    else:
        result["lpips_settings"] = "torchmetrics LPIPS, alex backbone, inputs in [-1, 1]"
    return result

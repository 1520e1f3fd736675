"""Colour control for style transfer: keep the content's colours, or recolour the style first.

Images here are (3, H, W) or (N, 3, H, W) RGB tensors in [-1, 1], like everywhere in cyclestyle.

* `transfer_luminance` ("original colours", Gatys et al. 2016, *Preserving Color in Neural
  Artistic Style Transfer*): take the luma Y of the stylised output and the chroma Cb, Cr of
  the content, so the result has the style's strokes and the content's colours.
* `match_color`: an affine recolouring x -> A (x - mu_s) + mu_c of the style image so that its
  pixel mean and covariance equal the content's. A = Sc^1/2 Ss^-1/2 with symmetric
  (eigen-decomposition) square roots, which rotates colours least (the "image analogies"
  variant of the same paper); a Cholesky variant is available.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["match_color", "rgb_to_ycbcr", "transfer_luminance", "ycbcr_to_rgb"]

# ITU-R BT.601 full-range (JPEG) YCbCr on [0, 1] RGB; Cb, Cr centred on 0 here (not 0.5).
_RGB_TO_YCBCR = torch.tensor([
    [0.299, 0.587, 0.114],
    [-0.168736, -0.331264, 0.5],
    [0.5, -0.418688, -0.081312],
])
_MATCH_METHODS = ("eigen", "cholesky")


def _apply_matrix(matrix: Tensor, image: Tensor) -> Tensor:
    """Multiply every pixel's 3-vector by `matrix`: (3, 3) x (..., 3, H, W)."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(image), image)


def rgb_to_ycbcr(image: Tensor) -> Tensor:
    """RGB in [-1, 1] -> (Y in [0, 1], Cb and Cr in [-0.5, 0.5]), channel dim -3."""
    _check_rgb(image)
    return _apply_matrix(_RGB_TO_YCBCR, (image + 1) / 2)


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """Inverse of `rgb_to_ycbcr` (not clamped: out-of-gamut values stay visible to the caller)."""
    _check_rgb(ycbcr)
    return _apply_matrix(torch.linalg.inv(_RGB_TO_YCBCR), ycbcr) * 2 - 1


def transfer_luminance(stylised: Tensor, content: Tensor) -> Tensor:
    """The luma of `stylised` with the chroma of `content` (same shape), clamped to [-1, 1]."""
    if stylised.shape != content.shape:
        raise ValueError(
            f"transfer_luminance needs equal shapes, got stylised {tuple(stylised.shape)} and "
            f"content {tuple(content.shape)}"
        )
    luma = rgb_to_ycbcr(stylised).narrow(-3, 0, 1)
    chroma = rgb_to_ycbcr(content).narrow(-3, 1, 2)
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=-3)).clamp(-1, 1)


def _pixel_stats(image: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (3,) and covariance (3, 3) of the pixels of a (3, H, W) or (1, 3, H, W) image."""
    pixels = image.reshape(3, -1).double()
    mean = pixels.mean(dim=1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / max(pixels.shape[1] - 1, 1)


def _sym_power(cov: Tensor, power: float, eps: float) -> Tensor:
    values, vectors = torch.linalg.eigh(cov + eps * torch.eye(3, dtype=cov.dtype))
    return vectors @ torch.diag(values.clamp_min(eps) ** power) @ vectors.T


def match_color(style: Tensor, content: Tensor, method: str = "eigen", eps: float = 1e-5) -> Tensor:
    """Recolour `style` so its pixel mean and covariance match `content`'s; clamped to [-1, 1].

    The images may differ in size. `eps` regularises flat (e.g. greyscale) images, whose
    covariance is singular.
    """
    for name, image in (("style", style), ("content", content)):
        _check_rgb(image)
        if image.ndim == 4 and image.shape[0] != 1:
            raise ValueError(f"match_color takes one {name} image, got a batch of {image.shape[0]}")
    if method not in _MATCH_METHODS:
        raise ValueError(f"unknown colour matching method {method!r}; valid: {list(_MATCH_METHODS)}")
    mean_s, cov_s = _pixel_stats(style)
    mean_c, cov_c = _pixel_stats(content)
    eye = eps * torch.eye(3, dtype=torch.float64)
    if method == "eigen":
        transform = _sym_power(cov_c, 0.5, eps) @ _sym_power(cov_s, -0.5, eps)
    else:
        chol_c = torch.linalg.cholesky(cov_c + eye)
        chol_s = torch.linalg.cholesky(cov_s + eye)
        transform = chol_c @ torch.linalg.inv(chol_s)
    pixels = style.reshape(3, -1).double() - mean_s[:, None]
    matched = transform @ pixels + mean_c[:, None]
    return matched.reshape(style.shape).to(style.dtype).clamp(-1, 1)


def _check_rgb(image: Tensor) -> None:
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected an RGB image (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")

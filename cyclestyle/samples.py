"""Image grids for eyeballing training progress, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from cyclestyle.atomic import atomic_write


def save_image_atomic(image: Image.Image, path: str | Path, **save_kwargs) -> None:
    """Save through a temp file + rename: an interrupted write never leaves half an image.

    A failed write (full disk) removes the temp file and raises `OSError` naming `path`."""
    path = Path(path)
    fmt = save_kwargs.pop("format", None) or Image.registered_extensions().get(path.suffix.lower())
    with atomic_write(path) as f:
        image.save(f, format=fmt, **save_kwargs)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def make_grid_image(rows: list[torch.Tensor], labels: list[str] | None = None, pad: int = 2,
                    label_width: int = 110) -> Image.Image:
    """Rows of equal-size images (each (N, 3, H, W) in [-1, 1]) as one picture, labelled."""
    n, _, h, w = rows[0].shape
    left = label_width if labels else 0
    canvas = Image.new("RGB", (left + n * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = pad + r * (h + pad)
        for c, pixels in enumerate(to_uint8(row).numpy()):
            canvas.paste(Image.fromarray(pixels), (left + pad + c * (w + pad), y))
        if labels:
            draw.text((4, y + h // 2 - 5), labels[r], fill="black")
    return canvas


def save_sample_grid(rows: list[torch.Tensor], path: str | Path,
                     labels: list[str] | None = None) -> None:
    save_image_atomic(make_grid_image(rows, labels), path)


@torch.no_grad()
def save_cycle_samples(g_ab: torch.nn.Module, g_ba: torch.nn.Module, real_a: torch.Tensor,
                       real_b: torch.Tensor, autocast, path: str | Path) -> None:
    """Rows A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)), generators in eval mode."""
    was_training = g_ab.training
    g_ab.eval(), g_ba.eval()
    try:
        with autocast:
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
            rows = [real_a, fake_b, g_ba(fake_b), real_b, fake_a, g_ab(fake_a)]
    finally:
        g_ab.train(was_training), g_ba.train(was_training)
    save_sample_grid([r.float().cpu() for r in rows], path,
                     labels=["A", "G_AB(A)", "G_BA(G_AB(A))", "B", "G_BA(B)", "G_AB(G_BA(B))"])

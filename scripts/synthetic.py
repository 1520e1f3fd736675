"""Small synthetic image folders for tests and benchmarks (no shared assets needed)."""

from __future__ import annotations

from pathlib import Path


def write_images(folder: Path, count: int, seed: int, sizes=((40, 48), (36, 36), (50, 34))) -> Path:
    """Small colourful PNG/JPEG images of mixed sizes, deterministic in `seed`."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(0, 255, size=3)
        pixels = (base + 80 * np.sin(xx[..., None] / rng.uniform(2, 8) + np.arange(3))
                  + 60 * np.cos(yy[..., None] / rng.uniform(2, 8))) % 255
        ext = ".png" if i % 2 == 0 else ".jpg"
        Image.fromarray(pixels.astype("uint8")).save(folder / f"img_{i:02d}{ext}")
    return folder

"""Shared fixtures: paths to ../shared assets (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLESTYLE_SHARED", REPO_ROOT.parent / "shared"))


def _shared_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared assets beside the checkout); not present here")
    return path


@pytest.fixture(scope="session")
def shared_photo_dir() -> Path:
    return _shared_path("data/photo2painting/photo")


@pytest.fixture(scope="session")
def shared_painting_dir() -> Path:
    return _shared_path("data/photo2painting/painting")


@pytest.fixture(scope="session")
def shared_vgg_prefix() -> Path:
    return _shared_path("weights/vgg19_normalised_to_relu3_1.pth")


@pytest.fixture(scope="session")
def shared_inception() -> Path:
    return _shared_path("weights/inception-2015-12-05-torchscript.pt")


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


@pytest.fixture
def image_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny unpaired image folders."""
    return write_images(tmp_path / "A", 5, seed=1), write_images(tmp_path / "B", 4, seed=2)

"""Shared fixtures: paths to ../shared assets (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import write_images, write_tiny_inception

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


@pytest.fixture
def tiny_inception(tmp_path: Path) -> Path:
    """A 12-d TorchScript stand-in for Inception (tests.helpers.write_tiny_inception)."""
    return write_tiny_inception(tmp_path / "tiny_inception.pt")


@pytest.fixture
def image_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny unpaired image folders."""
    return write_images(tmp_path / "A", 5, seed=1), write_images(tmp_path / "B", 4, seed=2)

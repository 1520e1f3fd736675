"""Helpers shared by the tests: `from tests.helpers import tiny_config, write_images`."""

from __future__ import annotations

from pathlib import Path

from scripts.synthetic import write_images

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"  # a few-second CPU model

__all__ = ["REPO", "TINY", "tiny_config", "tiny_overrides", "write_images", "write_tiny_inception"]


def tiny_overrides(dirs, output_dir, *overrides: str) -> list[str]:
    """`--set` values that point configs/tiny.yaml at two image folders and a run folder."""
    return [f"data.domain_a={dirs[0]}", f"data.domain_b={dirs[1]}", f"output_dir={output_dir}",
            "train.progress=false", *overrides]


def tiny_config(dirs, output_dir, *overrides: str):
    """configs/tiny.yaml on `dirs` (A, B) writing to `output_dir`, validated."""
    from cyclestyle.train.config import load_config

    return load_config(TINY, tiny_overrides(dirs, output_dir, *overrides))


def write_tiny_inception(path: Path) -> Path:
    """A 12-d TorchScript stand-in for Inception at `path`, for held-out FID/KID in tests."""
    import torch
    from torch import nn

    class TinyEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 16, stride=16)
            self.pool = nn.AdaptiveAvgPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(torch.tanh(self.conv(x))).flatten(1)

    torch.manual_seed(0)
    torch.jit.script(TinyEmbed()).save(str(path))
    return path


def run_benchmark(script: str, out: Path, *flags: str) -> dict:
    """Run `scripts/<script> *flags --out out` in a fresh interpreter (as users run it) and
    return its JSON report; a failed run fails with the end of its stderr."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, f"scripts/{script}", *flags, "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())

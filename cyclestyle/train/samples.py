"""Sample grids for eyeballing training progress, written atomically and handed to the trackers.

At each sample step `SampleWriter` translates the same few images, so grids are comparable
across steps: the first items of the training stream (samples/step_*.png) and, where held-out
folders exist (eval.domain_a/b, or data.root's valA/valB or testA/testB), the first held-out
images of each domain (samples/heldout_step_*.png).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from cyclestyle.imageio import find_images, load_image, make_grid_image, save_image_atomic
from cyclestyle.train.data import crop_to_common_size

__all__ = ["CYCLE_LABELS", "HELD_OUT_KEY", "TRAIN_KEY", "SampleWriter", "cycle_grid"]

CYCLE_LABELS = ["A", "G_AB(A)", "G_BA(G_AB(A))", "B", "G_BA(B)", "G_AB(G_BA(B))"]
ONE_WAY_LABELS = ["A", "G_AB(A)", "B", "G_AB(B)"]  # cut / fastcut: no G_BA
# Tracker image names: the same key at every step, so wandb/TensorBoard show a step slider.
TRAIN_KEY, HELD_OUT_KEY = "samples/train", "samples/held_out"


@torch.no_grad()
def cycle_grid(g_ab: nn.Module, g_ba: nn.Module | None, real_a: torch.Tensor, real_b: torch.Tensor,
               autocast: contextlib.AbstractContextManager) -> Image.Image:
    """Rows A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)), generators in eval mode;
    A, G_AB(A), B, G_AB(B) without a G_BA (cut, fastcut)."""
    generators = [g for g in (g_ab, g_ba) if g is not None]
    was_training = g_ab.training
    for g in generators:
        g.eval()
    try:
        with autocast:
            fake_b = g_ab(real_a)
            if g_ba is None:
                rows, labels = [real_a, fake_b, real_b, g_ab(real_b)], ONE_WAY_LABELS
            else:
                fake_a = g_ba(real_b)
                rows = [real_a, fake_b, g_ba(fake_b), real_b, fake_a, g_ab(fake_a)]
                labels = CYCLE_LABELS
    finally:
        for g in generators:
            g.train(was_training)
    return make_grid_image([r.float().cpu() for r in rows], labels)


class SampleWriter:
    """Grids of fixed images at each sample step: `write(g_ab, g_ba, step, autocast)` saves
    them under output_dir/samples and returns {tracker key: grid image}.

    The images are read on the first write (the dataset's items need its files, and an
    evaluation-only process never pays for them)."""

    def __init__(self, output_dir: str | Path, dataset, held_out: tuple[Path, Path] | None,
                 image_size: int, device: torch.device, count: int = 4) -> None:
        self.folder = Path(output_dir) / "samples"
        self.dataset, self.held_out, self.image_size = dataset, held_out, image_size
        self.device, self.count = device, count
        self._images: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def images(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{tracker key: (A images, B images)}, loaded once (N, 3, H, W) on the device."""
        if self._images is None:
            items = [self.dataset[i] for i in range(self.count)]  # fixed stream indices
            # Whole-image modes (scale_width, none) give items of several sizes.
            self._images = {TRAIN_KEY: tuple(
                torch.stack(crop_to_common_size([it[k] for it in items])).to(self.device)
                for k in ("a", "b"))}
            if self.held_out is not None:
                self._images[HELD_OUT_KEY] = tuple(self._held_out_images(folder)
                                                   for folder in self.held_out)
        return self._images

    def _held_out_images(self, folder: Path) -> torch.Tensor:
        from cyclestyle.metrics.style import square_crop  # the crop held-out FID scores

        files = find_images(folder)[:self.count]
        return torch.stack([square_crop(load_image(f), self.image_size) for f in files]).to(
            self.device)

    def write(self, g_ab: nn.Module, g_ba: nn.Module | None, step: int,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              ) -> dict[str, Image.Image]:
        """`autocast` makes a fresh context per grid (accelerate's are single-use)."""
        grids = {}
        for key, (real_a, real_b) in self.images().items():
            count = min(len(real_a), len(real_b))  # a held-out folder may hold fewer images
            grids[key] = cycle_grid(g_ab, g_ba, real_a[:count], real_b[:count], autocast())
            prefix = "heldout_step" if key == HELD_OUT_KEY else "step"
            save_image_atomic(grids[key], self.folder / f"{prefix}_{step:08d}.png")
        return grids

"""Sample grids for eyeballing training progress, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from cyclestyle.imageio import make_grid_image, save_image_atomic

CYCLE_LABELS = ["A", "G_AB(A)", "G_BA(G_AB(A))", "B", "G_BA(B)", "G_AB(G_BA(B))"]


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
    save_sample_grid([r.float().cpu() for r in rows], path, labels=CYCLE_LABELS)

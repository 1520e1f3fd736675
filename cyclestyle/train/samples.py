"""Sample grids for eyeballing training progress, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from cyclestyle.imageio import make_grid_image, save_image_atomic

CYCLE_LABELS = ["A", "G_AB(A)", "G_BA(G_AB(A))", "B", "G_BA(B)", "G_AB(G_BA(B))"]
ONE_WAY_LABELS = ["A", "G_AB(A)", "B", "G_AB(B)"]  # cut / fastcut: no G_BA


def save_sample_grid(rows: list[torch.Tensor], path: str | Path,
                     labels: list[str] | None = None) -> None:
    save_image_atomic(make_grid_image(rows, labels), path)


@torch.no_grad()
def save_cycle_samples(g_ab: torch.nn.Module, g_ba: torch.nn.Module | None, real_a: torch.Tensor,
                       real_b: torch.Tensor, autocast, path: str | Path) -> None:
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
    save_sample_grid([r.float().cpu() for r in rows], path, labels=labels)

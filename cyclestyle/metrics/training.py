"""FID/KID during training: translate a held-out domain-A set every N steps, score against B.

The trainer owns logging and checkpoints; this class only computes numbers and remembers the
best FID so far. Real-B features are computed once (and cached on disk); held-out A images are
loaded once, resized (shorter side) and centre-cropped to `image_size`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from cyclestyle.imageio import find_images, load_image
from cyclestyle.metrics.features import (
    FeatureCache,
    extract_features,
    features_of_tensors,
    load_inception,
)
from cyclestyle.metrics.fid import fid_from_features, kernel_inception_distance
from cyclestyle.metrics.style import square_crop

__all__ = ["TrainingFID"]

log = logging.getLogger(__name__)


class TrainingFID:
    """Call as `scores = hook(g_ab, step)`: {} when `step` is not a multiple of `every`, else
    {"fid": ..., "kid_mean": ..., "kid_std": ..., "fid_is_best": 1.0 or 0.0}."""

    def __init__(self, real_dir: str | os.PathLike, source_dir: str | os.PathLike, every: int,
                 extractor: str | os.PathLike | nn.Module | None = None,
                 resize: str = "pil_bicubic", image_size: int = 256, max_images: int | None = None,
                 batch_size: int = 16, kid_subsets: int = 50, kid_subset_size: int = 1000,
                 seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 step, got {every}")
        self.every = every
        self.extractor = load_inception(extractor)
        self.resize, self.batch_size, self.device = resize, batch_size, device
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        sources = find_images(source_dir)[:max_images]
        self.source = torch.stack([square_crop(load_image(p), image_size) for p in sources])
        self.real_features = extract_features(
            find_images(real_dir)[:max_images], self.extractor, resize, batch_size, device,
            cache=FeatureCache(cache_dir))
        self.best_fid: float | None = None
        self.best_step: int | None = None
        self.real_dir, self.source_dir = Path(real_dir), Path(source_dir)

    @torch.no_grad()
    def translate(self, g_ab: nn.Module) -> torch.Tensor:
        """G_AB(held-out A) in eval mode; the module's train/eval mode is restored after."""
        was_training = g_ab.training
        g_ab.eval()
        try:
            param = next(g_ab.parameters(), None)
            device = param.device if param is not None else torch.device(self.device)
            return torch.cat([g_ab(batch.to(device)).float().cpu()
                              for batch in self.source.split(self.batch_size)])
        finally:
            g_ab.train(was_training)

    def __call__(self, g_ab: nn.Module, step: int) -> dict[str, float]:
        if step % self.every != 0:
            return {}
        fake_b = self.translate(g_ab)  # G_AB(A_heldout)
        fake_features = features_of_tensors(fake_b, self.extractor, self.resize,
                                            self.batch_size, self.device)
        fid = fid_from_features(self.real_features, fake_features)
        with warnings.catch_warnings():  # small held-out sets: the reduction is expected
            warnings.simplefilter("ignore")
            kid = kernel_inception_distance(self.real_features, fake_features, self.kid_subsets,
                                            self.kid_subset_size, self.seed)
        is_best = self.best_fid is None or fid < self.best_fid
        if is_best:
            self.best_fid, self.best_step = fid, step
        log.info("step %d: FID %.3f, KID %.5f ± %.5f%s", step, fid, kid.mean, kid.std,
                 " (best)" if is_best else "")
        return {"fid": fid, "kid_mean": kid.mean, "kid_std": kid.std,
                "fid_is_best": float(is_best)}

    def state_dict(self) -> dict:
        """Best-so-far, so a resumed run keeps judging 'best' against the whole history."""
        return {"best_fid": self.best_fid, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.best_fid, self.best_step = state["best_fid"], state["best_step"]

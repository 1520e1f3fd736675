"""FID/KID during training, both directions: every N steps translate held-out A with G_AB and
held-out B with G_BA, and score each against the other domain's held-out images.

The trainer owns logging and checkpoints; this class only computes numbers and remembers the
best score so far. Real features are computed once per set (and cached on disk); held-out
images are loaded once, resized (shorter side) and centre-cropped to `image_size`.
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
from cyclestyle.metrics.options import BEST_BY, DIRECTIONS
from cyclestyle.metrics.style import square_crop

__all__ = ["TrainingFID"]

log = logging.getLogger(__name__)

# direction: (the domain it translates, the domain its output is scored against)
DOMAINS = {"a2b": ("a", "b"), "b2a": ("b", "a")}  # G_AB(held-out A) vs B, G_BA(held-out B) vs A


class TrainingFID:
    """Call as `scores = hook(g_ab, g_ba, step)`: {} when `step` is not a multiple of `every`,
    else per direction d in (a2b, b2a) `fid_d`, `kid_d` (mean over subsets), `kid_d_std`, then
    `fid_mean` and `kid_mean` over both directions, and `is_best` (1.0 or 0.0): whether the FID
    chosen by `best` ("mean", "a2b" or "b2a") is the lowest so far."""

    def __init__(self, held_out_a: str | os.PathLike, held_out_b: str | os.PathLike, every: int,
                 extractor: str | os.PathLike | nn.Module | None = None,
                 resize: str = "pil_bicubic", image_size: int = 256, max_images: int | None = None,
                 batch_size: int = 16, kid_subsets: int = 50, kid_subset_size: int = 1000,
                 seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", best: str = "mean") -> None:
        if every < 1:
            raise ValueError(f"every: {every} is invalid: below 1; expected an integer >= 1")
        if best not in BEST_BY:
            raise ValueError(f"best: {best!r} is invalid: not a direction; expected "
                             + " / ".join(BEST_BY))
        self.every, self.best = every, best
        self.extractor = load_inception(extractor)
        self.resize, self.batch_size, self.device = resize, batch_size, device
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        files = {"a": find_images(held_out_a)[:max_images], "b": find_images(held_out_b)[:max_images]}
        cache = FeatureCache(cache_dir)
        self.sources, self.real_features = {}, {}
        for direction, (source, target) in DOMAINS.items():
            self.sources[direction] = torch.stack([square_crop(load_image(p), image_size)
                                                   for p in files[source]])
            self.real_features[direction] = extract_features(
                files[target], self.extractor, resize, batch_size, device, cache=cache)
        self.best_fid: float | None = None
        self.best_step: int | None = None
        self.held_out_dirs = {"a": Path(held_out_a), "b": Path(held_out_b)}

    @torch.no_grad()
    def translate(self, generator: nn.Module, direction: str) -> torch.Tensor:
        """generator(the direction's held-out images) in eval mode; its mode is restored after."""
        was_training = generator.training
        generator.eval()
        try:
            param = next(generator.parameters(), None)
            device = param.device if param is not None else torch.device(self.device)
            return torch.cat([generator(batch.to(device)).float().cpu()
                              for batch in self.sources[direction].split(self.batch_size)])
        finally:
            generator.train(was_training)

    def score(self, generator: nn.Module, direction: str) -> dict[str, float]:
        """FID and KID of one direction, keys suffixed with it (fid_a2b, kid_a2b, kid_a2b_std)."""
        fake = self.translate(generator, direction)  # e.g. G_AB(A_heldout)
        fake_features = features_of_tensors(fake, self.extractor, self.resize, self.batch_size,
                                            self.device)
        real = self.real_features[direction]
        with warnings.catch_warnings():  # small held-out sets: the reduction is expected
            warnings.simplefilter("ignore")
            kid = kernel_inception_distance(real, fake_features, self.kid_subsets,
                                            self.kid_subset_size, self.seed)
        return {f"fid_{direction}": fid_from_features(real, fake_features),
                f"kid_{direction}": kid.mean, f"kid_{direction}_std": kid.std}

    def __call__(self, g_ab: nn.Module, g_ba: nn.Module | None, step: int) -> dict[str, float]:
        """Scores of both directions, or of a2b alone when there is no G_BA (cut, fastcut:
        then "mean" and "b2a" judge by a2b)."""
        if step % self.every != 0:
            return {}
        generators = {"a2b": g_ab, "b2a": g_ba}
        directions = [d for d in DIRECTIONS if generators[d] is not None]
        scores: dict[str, float] = {}
        for direction in directions:
            scores |= self.score(generators[direction], direction)
        for metric in ("fid", "kid"):
            scores[f"{metric}_mean"] = sum(scores[f"{metric}_{d}"] for d in directions) / len(directions)
        chosen = scores.get(f"fid_{self.best}", scores["fid_mean"])
        is_best = self.best_fid is None or chosen < self.best_fid
        if is_best:
            self.best_fid, self.best_step = chosen, step
        summary = "; ".join(f"G_{d[0].upper()}{d[2].upper()} FID {scores[f'fid_{d}']:.3f}, KID "
                            f"{scores[f'kid_{d}']:.5f}" for d in directions)
        log.info("step %d: %s%s", step, summary, f" (best FID {self.best})" if is_best else "")
        return scores | {"is_best": float(is_best)}

    def state_dict(self) -> dict:
        """Best-so-far, so a resumed run keeps judging 'best' against the whole history."""
        return {"best_fid": self.best_fid, "best_step": self.best_step, "best_by": self.best}

    def load_state_dict(self, state: dict) -> None:
        # Checkpoints of cyclestyle < 0.2 scored G_AB alone: their best is an a2b best.
        saved_by = state.get("best_by", "a2b")
        if saved_by != self.best:
            log.warning("eval.best is %s but the checkpoint's best.pt was chosen by %s FID: "
                        "the next evaluation becomes the best so far", self.best, saved_by)
            return
        self.best_fid, self.best_step = state["best_fid"], state["best_step"]

"""What the trainer watches besides its losses: non-finite steps and held-out FID.

Kept apart from `train.py` so the loop stays readable: `NonFiniteGuard` decides whether a step's
update may be applied, and `build_training_fid` turns the `eval` config section into a
`cyclestyle.metrics.TrainingFID` hook.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from accelerate import Accelerator

from cyclestyle.train.config import ExperimentConfig

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf losses for `train.max_bad_steps` steps in a row."""


class NonFiniteGuard:
    """Skip the update of a step whose losses are not all finite; stop after K in a row.

    The check reads one flag back from the device per optimizer (the only host sync in the step)
    and, with several processes, agrees on it across them: every rank must skip together or the
    replicas drift apart.
    """

    def __init__(self, accelerator: Accelerator, max_bad_steps: int) -> None:
        self.accelerator = accelerator
        self.max_bad_steps = max_bad_steps
        self.consecutive = 0
        self.total = 0

    @property
    def enabled(self) -> bool:
        return self.max_bad_steps > 0

    def all_finite(self, losses: dict[str, torch.Tensor]) -> bool:
        if not self.enabled:
            return True
        bad = (~torch.isfinite(torch.stack([v.detach().float() for v in losses.values()]))).any()
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad.float(), reduction="sum") > 0
        return not bool(bad)

    def record(self, step: int, losses: dict[str, torch.Tensor] | None) -> None:
        """`losses` of a skipped step, or None for a good one; raises after K bad in a row."""
        if losses is None:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        names = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        named = ", ".join(names) or "on another process"
        log.warning("step %d: non-finite loss (%s); update skipped (%d in a row, %d in all)",
                    step, named, self.consecutive, self.total)
        if self.consecutive >= self.max_bad_steps:
            raise NonFiniteLossError(
                f"training stopped at step {step}: {self.consecutive} steps in a row had "
                f"non-finite losses (last: {named}); no update was applied for them and no "
                "checkpoint was written after the last good one. Try a lower train.lr, "
                "train.precision=fp32, or check the images; raise train.max_bad_steps to "
                "tolerate longer bad streaks.")

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive, self.total = state["consecutive"], state["total"]


def assert_finite_parameters(models: dict[str, torch.nn.Module], step: int) -> None:
    """Refuse to write a checkpoint whose weights are already NaN/inf: it would rotate out good ones."""
    for name, model in models.items():
        for pname, param in model.named_parameters():
            if not torch.isfinite(param).all():
                raise NonFiniteLossError(
                    f"step {step}: parameter {name}.{pname} is not finite; not writing a "
                    "checkpoint so the earlier ones stay intact. Resume from the last good one "
                    "with a lower train.lr or train.precision=fp32.")


def build_training_fid(config: ExperimentConfig, device: torch.device):
    """The held-out FID/KID hook of the `eval` section, or None when `eval.every` is 0."""
    ec = config.eval
    if not ec.every:
        return None
    from cyclestyle.metrics import TrainingFID

    source_dir, real_dir = ec.held_out_dirs(config.data)
    log.info("eval: FID/KID of G_AB(%s) against %s every %d steps", source_dir, real_dir, ec.every)
    return TrainingFID(real_dir, source_dir, every=ec.every,
                       extractor=ec.inception_weights or None, resize=ec.resize,
                       image_size=config.data.image_size, max_images=ec.max_images or None,
                       batch_size=ec.batch_size, seed=config.train.seed, device=device)


def init_tracker(accelerator: Accelerator, config: ExperimentConfig) -> None:
    """Start wandb/tensorboard; wandb without an API key logs offline instead of failing."""
    tracker, output_dir = config.train.tracker, config.output_dir
    if tracker == "none":
        return
    if tracker == "wandb" and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"  # no key: log locally, `wandb sync` later
        log.warning("wandb: no WANDB_API_KEY; logging offline under %s", output_dir)
    accelerator.init_trackers(config.train.project, config=_flatten(config.to_dict()),
                              init_kwargs={"wandb": {"dir": str(output_dir)}})


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out

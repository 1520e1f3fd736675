"""bf16 mixed precision trains: it moves the generator about as far as fp32 does.

A bf16 run whose gradients vanished (underflow, a dropped autocast scope, a detached graph)
would still produce finite losses; what it could not do is change G's output. So both runs
start from the same weights, take the same steps on the same images, and G's output change on
fixed inputs is compared, in fp32, against the fp32 run's and against a run that cannot move;
so is the fall of the cycle loss.
"""

from __future__ import annotations

import math

import pytest
import torch

from cyclestyle.train.config import load_config
from cyclestyle.train.trainer import Trainer
from tests.helpers import TINY

STEPS = 30


def output_change_after_training(image_dirs, output_dir, *overrides, steps: int = STEPS) -> dict:
    """Train `steps` steps; return mean |G_AB(x) - G_AB_init(x)| and per-step losses."""
    config = load_config(TINY, [f"data.domain_a={image_dirs[0]}", f"data.domain_b={image_dirs[1]}",
                                f"output_dir={output_dir}", "train.progress=false",
                                "train.cpu=true", "data.image_size=32", "train.pool_size=10",
                                *overrides])
    trainer = Trainer(config)
    g_ab = trainer.accelerator.unwrap_model(trainer.nets.g_ab)
    probe = torch.stack([trainer.dataset[1000 + i]["a"] for i in range(4)])  # same in every run
    with torch.no_grad():
        initial = g_ab(probe)  # (4, 3, 32, 32), fp32: no autocast here
    # What the convolutions compute in (accelerate casts G's final output back to fp32).
    dtypes = set()
    first_conv = next(m for m in g_ab.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    losses = []
    for step in range(steps):
        item = trainer.dataset[step]
        logs, applied = trainer.train_step([{"a": item["a"][None], "b": item["b"][None]}])
        assert applied, f"step {step} skipped: non-finite losses {logs}"
        losses.append({k: float(v) for k, v in logs.items()})
    with torch.no_grad():
        change = (g_ab(probe) - initial).abs().mean().item()
    return {"change": change, "losses": losses, "dtypes": dtypes}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    from tests.helpers import write_images

    root = tmp_path_factory.mktemp("precision")
    dirs = write_images(root / "A", 6, seed=1), write_images(root / "B", 6, seed=2)
    return {
        "fp32": output_change_after_training(dirs, root / "fp32", "train.precision=fp32"),
        "bf16": output_change_after_training(dirs, root / "bf16", "train.precision=bf16"),
        # The same measurement with a learning rate too small to move anything: the floor.
        "frozen": output_change_after_training(dirs, root / "frozen", "train.precision=bf16",
                                               "train.lr=1e-30", steps=5),
    }


def test_bf16_run_really_ran_in_bf16(runs):
    assert torch.bfloat16 in runs["bf16"]["dtypes"]
    assert runs["fp32"]["dtypes"] == {torch.float32}


def test_bf16_losses_are_finite(runs):
    for name in ("fp32", "bf16"):
        assert len(runs[name]["losses"]) == STEPS
        assert all(math.isfinite(v) for step in runs[name]["losses"] for v in step.values()), name


def test_bf16_moves_the_generator_about_as_far_as_fp32(runs):
    fp32, bf16, frozen = (runs[k]["change"] for k in ("fp32", "bf16", "frozen"))
    assert frozen < 1e-4, frozen  # the measurement can read zero
    assert fp32 > 100 * max(frozen, 1e-6), (fp32, frozen)
    assert bf16 > 0.3 * fp32, (bf16, fp32)
    assert bf16 < 3.0 * fp32, (bf16, fp32)  # and not wildly further either


def test_bf16_lowers_the_cycle_loss_as_fp32_does(runs):
    def drop(name: str) -> float:  # first five steps' mean minus the last five's
        cycle = [step["cycle"] for step in runs[name]["losses"]]
        return sum(cycle[:5]) / 5 - sum(cycle[-5:]) / 5

    assert drop("fp32") > 0.2, drop("fp32")  # about 0.75 of 10 in 30 steps
    assert drop("bf16") > 0.5 * drop("fp32"), (drop("bf16"), drop("fp32"))

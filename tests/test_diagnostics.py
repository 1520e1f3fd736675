"""Diagnostics: mean |G(x) - x| and the discriminators' accuracy are logged, and a generator
that copies its input or a discriminator that wins completely is warned about, with remedies."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from cyclestyle.train.diagnostics import COPY_THRESHOLD, Diagnostics
from cyclestyle.train.losses import GANLoss
from cyclestyle.train.objective import discriminator_loss
from cyclestyle.train.trainer import Trainer
from tests.helpers import tiny_config


class Constant(nn.Module):
    """A 2x2 PatchGAN stand-in: the first `real` images get `on_real`, the rest `on_fake`."""

    def __init__(self, on_real: list[float], on_fake: list[float], real: int) -> None:
        super().__init__()
        self.on_real, self.on_fake, self.real = on_real, on_fake, real

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [self.on_real] * self.real + [self.on_fake] * (len(x) - self.real)
        return torch.tensor(values).view(len(x), 1, 2, 2) + 0 * x.mean()


@pytest.mark.parametrize("mode, on_real, on_fake, acc_real, acc_fake", [
    # lsgan targets 1 / 0: above 0.5 says real. Two of four real patches right, three fakes.
    ("lsgan", [0.9, 0.6, 0.4, 0.1], [0.2, 0.3, 0.45, 0.7], 0.5, 0.75),
    # vanilla and hinge: the sign of the logit / score.
    ("vanilla", [2.0, -1.0, 0.5, 3.0], [-2.0, -0.1, 1.0, 4.0], 0.75, 0.5),
    ("hinge", [-1.0, -1.0, -1.0, 0.2], [-0.5, -0.5, -0.5, -0.5], 0.25, 1.0),
])
def test_discriminator_accuracy_counts_patches_called_right(mode, on_real, on_fake, acc_real,
                                                            acc_fake):
    real, fake = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    parts: dict[str, torch.Tensor] = {}
    discriminator_loss(Constant(on_real, on_fake, real=1), real, fake, GANLoss(mode), parts=parts)
    assert parts["acc_real"].item() == pytest.approx(acc_real)
    assert parts["acc_fake"].item() == pytest.approx(acc_fake)


def feed(diagnostics: Diagnostics, logs: int, max_steps: int = 10_000, every: int = 50,
         **values: float) -> list[str]:
    messages = []
    for i in range(1, logs + 1):
        messages += diagnostics.check(i * every, dict(values), max_steps)
    return messages


def test_a_copying_generator_is_reported_once_after_a_stretch():
    diagnostics = Diagnostics(log_every=50)  # 1000 steps = 20 logs make a stretch
    assert feed(diagnostics, 19, change_ab=0.001, change_ba=0.3) == []
    [message] = feed(diagnostics, 30, change_ab=0.001, change_ba=0.3)
    assert "G_AB barely changes its input" in message and "lambda_identity" in message
    assert "since step 50" in message


def test_the_copy_warning_rearms_after_the_generator_moves():
    diagnostics = Diagnostics(log_every=50)
    assert len(feed(diagnostics, 25, change_ba=COPY_THRESHOLD / 2)) == 1
    assert feed(diagnostics, 1, change_ba=0.5) == []
    assert len(feed(diagnostics, 25, change_ba=COPY_THRESHOLD / 2)) == 1


def test_a_short_run_needs_a_shorter_stretch_but_at_least_three_logs():
    diagnostics = Diagnostics(log_every=10)
    assert feed(diagnostics, 2, max_steps=100, every=10, change_ab=0.0) == []
    assert len(feed(diagnostics, 1, max_steps=100, every=10, change_ab=0.0)) == 1


def test_a_discriminator_that_wins_completely_is_reported_with_remedies():
    diagnostics = Diagnostics(log_every=50)
    assert feed(diagnostics, 30, d_b_acc_real=0.995, d_b_acc_fake=0.9) == []  # fakes still pass
    [message] = feed(diagnostics, 30, d_b_acc_real=1.0, d_b_acc_fake=0.999)
    assert message.split(": ", 1)[1].startswith("D_B wins completely")
    assert "diff_augment" in message and "r1_gamma" in message


def test_training_logs_the_diagnostics(image_dirs, tmp_path):
    config = tiny_config(image_dirs, tmp_path / "run", "train.max_steps=2", "train.log_every=1")
    trainer = Trainer(config)
    seen = []
    original = trainer.generator_losses

    def recording(real_a, real_b):
        total, parts, fake_a, fake_b = original(real_a, real_b)
        seen.append((fake_b - real_a).abs().mean().item())
        return total, parts, fake_a, fake_b

    trainer.generator_losses = recording
    trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [round(r["change_ab"], 5) for r in rows] == [round(x, 5) for x in seen]
    for row in rows:
        assert 0 < row["change_ba"] < 2
        for key in ("d_a_acc_real", "d_a_acc_fake", "d_b_acc_real", "d_b_acc_fake"):
            assert 0 <= row[key] <= 1


def test_the_trainer_warns_when_told_the_generator_copies(image_dirs, tmp_path, caplog):
    config = tiny_config(image_dirs, tmp_path / "run", "train.max_steps=3", "train.log_every=1")
    trainer = Trainer(config)
    trainer.nets.g_ab.forward = lambda x: x * 1.0  # a generator that copies
    with caplog.at_level(logging.WARNING, logger="cyclestyle.train.diagnostics"):
        trainer.fit()
    assert any("G_AB barely changes its input" in r.getMessage() for r in caplog.records)

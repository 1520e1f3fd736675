"""The CycleGAN objective pinned on tiny fixed networks: which tensors enter each term, with
which weight and label, against values computed here by hand.

The networks act on constant images, so every term is arithmetic on a few numbers:

    A = 0.25, B = -0.5             G_AB(x) = x + 1, G_BA(x) = 2x
    fake_b = G_AB(A) = 1.25        fake_a = G_BA(B) = -1.0
    rec_a = G_BA(fake_b) = 2.5     rec_b = G_AB(fake_a) = 0.0
    idt_a = G_BA(A) = 0.5          idt_b = G_AB(B) = 0.5
    D_A(x) = mean(x)               D_B(x) = 0.5 - mean(x)   (different, so a swap shows)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cyclestyle.train.config import LossConfig
from cyclestyle.train.losses import GANLoss
from cyclestyle.train.objective import discriminator_loss, generator_losses

A, B = 0.25, -0.5
FAKE_B, FAKE_A = A + 1, 2 * B
REC_A, REC_B = 2 * FAKE_B, FAKE_A + 1
IDT_A, IDT_B = 2 * A, B + 1
LAMBDA_CYCLE, LAMBDA_IDT = 10.0, 0.5


class Affine(nn.Module):
    """x -> scale * x + shift, elementwise: a generator whose every output is known."""

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.shift


class MeanCritic(nn.Module):
    """One logit per image: shift + sign * mean(x), shape (B, 1, 1, 1) like a 1x1 PatchGAN."""

    def __init__(self, sign: float, shift: float) -> None:
        super().__init__()
        self.sign, self.shift = sign, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift + self.sign * x.mean(dim=(1, 2, 3), keepdim=True)


def d_a_of(x: float) -> float:
    return x


def d_b_of(x: float) -> float:
    return 0.5 - x


def images(value: float) -> torch.Tensor:
    return torch.full((2, 3, 4, 4), value)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# The adversarial loss of one logit x, by hand: (generator, target real), (D, real), (D, fake).
def generator_term(mode: str, x: float) -> float:
    return {"lsgan": (x - 1) ** 2, "vanilla": softplus(-x), "hinge": -x}[mode]


def real_term(mode: str, x: float) -> float:
    return {"lsgan": (x - 1) ** 2, "vanilla": softplus(-x), "hinge": max(0.0, 1 - x)}[mode]


def fake_term(mode: str, x: float) -> float:
    return {"lsgan": x**2, "vanilla": softplus(x), "hinge": max(0.0, 1 + x)}[mode]


class L1Distance(nn.Module):
    """A stand-in for the VGG distance: mean |x - y|, so the perceptual terms are arithmetic."""

    def many(self, xs: list[torch.Tensor], y: torch.Tensor) -> list[torch.Tensor]:
        return [(x - y).abs().mean() for x in xs]


def objective(mode: str, **weights: float):
    config = LossConfig(gan_mode=mode, lambda_cycle=LAMBDA_CYCLE, lambda_identity=LAMBDA_IDT,
                        lambda_perceptual=0.0, **weights)
    return generator_losses(Affine(1, 1), Affine(2, 0), MeanCritic(1, 0), MeanCritic(-1, 0.5),
                            images(A), images(B), config, GANLoss(mode), L1Distance())


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge"])
def test_generator_objective_term_by_term(mode):
    total, parts, fake_a, fake_b = objective(mode)
    assert torch.equal(fake_b, images(FAKE_B)) and torch.equal(fake_a, images(FAKE_A))
    expected = {
        # D_B judges G_AB(A), D_A judges G_BA(B); the generators want both called real.
        "g_adv": generator_term(mode, d_b_of(FAKE_B)) + generator_term(mode, d_a_of(FAKE_A)),
        # |G_BA(G_AB(A)) - A| + |G_AB(G_BA(B)) - B|, weighted by lambda_cycle.
        "cycle": LAMBDA_CYCLE * (abs(REC_A - A) + abs(REC_B - B)),
        # |G_BA(A) - A| + |G_AB(B) - B|, weighted lambda_identity * lambda_cycle (the paper's).
        "identity": LAMBDA_IDT * LAMBDA_CYCLE * (abs(IDT_A - A) + abs(IDT_B - B)),
    }
    assert parts.keys() == expected.keys()
    for key, value in expected.items():
        assert parts[key].item() == pytest.approx(value, rel=1e-6), key
    assert total.item() == pytest.approx(sum(expected.values()), rel=1e-6)


def test_the_terms_tell_their_inputs_apart():
    """The hand values differ for the likely mix-ups, so the test above can catch them."""
    adv = generator_term("lsgan", d_b_of(FAKE_B)) + generator_term("lsgan", d_a_of(FAKE_A))
    swapped = generator_term("lsgan", d_a_of(FAKE_B)) + generator_term("lsgan", d_b_of(FAKE_A))
    assert adv != pytest.approx(swapped)
    assert abs(REC_B - B) != pytest.approx(abs(REC_B - A))  # rec_b compared with A
    assert abs(REC_A - A) != pytest.approx(abs(REC_A - B))
    assert LAMBDA_CYCLE != 1  # a dropped lambda_cycle in the identity term changes its value


def test_identity_off_leaves_no_identity_term():
    config = LossConfig(lambda_cycle=LAMBDA_CYCLE, lambda_identity=0.0, lambda_perceptual=0.0)
    _, parts, _, _ = generator_losses(Affine(1, 1), Affine(2, 0), MeanCritic(1, 0),
                                      MeanCritic(-1, 0.5), images(A), images(B), config,
                                      GANLoss("lsgan"))
    assert set(parts) == {"g_adv", "cycle"}


def test_perceptual_and_content_terms_compare_the_right_images():
    _, parts, _, _ = objective("lsgan", lambda_content=3.0)
    assert "perceptual" not in parts  # its weight is 0
    # content: translations against their sources, G_AB(A) vs A and G_BA(B) vs B
    assert parts["content"].item() == pytest.approx(3.0 * (abs(FAKE_B - A) + abs(FAKE_A - B)) / 2)
    config = LossConfig(lambda_cycle=LAMBDA_CYCLE, lambda_perceptual=2.0)
    _, parts, _, _ = generator_losses(Affine(1, 1), Affine(2, 0), MeanCritic(1, 0),
                                      MeanCritic(-1, 0.5), images(A), images(B), config,
                                      GANLoss("lsgan"), L1Distance())
    # perceptual: reconstructions against the originals
    assert parts["perceptual"].item() == pytest.approx(2.0 * (abs(REC_A - A) + abs(REC_B - B)) / 2)


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge"])
def test_discriminator_objective(mode):
    """0.5 * (GAN(D(real), real) + GAN(D(pooled fake), fake)), for each discriminator."""
    gan = GANLoss(mode)
    d_a, d_b = MeanCritic(1, 0), MeanCritic(-1, 0.5)
    loss_a = discriminator_loss(d_a, images(A), images(FAKE_A), gan)
    loss_b = discriminator_loss(d_b, images(B), images(FAKE_B), gan)
    assert loss_a.item() == pytest.approx(
        0.5 * (real_term(mode, d_a_of(A)) + fake_term(mode, d_a_of(FAKE_A))), rel=1e-6)
    assert loss_b.item() == pytest.approx(
        0.5 * (real_term(mode, d_b_of(B)) + fake_term(mode, d_b_of(FAKE_B))), rel=1e-6)


def test_multiscale_discriminator_loss_is_the_mean_over_scales():
    class TwoScales(nn.Module):
        def forward(self, x):
            return [MeanCritic(1, 0)(x), MeanCritic(1, 1)(x)]

    loss = discriminator_loss(TwoScales(), images(A), images(FAKE_A), GANLoss("lsgan"))
    per_scale = [0.5 * ((A + s - 1) ** 2 + (FAKE_A + s) ** 2) for s in (0, 1)]
    assert loss.item() == pytest.approx(sum(per_scale) / 2, rel=1e-6)


def test_the_trainer_pairs_each_discriminator_with_its_own_domain(image_dirs, tmp_path):
    """D_A sees real A and the (pooled) G_BA(B); D_B sees real B and G_AB(A): the wiring of
    `Trainer._discriminator_step`, checked by recording its calls."""
    from cyclestyle.train.trainer import Trainer
    from tests.helpers import tiny_config

    trainer = Trainer(tiny_config(image_dirs, tmp_path / "run", "train.pool_size=0"))
    generated, judged = {}, []
    original_g, original_d = trainer.generator_losses, trainer.discriminator_loss

    def record_fakes(real_a, real_b):
        total, parts, fake_a, fake_b = original_g(real_a, real_b)
        generated.update(a=fake_a.detach(), b=fake_b.detach())
        return total, parts, fake_a, fake_b

    def record_judging(d, real, fake, parts=None):
        judged.append((d, real, fake))
        return original_d(d, real, fake, parts)

    trainer.generator_losses, trainer.discriminator_loss = record_fakes, record_judging
    batch = trainer.dataset[0]
    micro = [{"a": batch["a"][None], "b": batch["b"][None]}]
    trainer.train_step(micro)
    (d_first, real_first, fake_first), (d_second, real_second, fake_second) = judged
    assert d_first is trainer.nets.d_a and d_second is trainer.nets.d_b
    assert torch.equal(real_first, micro[0]["a"]) and torch.equal(fake_first, generated["a"])
    assert torch.equal(real_second, micro[0]["b"]) and torch.equal(fake_second, generated["b"])

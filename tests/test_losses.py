"""Losses against hand-computed values; PerceptualLoss structure; LossConfig validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cyclestyle.models.vgg import VGGFeatures, vgg_layer_names
from cyclestyle.train.losses import GANLoss, LossConfig, PerceptualLoss, cycle_loss, identity_loss

PRED = torch.tensor([[0.5, -1.0]])


def softplus(v: float) -> float:
    return math.log(1 + math.exp(v))


# BCE with logits: real -> -log(sigmoid(x)) = softplus(-x); fake -> -log(1 - sigmoid(x)) = softplus(x)
@pytest.mark.parametrize(
    ("mode", "target_is_real", "for_discriminator", "expected"),
    [
        ("lsgan", True, True, ((0.5 - 1) ** 2 + (-1 - 1) ** 2) / 2),  # 2.125
        ("lsgan", False, True, (0.5**2 + (-1.0) ** 2) / 2),  # 0.625
        ("lsgan", True, False, 2.125),  # generator: same target "real"
        ("vanilla", True, True, (softplus(-0.5) + softplus(1.0)) / 2),  # 0.8937
        ("vanilla", False, True, (softplus(0.5) + softplus(-1.0)) / 2),  # 0.6437
        ("vanilla", True, False, (softplus(-0.5) + softplus(1.0)) / 2),
        ("hinge", True, True, (max(0, 1 - 0.5) + max(0, 1 + 1.0)) / 2),  # 1.25
        ("hinge", False, True, (max(0, 1 + 0.5) + max(0, 1 - 1.0)) / 2),  # 0.75
        ("hinge", True, False, -(0.5 - 1.0) / 2),  # generator: -mean = 0.25
    ],
)
def test_gan_loss_hand_computed(mode, target_is_real, for_discriminator, expected):
    loss = GANLoss(mode)(PRED, target_is_real, for_discriminator=for_discriminator)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gan_loss_averages_scales_not_elements():
    second_scale = torch.tensor([[2.0]])  # lsgan real: (2 - 1)^2 = 1
    loss = GANLoss("lsgan")([PRED, second_scale], target_is_real=True)
    assert loss.item() == pytest.approx((2.125 + 1.0) / 2)  # not (0.25 + 4 + 1) / 3


def test_hinge_generator_differs_from_discriminator_and_needs_real_target():
    hinge = GANLoss("hinge")
    assert hinge(PRED, True, for_discriminator=False).item() == pytest.approx(0.25)
    assert hinge(PRED, True, for_discriminator=True).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="target_is_real=True"):
        hinge(PRED, False, for_discriminator=False)


def test_gan_loss_rejects_unknown_mode_and_empty_list():
    with pytest.raises(ValueError, match=r"wgan.*lsgan.*vanilla.*hinge"):
        GANLoss("wgan")
    with pytest.raises(ValueError, match="empty"):
        GANLoss("lsgan")([], True)


def test_cycle_and_identity_are_mean_l1():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    other = torch.tensor([[1.5, 2.0], [2.0, 4.0]])  # |diff| = 0.5, 0, 1, 0
    assert cycle_loss(other, real).item() == pytest.approx(0.375)
    assert identity_loss(other, real).item() == pytest.approx(0.375)
    assert cycle_loss(real, real).item() == 0.0


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(["relu1_1", "relu2_1"], weights="random")


def test_perceptual_zero_for_identical_positive_otherwise(vgg):
    loss = PerceptualLoss(vgg)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(x, -x).item() > 0


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_perceptual_equals_weighted_sum_over_layers(vgg, distance):
    weights = {"relu1_1": 0.5, "relu2_1": 2.0}
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        fx, fy = vgg(x), vgg(y)
    power = 1 if distance == "l1" else 2
    expected = sum(w * ((fx[k] - fy[k]).abs() ** power).mean() for k, w in weights.items())
    actual = PerceptualLoss(vgg, layer_weights=weights, distance=distance)(x, y)
    torch.testing.assert_close(actual, expected)


def test_perceptual_runs_one_batched_forward(vgg):
    batch_sizes = []
    hook = vgg.layers[0].register_forward_hook(
        lambda m, inp, out: batch_sizes.append(inp[0].shape[0])
    )
    try:
        PerceptualLoss(vgg)(torch.zeros(3, 3, 8, 8), torch.ones(3, 3, 8, 8))
    finally:
        hook.remove()
    assert batch_sizes == [6]


def test_perceptual_many_equals_separate_calls_in_one_forward(vgg):
    loss = PerceptualLoss(vgg)
    x1, x2, y = (torch.rand(2, 3, 16, 16) * 2 - 1 for _ in range(3))
    calls = []
    hook = vgg.layers[0].register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    try:
        both = loss.many([x1, x2], y)
    finally:
        hook.remove()
    assert calls == [6]
    torch.testing.assert_close(both[0], loss(x1, y))
    torch.testing.assert_close(both[1], loss(x2, y))


def test_perceptual_gradient_reaches_x_only(vgg):
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    y = torch.randn(1, 3, 16, 16, requires_grad=True)
    PerceptualLoss(vgg)(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None  # the target is detached
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())


def test_perceptual_rejects_layers_vgg_does_not_compute(vgg):
    with pytest.raises(ValueError, match=r"relu3_1.*relu1_1"):
        PerceptualLoss(vgg, layer_weights={"relu3_1": 1.0})
    with pytest.raises(ValueError, match="cosine"):
        PerceptualLoss(vgg, distance="cosine")


def test_perceptual_loss_keeps_vgg_in_eval_mode(vgg):
    parent = nn.ModuleDict({"perceptual": PerceptualLoss(vgg)})
    parent.train()
    assert not vgg.training


def test_loss_config_defaults_are_valid_and_fit_the_prefix_weights():
    cfg = LossConfig()
    cfg.validate()
    assert cfg.lambda_identity * cfg.lambda_cycle == 5.0  # CycleGAN's effective identity weight
    names = vgg_layer_names()
    assert max(names.index(layer) for layer in cfg.perceptual_layers) <= names.index("relu3_1")
    assert cfg.needs_vgg() and not LossConfig(lambda_perceptual=0.0).needs_vgg()
    # No reconstruction in the one-way objectives: only the content term needs VGG there.
    assert not cfg.needs_vgg("cut") and LossConfig(lambda_content=1.0).needs_vgg("fastcut")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"gan_mode": "wgan"}, r"loss\.gan_mode.*lsgan.*vanilla.*hinge"),
        ({"lambda_cycle": -1.0}, r"loss\.lambda_cycle: -1\.0 is invalid: out of range; expected a finite number >= 0"),
        ({"lambda_identity": float("nan")}, r"loss\.lambda_identity"),
        # PyYAML (YAML 1.1) reads `1e-3` as a string
        ({"lambda_content": "1e-3"}, r"loss\.lambda_content: '1e-3' is invalid: not a number"),
        ({"vgg_weights": ""}, r"loss\.vgg_weights.*torchvision"),
        ({"perceptual_layers": ["relu3_9"]}, r"loss\.perceptual_layers.*relu3_9.*relu3_1"),
        ({"perceptual_layers": []}, r"loss\.perceptual_layers.*non-empty"),
    ],
)
def test_loss_config_rejects_bad_values(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        LossConfig(**changes).validate()


def test_default_layers_build_with_shared_prefix_weights(shared_vgg_prefix):
    cfg = LossConfig(vgg_weights=str(shared_vgg_prefix))
    loss = PerceptualLoss(VGGFeatures(cfg.perceptual_layers, weights=cfg.vgg_weights))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x, x.flip(-1)).item() > 0

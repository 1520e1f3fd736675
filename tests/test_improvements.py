"""The training improvements behind config switches: EMA, DiffAugment, lazy R1, and the
channels_last path that computes InstanceNorm as GroupNorm."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from torch import nn

from cyclestyle import checkpoint as ckpt
from cyclestyle.models import create_generator
from cyclestyle.models.layers import instance_norms_as_group_norms
from cyclestyle.train.augment import diff_augment
from cyclestyle.train.ema import ModelEMA
from cyclestyle.train.losses import GANLoss
from cyclestyle.train.objective import discriminator_loss
from cyclestyle.train.trainer import Trainer
from tests.helpers import tiny_config


def test_ema_follows_the_warmed_up_decay():
    net = nn.Linear(1, 1, bias=False)
    nn.init.constant_(net.weight, 0.0)
    ema = ModelEMA(net, decay=0.9)
    expected = 0.0
    for step in range(1, 30):
        nn.init.constant_(net.weight, float(step))
        ema.update(net)
        d = min(0.9, (1 + step) / (10 + step))  # written out here, not taken from the code
        expected = d * expected + (1 - d) * step
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
    d = nn.Conv2d(3, 1, kernel_size=4, bias=False)  # D(x) = <w, x>: grad_x = w everywhere
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    parts = {}
    plain = discriminator_loss(d, real, fake, GANLoss("lsgan"))
    with_r1 = discriminator_loss(d, real, fake, GANLoss("lsgan"), r1_weight=3.0, parts=parts)
    expected = d.weight.detach().pow(2).sum()
    assert parts["r1"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert (with_r1 - plain).item() == pytest.approx(3.0 * expected.item(), rel=1e-5)


def test_diff_augment_transforms_real_and_fake_alike_and_passes_gradients():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.mean(dim=(1, 2, 3), keepdim=True)

    real = torch.full((2, 3, 8, 8), 0.5)
    fake = torch.full((2, 3, 8, 8), 0.5, requires_grad=True)
    torch.manual_seed(0)
    loss = discriminator_loss(Spy(), real, fake, GANLoss("lsgan"),
                              augment=lambda x: diff_augment(x, ["translation", "cutout"]))
    loss.backward()
    shown = seen[0]
    assert not torch.equal(shown, torch.cat([real, fake.detach()]))  # D saw transformed images
    assert (shown == 0).any(dim=1).flatten(1).any(1).all()  # every image, real or fake, cut out
    assert fake.grad is not None and fake.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet", "unet_attn"])
@pytest.mark.parametrize("batch", [1, 4])
def test_group_norm_path_in_channels_last_has_the_plain_paths_gradients(name, batch):
    torch.manual_seed(0)
    args = {"resnet": {"n_blocks": 2, "base_channels": 8},
            "unet_attn": {"base_channels": 8, "channel_mults": [1, 2], "depth": 2,
                          "attention_resolutions": [4], "num_res_blocks": 1}}[name]
    plain = create_generator(name, **args)
    fast = instance_norms_as_group_norms(copy.deepcopy(plain)).to(memory_format=torch.channels_last)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in fast.modules())
    x = torch.randn(batch, 3, 32, 32)
    weight = torch.randn(batch, 3, 32, 32)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (plain(x1) * weight).sum().backward()
    (fast(x2) * weight).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-5 * x1.grad.abs().max().item())
    scale = max(p.grad.abs().max().item() for p in plain.parameters())
    for (key, p1), p2 in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-4, atol=1e-5 * scale, msg=key)


def test_ema_is_in_the_checkpoint_resumes_exactly_and_is_what_translate_loads(image_dirs, tmp_path):
    overrides = ["train.ema_decay=0.9", "train.max_steps=4", "train.checkpoint_every=2",
                 "train.keep_checkpoints=5", "train.sample_every=100", "train.log_every=2"]
    Trainer(tiny_config(image_dirs, tmp_path / "a", *overrides)).fit()
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "step_00000002.pt", tmp_path / "b" / "checkpoints")
    Trainer(tiny_config(image_dirs, tmp_path / "b", *overrides), resume=True).fit()
    a, b = ckpt.load_checkpoint(tmp_path / "a"), ckpt.load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    for name in ("g_ab", "g_ba"):
        assert a["ema"][name]["updates"] == 4
        for key, value in a["ema"][name]["weights"].items():
            assert torch.equal(value, b["ema"][name]["weights"][key]), key
    g_ab, _, _ = ckpt.load_generators(tmp_path / "a")
    averaged = a["ema"]["g_ab"]["weights"]
    trained = a["models"]["g_ab"]
    key = next(k for k in averaged if not torch.equal(averaged[k], trained[k]))
    assert torch.equal(g_ab.state_dict()[key], averaged[key])  # the EMA, not the last weights


def test_augment_and_r1_train_without_nan(image_dirs, tmp_path):
    trainer = Trainer(tiny_config(image_dirs, tmp_path / "r", "train.max_steps=3",
                                  "train.diff_augment=[color,translation,cutout]",
                                  "loss.r1_gamma=1.0", "loss.r1_every=1", "train.log_every=1"))
    trainer.fit()
    state = ckpt.load_checkpoint(tmp_path / "r")
    assert all(torch.isfinite(v).all() for sd in state["models"].values() for v in sd.values()
               if v.is_floating_point())
    rows = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert '"r1"' in rows

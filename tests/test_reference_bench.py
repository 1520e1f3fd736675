"""The reference CycleGAN update that scripts/bench_train.py times ours against is the reference.

Its networks compute what ours compute with the same weights, it makes the reference's network
calls per update (6 generator passes; 2 discriminator passes in the G step, 4 in the D step),
and it trains.
"""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from cyclestyle.models import create_discriminator, create_generator
from cyclestyle.models.factory import build_networks
from cyclestyle.train.config import load_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
REFERENCE_GENERATOR_PARAMS = 11_378_179  # ResNet-9, ngf 64, as printed by the reference repo


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref():
    return load_script("reference_cyclegan")


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_resnet_has_the_reference_parameter_count(ref):
    assert count_params(ref.ResnetGenerator()) == REFERENCE_GENERATOR_PARAMS


def test_reference_networks_compute_what_ours_compute(ref):
    """Same weights in, same images out: the benchmark compares equal networks."""
    torch.manual_seed(0)
    ref_g, our_g = ref.init_weights(ref.ResnetGenerator()), create_generator("resnet", n_blocks=9)
    for ours, theirs in zip(our_g.parameters(), ref_g.parameters(), strict=True):
        ours.data.copy_(theirs.data)
    ref_d, our_d = ref.init_weights(ref.NLayerDiscriminator()), create_discriminator("patchgan")
    ref_convs = [m for m in ref_d.modules() if isinstance(m, torch.nn.Conv2d)]
    our_convs = [m for m in our_d.modules() if isinstance(m, torch.nn.Conv2d)]
    for ours, theirs in zip(our_convs, ref_convs, strict=True):
        ours.weight.data.copy_(theirs.weight.data)
        if ours.bias is not None:
            ours.bias.data.copy_(theirs.bias.data)
        else:  # ours drops the bias before a norm; the reference's is zero from its init
            assert not theirs.bias.any()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(our_g(x), ref_g(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(our_d(x), ref_d(x), rtol=1e-4, atol=1e-5)


def test_benchmark_configures_ours_as_the_reference():
    bench = load_script("bench_train")
    nets = build_networks(load_config(None, bench.AS_REFERENCE).model)
    assert count_params(nets.g_ab) == REFERENCE_GENERATOR_PARAMS
    assert count_params(nets.d_a) == 2_765_633  # the reference's 2,764,737 + 896: see AS_REFERENCE


def test_one_reference_update_makes_the_reference_passes(ref):
    torch.manual_seed(0)
    model = ref.ReferenceCycleGAN()
    calls: Counter[str] = Counter()

    def counter(name, phase_of):
        return lambda module, inputs, output: calls.update([f"{name}{phase_of()}"])

    def d_phase(net):
        # The G step runs with the discriminators frozen, the D step with them trainable.
        return lambda: " (D step)" if next(net.parameters()).requires_grad else " (G step)"

    for name in ("netG_A", "netG_B"):
        getattr(model, name).register_forward_hook(counter(name, lambda: ""))
    for name in ("netD_A", "netD_B"):
        net = getattr(model, name)
        net.register_forward_hook(counter(name, d_phase(net)))
    before = [p.clone() for p in model.netG_A.parameters()]
    model.set_input(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    model.optimize_parameters()
    assert calls == {"netG_A": 3, "netG_B": 3,  # fake_B, rec_B, idt_A / fake_A, rec_A, idt_B
                     "netD_A (G step)": 1, "netD_B (G step)": 1,
                     "netD_A (D step)": 2, "netD_B (D step)": 2}  # real and pooled fake
    assert sum(calls[k] for k in calls if k.startswith("netG")) == 6
    assert sum(calls[k] for k in calls if "(D step)" in k) == 4
    assert all(math.isfinite(v) for v in model.losses().values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.netG_A.parameters()))


def test_reference_update_lowers_the_cycle_loss(ref):
    """A few updates on one image pair lower the cycle loss (the GAN terms need not fall)."""
    torch.manual_seed(0)
    random.seed(0)
    model = ref.ReferenceCycleGAN()
    real_a, real_b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    history = []
    for _ in range(6):
        model.set_input(real_a, real_b)
        model.optimize_parameters()
        history.append(model.losses())
    assert history[-1]["cycle"] < 0.95 * history[0]["cycle"], history
    assert all(math.isfinite(v) for losses in history for v in losses.values())

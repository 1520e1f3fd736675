"""CUT / FastCUT (Park et al. 2020): PatchNCE against hand-computed values, the objective's
terms and weights, the projection heads, and one-way runs end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cyclestyle import checkpoint as ckpt
from cyclestyle.models import create_generator
from cyclestyle.models.factory import ModelConfig
from cyclestyle.models.patch_nce import PatchProjection, encoder_channels
from cyclestyle.options import ConfigError
from cyclestyle.train.config import LossConfig
from cyclestyle.train.losses import GANLoss, patch_nce_loss
from cyclestyle.train.objective import contrastive_generator_losses
from cyclestyle.train.trainer import Trainer
from cyclestyle.translate import Translator
from tests.helpers import tiny_config

TAU = 0.5


def test_patch_nce_rewards_each_patch_for_finding_its_own_source():
    """Two unit patches; q_i . k_j is 1 on the matching pair and 0 across, so the positive's
    softmax share is e^(1/tau) / (e^(1/tau) + 1) and the loss log(1 + e^(-1/tau))."""
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, P=2, D=2)
    matching = patch_nce_loss([q], [q.clone()], TAU)
    assert matching.item() == pytest.approx(math.log(1 + math.exp(-1 / TAU)), rel=1e-6)
    swapped = patch_nce_loss([q], [q.flip(1)], TAU)  # each query's own key is the wrong one
    assert swapped.item() == pytest.approx(math.log(1 + math.exp(1 / TAU)), rel=1e-6)


def test_patch_nce_averages_layers_and_keeps_keys_out_of_the_gradient():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    loss = patch_nce_loss([q, q], [k, k.flip(1)], TAU)
    expected = 0.5 * (math.log(1 + math.exp(-1 / TAU)) + math.log(1 + math.exp(1 / TAU)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0


def test_projection_heads_sample_shared_positions_and_normalise():
    torch.manual_seed(0)
    heads = PatchProjection([3, 5], out_channels=4)
    features = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    projected, positions = heads(features, patches=6)
    assert [tuple(p.shape) for p in projected] == [(2, 6, 4), (2, 4, 4)]  # 2x2 has only 4
    assert len(set(positions[0].tolist())) == 6
    for p in projected:
        assert torch.allclose(p.norm(dim=-1), torch.ones(p.shape[:2]), atol=1e-6)
    again, _ = heads(features, patches=6, positions=positions)
    assert all(torch.equal(a, b) for a, b in zip(projected, again))


@pytest.mark.parametrize("name", ["unet_attn", "resnet"])
def test_encoder_features_are_the_generators_own(name):
    """encode() reads the generator's own layers: its first entry is the (padded) input, and
    changing a stem weight changes the second."""
    g = create_generator(name, base_channels=4, **({"depth": 2, "channel_mults": [1, 2],
                                                    "attention_resolutions": [4]}
                                                   if name == "unet_attn" else {"n_blocks": 2}))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    features = g.encode(x)
    assert torch.equal(features[0], x)
    assert encoder_channels(g) == [f.shape[1] for f in features]
    first_conv = next(m for m in g.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        first_conv.weight.add_(1.0)
    assert not torch.equal(g.encode(x)[1], features[1])


class Shift(nn.Module):
    """G(x) = x + 0.25; its 'encoder' is the pixels themselves."""

    def forward(self, x):
        return x + 0.25

    def encode(self, x):
        return [x]


class AllPositions(nn.Module):
    """Heads that keep every pixel and only normalise it, so the loss is computable here."""

    def forward(self, features, patches, positions=None):
        return [F.normalize(f.flatten(2).transpose(1, 2), dim=-1) for f in features], None


class MeanCritic(nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize("objective, weight, identity", [("cut", 1.0, True),
                                                         ("fastcut", 10.0, False)])
def test_the_contrastive_objective_terms_and_weights(objective, weight, identity):
    torch.manual_seed(0)
    real_a, real_b = torch.rand(1, 3, 4, 4) - 0.5, torch.rand(1, 3, 4, 4) - 0.5
    g = Shift()
    lc = LossConfig(nce_temperature=TAU)
    total, parts, fake_b = contrastive_generator_losses(
        g, g.encode, MeanCritic(), AllPositions(), real_a, real_b, lc, objective, GANLoss("lsgan"))
    assert torch.equal(fake_b, real_a + 0.25)

    def nce(x):  # PatchNCE between x and its translation, by this file's heads
        heads = AllPositions()
        return patch_nce_loss(heads([x + 0.25], 0)[0], heads([x], 0)[0], TAU)

    expected_nce = 0.5 * (nce(real_a) + nce(real_b)) if identity else nce(real_a)
    assert parts["nce"].item() == pytest.approx(weight * expected_nce.item(), rel=1e-6)
    d_fake = (real_a + 0.25).mean().item()
    assert parts["g_adv"].item() == pytest.approx((d_fake - 1) ** 2, rel=1e-6)  # label: real
    assert total.item() == pytest.approx(parts["nce"].item() + parts["g_adv"].item(), rel=1e-6)


def test_the_content_term_compares_the_translation_with_its_source():
    torch.manual_seed(0)
    real_a, real_b = torch.rand(1, 3, 4, 4) - 0.5, torch.rand(1, 3, 4, 4) - 0.5
    g = Shift()
    distance = lambda x, y: (x - y).abs().mean()  # noqa: E731 - a stand-in for VGG
    _, parts, _ = contrastive_generator_losses(
        g, g.encode, MeanCritic(), AllPositions(), real_a, real_b,
        LossConfig(lambda_content=2.0), "cut", GANLoss("lsgan"), perceptual=distance)
    assert parts["content"].item() == pytest.approx(2.0 * 0.25, rel=1e-6)  # |G(A) - A| = 0.25


def test_an_explicit_lambda_nce_overrides_the_objectives_own():
    assert LossConfig().nce_weight("cut") == 1.0 and LossConfig().nce_weight("fastcut") == 10.0
    assert LossConfig(lambda_nce=3.0).nce_weight("fastcut") == 3.0


def test_unknown_objective_and_encoderless_generator_are_refused():
    with pytest.raises(ConfigError, match="model.objective: 'cutt' is invalid.*cyclegan, cut"):
        ModelConfig(objective="cutt").validate()
    with pytest.raises(ConfigError, match="model.generator: 'reference_unet' is invalid.*resnet"):
        ModelConfig(objective="cut", generator="reference_unet").validate()


def test_a_cut_run_trains_one_way_and_its_checkpoint_says_so(image_dirs, tmp_path):
    config = tiny_config(image_dirs, tmp_path / "run", "train.max_steps=2",
                         "model.objective=fastcut")
    trainer = Trainer(config)
    before = {k: v.clone() for k, v in trainer.nets.nce_heads.state_dict().items()}
    path = trainer.fit()
    state = ckpt.load_checkpoint(path)
    assert sorted(state["models"]) == ["d_b", "g_ab", "nce_heads"]
    after = state["models"]["nce_heads"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the heads are trained
    g_ab, g_ba, _ = ckpt.load_generators(path)
    assert g_ba is None and g_ab(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    Translator.from_checkpoint(path, direction="a2b")
    with pytest.raises(ValueError, match="direction: 'b2a' is invalid: .* one-way"):
        Translator.from_checkpoint(path, direction="b2a")


def test_held_out_evaluation_of_a_one_way_run_scores_g_ab_alone(image_dirs, tmp_path,
                                                                 tiny_inception, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    Trainer(tiny_config(image_dirs, out, "train.max_steps=2", "model.objective=cut",
                        f"eval.domain_a={image_dirs[0]}", f"eval.domain_b={image_dirs[1]}",
                        "eval.every=2", f"eval.inception_weights={tiny_inception}")).fit()
    rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "eval_fid_mean" in r]
    assert len(rows) == 1 and "eval_fid_b2a" not in rows[0]
    assert rows[0]["eval_fid_mean"] == rows[0]["eval_fid_a2b"] >= 0
    assert (out / "checkpoints" / ckpt.BEST_NAME).is_file()

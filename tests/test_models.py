"""Spec for cyclestyle.models: every registered network, the registry, and each family's details."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from cyclestyle.models import (
    PatchGANDiscriminator,
    ResnetGenerator,
    UNetAttnGenerator,
    channels_last_is_safe,
    create_discriminator,
    create_generator,
    discriminator_arguments,
    generator_arguments,
    list_discriminators,
    list_generators,
    receptive_field,
    register_generator,
)
from cyclestyle.models import attention as attention_module
from cyclestyle.models.attention import SelfAttention2d
from cyclestyle.models.layers import crop_to, group_count, pad_to_multiple
from cyclestyle.models.patchgan import output_size
from cyclestyle.models.resnet import ResnetBlock

# A tiny configuration per registered model. A newly registered model without an entry here
# fails test_every_registered_model_has_a_tiny_config and the shared tests below.
TINY_GENERATOR_ARGS = {
    "unet_attn": dict(base_channels=8, depth=3, channel_mults=[1, 2, 2],
                      attention_resolutions=[4, 8], attention_heads=2),
    "resnet": dict(base_channels=8, n_blocks=2),
    "reference_unet": dict(base_channels=4, num_downs=5),
    "cut_resnet": dict(base_channels=8, n_blocks=2),
}
TINY_DISCRIMINATOR_ARGS = {
    "patchgan": dict(base_channels=8, n_layers=2),
}
IMAGE_SIZES = [(32, 32), (67, 131)]


def tiny_generator(name: str, **overrides) -> nn.Module:
    if name not in TINY_GENERATOR_ARGS:
        pytest.fail(f"generator {name!r} is registered but has no entry in TINY_GENERATOR_ARGS")
    torch.manual_seed(0)
    return create_generator(name, **{**TINY_GENERATOR_ARGS[name], **overrides})


def tiny_discriminator(name: str, **overrides) -> nn.Module:
    if name not in TINY_DISCRIMINATOR_ARGS:
        pytest.fail(f"discriminator {name!r} is registered but has no entry in TINY_DISCRIMINATOR_ARGS")
    torch.manual_seed(0)
    return create_discriminator(name, **{**TINY_DISCRIMINATOR_ARGS[name], **overrides})


def patch_maps(output: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return output if isinstance(output, list) else [output]


def biases_cancelled_by_instance_norm(model: nn.Module) -> set[int]:
    """ids of conv biases that an InstanceNorm right after subtracts again (their grad is 0)."""
    cancelled = set()
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        children = list(seq.children())
        for before, after in zip(children, children[1:]):
            last = list(before.modules())[-1]
            if isinstance(after, nn.InstanceNorm2d) and getattr(last, "bias", None) is not None:
                cancelled.add(id(last.bias))
    return cancelled


def assert_every_parameter_learns(model: nn.Module, loss_fn) -> None:
    """Backward reaches every parameter with a finite gradient; after one SGD step (which
    moves the zero-initialised attention projections off zero) every parameter's gradient is
    non-zero, except biases an InstanceNorm cancels (the reference ResNet keeps those)."""
    loss_fn().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    loss_fn().backward()
    cancelled = biases_cancelled_by_instance_norm(model)
    dead = [n for n, p in model.named_parameters() if id(p) not in cancelled and not p.grad.any()]
    assert not dead, f"parameters with an all-zero gradient: {dead}"


# ---------------------------------------------------------------- every registered model


def test_every_registered_model_has_a_tiny_config():
    assert set(list_generators()) == set(TINY_GENERATOR_ARGS)
    assert set(list_discriminators()) == set(TINY_DISCRIMINATOR_ARGS)
    assert "unet_attn" in list_generators() and "patchgan" in list_discriminators()


@pytest.mark.parametrize("size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list_generators())
def test_generator_output_same_shape_finite_and_in_range(name, size):
    g = tiny_generator(name)
    x = torch.randn(2, 3, *size)
    y = g(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1.0


@pytest.mark.parametrize("name", list_generators())
def test_generator_gradients_reach_every_parameter(name):
    g = tiny_generator(name)
    x, target = torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    assert_every_parameter_learns(g, lambda: F.mse_loss(g(x), target))


@pytest.mark.parametrize("name", list_generators())
def test_generator_input_gradient_and_stride(name):
    g = tiny_generator(name)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    g(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert isinstance(g.stride, int) and g.stride >= 1


@pytest.mark.parametrize("name", list_generators())
def test_generator_runs_on_a_single_pixel(name):
    y = tiny_generator(name)(torch.randn(1, 3, 1, 1))
    assert y.shape == (1, 3, 1, 1) and torch.isfinite(y).all()


@pytest.mark.parametrize("size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list_discriminators())
def test_discriminator_output_finite_patch_map(name, size):
    d = tiny_discriminator(name)
    maps = patch_maps(d(torch.randn(2, 3, *size)))
    for patch_map in maps:
        assert patch_map.shape[:2] == (2, 1) and patch_map.shape[2] >= 1 and patch_map.shape[3] >= 1
        assert torch.isfinite(patch_map).all()


@pytest.mark.parametrize("name", list_discriminators())
def test_discriminator_gradients_reach_every_parameter(name):
    d = tiny_discriminator(name)
    x = torch.randn(2, 3, 32, 32)
    assert_every_parameter_learns(d, lambda: sum(m.square().mean() for m in patch_maps(d(x))))


@pytest.mark.parametrize("kind", ["generator", "discriminator"])
def test_model_rebuilds_from_its_recorded_config(kind):
    create = create_generator if kind == "generator" else create_discriminator
    for name in list_generators() if kind == "generator" else list_discriminators():
        model = tiny_generator(name) if kind == "generator" else tiny_discriminator(name)
        config = json.loads(json.dumps(model.config))  # survives a JSON/YAML round trip
        rebuilt = create(model.registry_name, **config)
        rebuilt.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 32, 32)
        for a, b in zip(patch_maps(model(x)), patch_maps(rebuilt(x))):
            torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- registry


def test_unknown_name_raises_key_error_listing_registered_names():
    with pytest.raises(KeyError, match="resnet.*unet_attn"):
        create_generator("pix2pixhd")
    with pytest.raises(KeyError, match="patchgan"):
        create_discriminator("stylegan")
    with pytest.raises(KeyError, match="unet_attn"):
        generator_arguments("nope")


def test_unknown_argument_is_named_and_accepted_ones_listed():
    with pytest.raises(TypeError, match=r"n_blocks.*accepted.*attention_resolutions"):
        create_generator("unet_attn", n_blocks=9)
    with pytest.raises(TypeError, match=r"ndf.*accepted.*base_channels"):
        create_discriminator("patchgan", ndf=64)


def test_non_json_argument_is_rejected():
    with pytest.raises(TypeError, match="norm"):
        create_generator("resnet", norm=nn.InstanceNorm2d)


@pytest.mark.parametrize(
    ("name", "kwargs", "named"),
    [
        ("unet_attn", dict(norm="batch"), "norm='batch'.*instance"),
        ("unet_attn", dict(upsample="bilinear"), "upsample='bilinear'.*resize_conv"),
        ("unet_attn", dict(depth=3), "channel_mults.*depth=3"),
        ("unet_attn", dict(attention_resolutions=[3]), r"attention_resolutions.*\[1, 2, 4, 8, 16\]"),
        ("unet_attn", dict(attention_heads=3), "attention_heads=3"),
        ("unet_attn", dict(dropout=1.5), "dropout"),
        ("resnet", dict(n_blocks=0), "n_blocks=0"),
        ("resnet", dict(upsample="pixelshuffle"), "upsample"),
    ],
)
def test_invalid_generator_values_raise_value_error_naming_them(name, kwargs, named):
    with pytest.raises(ValueError, match=named):
        create_generator(name, **kwargs)


def test_invalid_discriminator_values_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="norm='batch'"):
        create_discriminator("patchgan", norm="batch")
    with pytest.raises(ValueError, match="num_scales=0"):
        create_discriminator("patchgan", num_scales=0)


def test_argument_tables_list_defaults_as_json_with_channels_first():
    for name in list_generators():
        arguments = generator_arguments(name)
        assert list(arguments)[:2] == ["in_channels", "out_channels"]
        assert arguments["in_channels"] == 3 and arguments["out_channels"] == 3
        json.dumps(arguments)
    for name in list_discriminators():
        arguments = discriminator_arguments(name)
        assert list(arguments)[0] == "in_channels"
        json.dumps(arguments)
    assert generator_arguments("unet_attn")["channel_mults"] == [1, 2, 4, 4]


def test_registering_a_malformed_model_fails_at_import_time():
    with pytest.raises(ValueError, match="already registered"):
        register_generator("resnet")(ResnetGenerator)

    class NoDefault(nn.Module):
        def __init__(self, in_channels=3, out_channels=3, width=None, depth: int = 2, *, bad):
            super().__init__()

    with pytest.raises(TypeError, match="bad"):
        register_generator("test_no_default")(NoDefault)
    assert "test_no_default" not in list_generators()


# ---------------------------------------------------------------- unet_attn


def attention_factors(model: UNetAttnGenerator, size: int = 32) -> list[int]:
    """Downsampling factor of the feature map each attention layer sees, in call order."""
    factors = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: factors.append(size // inp[0].shape[-1]))
        for m in model.modules()
        if isinstance(m, SelfAttention2d)
    ]
    model(torch.randn(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return factors


@pytest.mark.parametrize(
    ("resolutions", "expected"),
    [([4, 8], [4, 8, 4]), ([], []), ([1, 2], [1, 2, 2, 1]), ([8], [8])],
)
def test_unet_attention_sits_at_configured_resolutions(resolutions, expected):
    g = tiny_generator("unet_attn", attention_resolutions=resolutions)  # depth 3: stride 8
    assert g.stride == 8
    assert sum(isinstance(m, SelfAttention2d) for m in g.modules()) == len(expected)
    assert attention_factors(g) == expected  # encoder levels, bottleneck, decoder levels


@pytest.mark.parametrize("norm", ["instance", "group", "none"])
@pytest.mark.parametrize("upsample", ["resize_conv", "transposed"])
def test_unet_norm_and_upsample_variants(norm, upsample):
    g = tiny_generator("unet_attn", norm=norm, upsample=upsample, num_res_blocks=2, dropout=0.1)
    norms = {"instance": nn.InstanceNorm2d, "group": nn.GroupNorm, "none": nn.Identity}
    assert any(isinstance(m, norms[norm]) for m in g.modules())
    has_transposed = any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert has_transposed == (upsample == "transposed")
    x = torch.randn(2, 3, 32, 32)  # the shared size: fewer new conv shapes to warm up
    y = g(x)
    y.mean().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_unet_defaults_and_size():
    g = UNetAttnGenerator()
    assert g.stride == 16
    assert sum(p.numel() for p in g.parameters()) == 12_887_683
    assert len(attention_factors(g, size=64)) == 3  # 1/8 encoder, 1/16 bottleneck, 1/8 decoder


def test_attention_starts_as_identity():
    attention = SelfAttention2d(8, num_heads=2, norm="instance")
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(attention(x), x)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("norm", ["none", "instance"])
def test_attention_matches_hand_computed_softmax(norm, memory_format):
    torch.manual_seed(0)
    channels, heads, height, width = 8, 2, 3, 5
    attention = SelfAttention2d(channels, num_heads=heads, norm=norm)
    nn.init.normal_(attention.proj.weight)
    nn.init.normal_(attention.proj.bias)
    x = torch.randn(2, channels, height, width)

    h = x
    if norm == "instance":  # per image and channel over H, W; biased variance, eps 1e-5
        mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
        h = (x - mean) / torch.sqrt(var + 1e-5)
    tokens = h.flatten(2).transpose(1, 2)  # (B, T, C)
    q, k, v = (tokens @ attention.qkv.weight[:, :, 0, 0].T).chunk(3, dim=-1)  # (B, T, C) each
    head_size = channels // heads
    outputs = []
    for i in range(heads):
        cols = slice(i * head_size, (i + 1) * head_size)
        weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(head_size), -1)
        outputs.append(weights @ v[..., cols])  # (B, T, hs)
    mixed = torch.cat(outputs, dim=-1)  # (B, T, C)
    projected = mixed @ attention.proj.weight[:, :, 0, 0].T + attention.proj.bias
    expected = x + projected.transpose(1, 2).reshape(x.shape)
    out = attention(x.contiguous(memory_format=memory_format))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # The input's layout comes back: channels_last leaking into a later InstanceNorm on CPU
    # would give wrong gradients at batch 1.
    assert out.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_attention_hands_sdpa_contiguous_heads(monkeypatch, memory_format):
    """Strided q/k/v send SDPA to its math path, which builds the T x T matrix (3-6x slower,
    GiBs of memory at 1024x1024 images); the fused kernels need each head's features dense."""
    seen = []
    real_sdpa = attention_module.F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append([t.stride(-1) for t in (q, k, v)])
        return real_sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    attention = SelfAttention2d(8, num_heads=2)
    attention(torch.randn(2, 8, 6, 5).contiguous(memory_format=memory_format))
    assert seen == [[1, 1, 1]]


def test_attention_projection_gets_gradient_while_zero():
    attention = SelfAttention2d(8, num_heads=2)
    attention(torch.randn(1, 8, 4, 4)).square().sum().backward()
    assert attention.proj.weight.grad.abs().sum() > 0
    assert not attention.qkv.weight.grad.any()  # blocked by the zero projection until it moves


# ---------------------------------------------------------------- resnet


def test_resnet_has_n_residual_blocks():
    for n_blocks in (6, 9):
        g = ResnetGenerator(base_channels=4, n_blocks=n_blocks)
        assert sum(isinstance(m, ResnetBlock) for m in g.modules()) == n_blocks


def test_resnet9_parameter_count_matches_reference_cyclegan():
    g = create_generator("resnet")
    assert g.stride == 4
    assert sum(p.numel() for p in g.parameters()) == 11_378_179


def test_resnet_upsample_and_norm_variants():
    reference = tiny_generator("resnet")
    count = sum(p.numel() for p in reference.parameters())
    resize = tiny_generator("resnet", upsample="resize_conv")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resize.modules())
    assert sum(p.numel() for p in resize.parameters()) == count  # same kernels, no checkerboard
    affine = tiny_generator("resnet", affine_norm=True)
    norms = [m for m in affine.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert sum(p.numel() for p in affine.parameters()) == count + sum(2 * m.num_features for m in norms)
    for g in (resize, tiny_generator("resnet", norm="group"), tiny_generator("resnet", norm="none")):
        x = torch.randn(2, 3, 32, 32)
        assert g(x).shape == x.shape


# ---------------------------------------------------------------- patchgan


@pytest.mark.parametrize(("n_layers", "field"), [(1, 16), (3, 70), (5, 286)])
def test_patchgan_receptive_field(n_layers, field):
    assert receptive_field(n_layers) == field  # the 16/70/286 patches of the pix2pix paper


def test_patchgan_receptive_field_matches_the_network():
    # With no norm (InstanceNorm would couple all pixels), one logit depends on exactly a
    # 70x70 input window.
    d = PatchGANDiscriminator(base_channels=4, n_layers=3, norm="none")
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    patch_map = d(x)
    patch_map[0, 0, patch_map.shape[2] // 2, patch_map.shape[3] // 2].backward()
    rows, cols = x.grad.abs().sum((0, 1)).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


@pytest.mark.parametrize("n_layers", [1, 3, 5, 12, 16])
def test_patchgan_minimum_size_is_the_smallest_side_giving_a_patch(n_layers):
    d = PatchGANDiscriminator(base_channels=1, n_layers=n_layers, norm="none")
    smallest = d.minimum_size()
    assert output_size(n_layers, smallest) >= 1 > output_size(n_layers, smallest - 1)
    if smallest <= 512:  # deep ones need inputs too big to run here
        assert d(torch.randn(1, 3, smallest, smallest)).shape[-2:] == (1, 1)
        with pytest.raises(ValueError, match=f"needs at least {smallest} px"):
            d(torch.randn(1, 3, smallest - 1, smallest - 1))


def test_patchgan_multiscale_returns_one_map_per_scale_with_separate_weights():
    d = tiny_discriminator("patchgan", num_scales=3)
    maps = d(torch.randn(2, 3, 64, 64))
    assert isinstance(maps, list) and len(maps) == 3
    assert [m.shape[-1] for m in maps] == sorted((m.shape[-1] for m in maps), reverse=True)
    first, second = (list(net.parameters())[0] for net in d.scales[:2])
    assert first.data_ptr() != second.data_ptr()
    assert isinstance(tiny_discriminator("patchgan")(torch.randn(1, 3, 32, 32)), torch.Tensor)


def test_patchgan_spectral_norm_parametrizes_every_conv():
    d = tiny_discriminator("patchgan", spectral_norm=True, num_scales=2)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * (2 + 2)  # per scale: n_layers stride-2 convs + 2 stride-1 convs
    assert all(parametrize.is_parametrized(conv, "weight") for conv in convs)
    plain = tiny_discriminator("patchgan")
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


def test_patchgan_structure_and_norm_variants():
    for norm, norm_type in (("instance", nn.InstanceNorm2d), ("group", nn.GroupNorm)):
        d = tiny_discriminator("patchgan", norm=norm)
        assert sum(isinstance(m, norm_type) for m in d.modules()) == 2  # not after first/last conv
    d = tiny_discriminator("patchgan", norm="none")
    layers = list(d.scales[0])
    assert isinstance(layers[-1], nn.Conv2d) and layers[-1].out_channels == 1  # logits, no sigmoid
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2
    assert all(m.bias is not None for m in d.modules() if isinstance(m, nn.Conv2d))


def test_patchgan_too_small_input_is_a_clear_error():
    d = tiny_discriminator("patchgan", num_scales=2)
    with pytest.raises(ValueError, match="too small"):
        d(torch.randn(1, 3, 8, 8))


# ---------------------------------------------------------------- layers


def test_pad_to_multiple_round_trips_and_handles_tiny_images():
    x = torch.randn(1, 3, 67, 131)
    padded, crop = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (80, 144)
    assert torch.equal(crop_to(padded, crop), x)
    one = torch.randn(1, 3, 1, 1)
    padded, crop = pad_to_multiple(one, 16, min_size=32)
    assert padded.shape[-2:] == (32, 32) and torch.equal(padded, one.expand(1, 3, 32, 32))
    same, _ = pad_to_multiple(torch.randn(1, 3, 32, 32), 16)
    assert same.shape[-2:] == (32, 32)


def test_pad_to_multiple_centres_the_image_when_top_and_left_padding_differ():
    x = torch.randn(1, 3, 67, 141)
    padded, crop = pad_to_multiple(x, 16)
    assert (crop.top, crop.left) == (6, 1)  # 13 rows: 6 above, 7 below; 3 columns: 1 and 2
    assert torch.equal(padded[..., 6:73, 1:142], x)
    assert torch.equal(crop_to(padded, crop), x)


def test_group_count_divides_channels():
    assert [group_count(c) for c in (64, 256, 8, 3, 1, 96)] == [32, 32, 4, 1, 1, 32]


def test_channels_last_is_unsafe_only_for_instance_norm_at_batch_one_on_cpu():
    instance = tiny_generator("resnet")
    group = tiny_generator("unet_attn", norm="group")
    cpu = torch.device("cpu")
    assert not channels_last_is_safe(instance, cpu, batch_size=1)
    assert channels_last_is_safe(instance, cpu, batch_size=2)
    assert channels_last_is_safe(instance, torch.device("cuda"), batch_size=1)
    assert channels_last_is_safe(group, cpu, batch_size=1)
    assert not channels_last_is_safe(tiny_discriminator("patchgan"), "cpu", batch_size=1)


def gradients(model: nn.Module, x: torch.Tensor, memory_format: torch.memory_format) -> list:
    model = model.to(memory_format=memory_format)
    x = x.clone().to(memory_format=memory_format).requires_grad_(True)
    model.zero_grad()
    model(x).square().mean().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("name", "norm", "batch_size"), [
    ("resnet", "instance", 2), ("resnet", "group", 1), ("unet_attn", "none", 1),
])
def test_channels_last_gives_the_same_gradients_where_declared_safe(name, norm, batch_size):
    # (Where it is declared unsafe, torch 2.14.1 on CPU gets conv -> InstanceNorm -> conv input
    # gradients wrong by more than 100% at batch size 1.)
    model = tiny_generator(name, norm=norm)
    assert channels_last_is_safe(model, torch.device("cpu"), batch_size)
    x = torch.randn(batch_size, 3, 32, 32)
    contiguous = gradients(model, x, torch.contiguous_format)
    channels_last = gradients(model, x, torch.channels_last)
    for a, b in zip(contiguous, channels_last):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_unet_input_skip_adds_the_input_to_the_heads_preactivation():
    """tanh(head(h) + atanh(x)): with the head's last conv at zero the output is the input
    (to within the 0.999 clamp), and the head's output shifts it in tanh space."""
    g = create_generator("unet_attn", base_channels=4, depth=2, channel_mults=[1, 2],
                         attention_resolutions=[], input_skip=True)
    last = g.head[-1]
    nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
    x = torch.rand(2, 3, 12, 20) * 1.6 - 0.8
    assert torch.allclose(g(x), x, atol=1e-6)
    with torch.no_grad():
        last.bias.fill_(0.5)
    assert torch.allclose(g(x), torch.tanh(torch.atanh(x) + 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="input_skip=True needs in_channels == out_channels"):
        create_generator("unet_attn", in_channels=1, out_channels=3, input_skip=True)

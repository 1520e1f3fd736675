"""Generator files of the reference implementations, mapped onto our registry's networks.

    junyanz/pytorch-CycleGAN-and-pix2pix   latest_net_G_A.pth, latest_net_G_B.pth, latest_net_G.pth,
                                           its model zoo's NAME.pth
        --netG resnet_9blocks, resnet_6blocks  -> resnet (InstanceNorm or none)
        --netG unet_256, unet_128              -> reference_unet (BatchNorm, InstanceNorm or none)
    taesungp/contrastive-unpaired-translation (CUT, FastCUT)   latest_net_G.pth
        --netG resnet_9blocks (anti-aliased)   -> cut_resnet
        with --no_antialias --no_antialias_up  -> resnet

Everything is read from the state dict's key names and shapes (the files hold no options):
which netG, ngf, the number of ResNet blocks, the norm, and whether CUT's blurred sampling is
there. The reference's ResNet is one `nn.Sequential` (`model.0` a ReflectionPad2d, `model.1` the
first conv, ...); ours folds each reflection pad into its conv (`padding_mode="reflect"`), so
layer i of the reference is our layer i - 1 (i - 2 for the last conv, after the second pad that
is folded too), and a block's convs `conv_block.1` / `conv_block.5` (`.6` with dropout) are our
`block.0` / `block.4`. The U-Net keeps the reference's keys (cyclestyle.models.reference_unet).

As the reference's `__patch_instance_norm_state_dict` does, running statistics stored for
InstanceNorm layers by PyTorch < 0.4 are dropped. No torch import here beyond tensors: the
networks are built and checked by the caller (cyclestyle.checkpoint.generators_from_weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

NETGS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
_STATS = ("running_mean", "running_var", "num_batches_tracked")
_TOP = re.compile(r"^model\.(\d+)\.(.+)$")
SUPPORTED = ("junyanz/pytorch-CycleGAN-and-pix2pix generators (netG resnet_9blocks, "
             "resnet_6blocks, unet_256, unet_128) and CUT/FastCUT's latest_net_G.pth")


class ReferenceFormatError(ValueError):
    """A state dict that is not a generator of a supported reference implementation."""


@dataclass
class ReferenceGenerator:
    """A reference generator file, translated: rebuild with create_generator(generator, **args)
    and load `state_dict`."""

    netg: str  # the reference's name for it, e.g. "resnet_9blocks", "unet_256"
    implementation: str  # "pytorch-CycleGAN-and-pix2pix" or "CUT"
    generator: str  # our registry name
    generator_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)


def is_reference_state_dict(obj: Any) -> bool:
    """A flat mapping of names to tensors with the reference's `model.` keys (not ours)."""
    return (isinstance(obj, dict) and bool(obj) and "format_version" not in obj
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
            and all(_strip(k).startswith("model.") for k in obj))


def convert_reference_state_dict(state: dict[str, torch.Tensor]) -> ReferenceGenerator:
    """Our registry name, constructor arguments and state dict for a reference generator."""
    state = {_strip(k): v for k, v in state.items()}
    if not is_reference_state_dict(state):
        raise ReferenceFormatError(f"not a generator state dict of {SUPPORTED}")
    if any(k.startswith("model.model.") for k in state):
        return _convert_unet(state)
    return _convert_resnet(state)


def _strip(key: str) -> str:
    return key.removeprefix("module.")  # saved from inside nn.DataParallel


def _layers(state: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """{top-level index: {rest of the key: tensor}} of a reference `model.N.rest` state dict."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _TOP.match(key)
        if not match:
            raise ReferenceFormatError(f"key {key!r} is not of the reference ResNet's form "
                                       f"model.N.name; expected {SUPPORTED}")
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return layers


def _without_instance_stats(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in params.items() if k.rsplit(".", 1)[-1] not in _STATS}


def _convert_resnet(state: dict[str, torch.Tensor]) -> ReferenceGenerator:
    layers = _layers(state)
    first = layers.get(1, {}).get("weight")
    if first is None or first.dim() != 4 or first.shape[-1] != 7:
        raise ReferenceFormatError(f"no 7x7 first convolution at model.1.weight; expected "
                                   f"{SUPPORTED}")
    if "weight" in layers.get(2, {}):
        raise ReferenceFormatError(
            "a ResNet generator trained with --norm batch: cyclestyle's resnet and cut_resnet "
            "hold InstanceNorm or no norm only (the reference's CycleGAN default is instance)")
    norm = "instance" if "bias" in layers[1] else "none"
    blocks = sorted(i for i, params in layers.items()
                    if any(k.startswith("conv_block.") for k in params))
    if not blocks or blocks != list(range(blocks[0], blocks[0] + len(blocks))):
        raise ReferenceFormatError(f"ResNet blocks at model.{blocks} are not one run of "
                                   "consecutive layers; expected " + SUPPORTED)
    antialias_down = _antialias_down(blocks[0])
    convs = sorted({int(k.split(".")[1]) for k in layers[blocks[0]] if k.endswith(".weight")})
    if convs not in ([1, 5], [1, 6]):
        raise ReferenceFormatError(
            f"ResNet block convs at conv_block.{convs}: only --padding_type reflect (the "
            "reference's default, convs at conv_block.1 and .5, or .6 with dropout) is supported")
    antialias_up = "filt" in layers.get(blocks[-1] + 1, {})
    transposed = set() if antialias_up else {blocks[-1] + 1, blocks[-1] + 4}
    last = max(layers)
    ours = {}
    for index, params in layers.items():
        params = _without_instance_stats(params)
        if "filt" in params:
            _check_blur(params.pop("filt"), index)
        if norm == "none":  # the reference's convs have no bias then: ours hold zeros
            params = _with_zero_biases(params, index in transposed)
        target = index - 2 if index == last else index - 1
        for rest, value in params.items():
            if rest.startswith("conv_block."):
                conv = int(rest.split(".")[1])
                rest = f"block.{0 if conv == 1 else 4}.{rest.split('.', 2)[2]}"
            ours[f"net.{target}.{rest}"] = value
    args = {"in_channels": int(first.shape[1]), "out_channels": int(layers[last]["weight"].shape[0]),
            "base_channels": int(first.shape[0]), "n_blocks": len(blocks), "norm": norm,
            "dropout": 0.5 if convs == [1, 6] else 0.0}
    cut = antialias_down or antialias_up
    if cut:
        args.update(antialias_down=antialias_down, antialias_up=antialias_up)
    return ReferenceGenerator(f"resnet_{len(blocks)}blocks",
                              "CUT" if cut else "pytorch-CycleGAN-and-pix2pix",
                              "cut_resnet" if cut else "resnet", args, ours)


def _antialias_down(first_block: int) -> bool:
    """Blocks start at model.10 after strided convs, at model.12 after CUT's conv + blur pairs."""
    if first_block not in (10, 12):
        raise ReferenceFormatError(f"ResNet blocks start at model.{first_block}; the reference's "
                                   "start at model.10 (model.12 with CUT's anti-aliasing)")
    return first_block == 12


def _with_zero_biases(params: dict[str, torch.Tensor], transposed: bool) -> dict[str, torch.Tensor]:
    """A zero bias beside each conv weight that has none (a ConvTranspose2d's weight is
    (in, out, k, k), a Conv2d's (out, in, k, k))."""
    out = dict(params)
    for key, weight in params.items():
        bias = key.removesuffix("weight") + "bias"
        if key.endswith("weight") and weight.dim() == 4 and bias not in params:
            out[bias] = torch.zeros(weight.shape[1 if transposed else 0], dtype=weight.dtype)
    return out


def _check_blur(filt: torch.Tensor, index: int) -> None:
    from cyclestyle.models.cut_resnet import binomial_filter

    taps = filt.shape[-1]
    expected = binomial_filter(taps) * (4 if taps == 4 else 1)  # CUT's upsampling blur: 4x
    if taps not in (3, 4) or not torch.allclose(filt[0, 0].float(), expected, atol=1e-6):
        raise ReferenceFormatError(f"model.{index}.filt is not CUT's default blur filter "
                                   "(filt_size 3 down, 4 up); other sizes are not supported")


def _convert_unet(state: dict[str, torch.Tensor]) -> ReferenceGenerator:
    depth = max(key.split(".").count("model") for key in state) - 1
    first = state.get("model.model.0.weight")
    last = state.get("model.model.3.weight")
    if first is None or last is None or first.dim() != 4 or depth < 5:
        raise ReferenceFormatError("a U-Net state dict without the reference's outermost "
                                   "convs (model.model.0, model.model.3); expected " + SUPPORTED)
    batch = any(k.endswith(".running_var") and k.replace("running_var", "weight") in state
                for k in state)
    norm = "batch" if batch else ("instance" if "model.model.1.model.1.bias" in state else "none")
    ours = dict(state) if batch else _without_instance_stats(state)
    if batch:  # files of PyTorch < 0.4 have no num_batches_tracked
        for key in [k for k in ours if k.endswith(".running_var")]:
            ours.setdefault(key.replace("running_var", "num_batches_tracked"),
                            torch.tensor(0, dtype=torch.long))
    args = {"in_channels": int(first.shape[1]), "out_channels": int(last.shape[1]),
            "base_channels": int(first.shape[0]), "num_downs": depth, "norm": norm}
    netg = {8: "unet_256", 7: "unet_128"}.get(depth, f"unet (num_downs {depth})")
    return ReferenceGenerator(netg, "pytorch-CycleGAN-and-pix2pix", "reference_unet", args, ours)

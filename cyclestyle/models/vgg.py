"""Frozen VGG19 feature extractor shared by the perceptual loss, the Gatys baseline and style metrics.

Two weight layouts are understood (auto-detected from a state dict's keys):

* torchvision: ``vgg19().features`` ("0.weight", ...) or a full ``vgg19()`` ("features.0.weight",
  ...). Inputs are ImageNet mean/std normalised; convs use zero padding, as when it was trained.
* normalised VGG (Gatys; the AdaIN / LinearStyleTransfer encoders): "conv1" is a 1x1 conv mapping
  RGB in [0, 1] to Caffe-style BGR*255 minus the mean, used here *as* the preprocessing; "conv2",
  "conv3", ... are conv1_1, conv1_2, ... Those encoders pad by reflection, so we do too.
  Such files are often a prefix (e.g. up to relu3_1); deeper layers are refused.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["VGGFeatures", "gram_matrix", "vgg_layer_names"]

_TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_TORCHVISION_KEY = re.compile(r"^(?:features\.)?(\d+)\.(weight|bias)$")
_NORMALISED_KEY = re.compile(r"^conv(\d+)\.(weight|bias)$")


@functools.lru_cache(maxsize=1)
def _vgg19_layout() -> tuple[tuple[str, nn.Module], ...]:
    """(name, module) for each entry of torchvision's vgg19().features; modules live on "meta".

    Built on the meta device: only the structure is read, and a real vgg19() spends seconds
    initialising its 120M-parameter classifier.
    """
    from torchvision.models import vgg19

    with torch.device("meta"):
        features = vgg19(weights=None).features
    layout, block, conv = [], 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            conv += 1
            name = f"conv{block}_{conv}"
        elif isinstance(module, nn.ReLU):
            name = f"relu{block}_{conv}"
        elif isinstance(module, nn.MaxPool2d):
            name, block, conv = f"pool{block}", block + 1, 0
        else:
            raise AssertionError(f"unexpected module in vgg19().features: {module}")
        layout.append((name, module))
    return tuple(layout)


def vgg_layer_names() -> list[str]:
    """Names of the 37 entries of VGG19's feature stack, in order (conv1_1, relu1_1, ..., pool5)."""
    return [name for name, _ in _vgg19_layout()]


def _conv_indices() -> list[int]:
    return [i for i, (_, m) in enumerate(_vgg19_layout()) if isinstance(m, nn.Conv2d)]


def _make_layer(meta: nn.Module, padding_mode: str, inplace: bool) -> nn.Module:
    """A real copy of one meta layer, with our padding mode."""
    if isinstance(meta, nn.Conv2d):
        return nn.Conv2d(
            meta.in_channels,
            meta.out_channels,
            meta.kernel_size,
            meta.stride,
            meta.padding,
            padding_mode=padding_mode,
        )
    if isinstance(meta, nn.ReLU):
        return nn.ReLU(inplace=inplace)
    return nn.MaxPool2d(
        meta.kernel_size, meta.stride, meta.padding, meta.dilation, ceil_mode=meta.ceil_mode
    )


class _ImageNetNormalize(nn.Module):
    """[-1, 1] RGB -> [0, 1] -> (x - mean) / std, folded into one affine map."""

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std)
        self.register_buffer("shift", (0.5 - mean) / std)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class _CaffePreprocess(nn.Module):
    """[-1, 1] RGB -> [0, 1] -> the checkpoint's own 1x1 conv (RGB -> BGR*255 - mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv((x + 1) / 2)


class _Weights(NamedTuple):
    layout: str  # "torchvision" or "normalised"
    features: dict[str, Tensor] | None  # keyed like vgg19().features ("0.weight"); None = random
    preprocess: dict[str, Tensor] | None  # the normalised layout's 1x1 conv
    source: str  # for error messages


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG weights file {str(path)!r} does not exist (weights must be 'torchvision', "
            "'random' or the path of a .pth state dict)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"could not read VGG weights {str(path)!r} as a state dict: {err}"
        ) from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"VGG weights {str(path)!r} must hold a state dict of tensors, got {type(state).__name__}"
        )
    return state


def _from_torchvision_layout(state: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """Keys as in vgg19().features, or None when `state` is not in the torchvision layout."""
    keys = [k for k in state if not k.startswith("classifier.")]
    conv_ids = set(_conv_indices())
    matches = [_TORCHVISION_KEY.match(k) for k in keys]
    if not keys or not all(m and int(m[1]) in conv_ids for m in matches):
        return None
    return {f"{m[1]}.{m[2]}": state[k] for k, m in zip(keys, matches)}


def _from_normalised_layout(state: Mapping[str, Tensor]) -> tuple[dict, dict] | None:
    """(features, preprocess) state dicts, or None when `state` is not the normalised layout."""
    matches = {k: _NORMALISED_KEY.match(k) for k in state}
    conv_ids = _conv_indices()
    if not all(matches.values()) or "conv1.bias" not in state:
        return None
    if tuple(state.get("conv1.weight", torch.empty(0)).shape) != (3, 3, 1, 1):
        return None
    if any(int(m[1]) - 2 >= len(conv_ids) for m in matches.values()):
        return None
    # convK (K >= 2) is the (K-1)-th 3x3 conv of VGG19: conv2 = conv1_1, conv6 = conv3_1, ...
    features = {
        f"{conv_ids[int(m[1]) - 2]}.{m[2]}": state[k] for k, m in matches.items() if int(m[1]) >= 2
    }
    preprocess = {"conv.weight": state["conv1.weight"], "conv.bias": state["conv1.bias"]}
    return features, preprocess


def _load_file(path: Path) -> _Weights:
    state = _read_state_dict(path)
    features = _from_torchvision_layout(state)
    if features is not None:
        return _Weights("torchvision", features, None, f"file {str(path)!r}")
    normalised = _from_normalised_layout(state)
    if normalised is not None:
        return _Weights("normalised", *normalised, f"file {str(path)!r}")
    shown = sorted(state)[:12]
    more = f" (+{len(state) - len(shown)} more)" if len(state) > len(shown) else ""
    raise ValueError(
        f"VGG weights {str(path)!r} are in no known layout; found keys {shown}{more}. Accepted: "
        "torchvision vgg19().features ('0.weight', '0.bias', ..., up to '34.bias'), a full torchvision "
        "vgg19 ('features.0.weight', ...), or the normalised-VGG prefix layout ('conv1.weight' a 1x1 "
        "RGB->BGR conv, then 'conv2.weight' = conv1_1, 'conv3.weight' = conv1_2, ...)"
    )


def _load_torchvision_hub() -> _Weights:
    """ImageNet weights through torchvision's API: the torch hub cache, else a download."""
    from torchvision.models import VGG19_Weights

    try:
        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(
            progress=False, map_location="cpu", weights_only=True
        )
    except Exception as err:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_FILE
        raise RuntimeError(
            f"could not load torchvision's VGG19 ImageNet weights ({type(err).__name__}: {err}). "
            f"Supply them offline: place {_TORCHVISION_FILE} at {cached} (torchvision then loads it "
            "without downloading); or set `loss.vgg_weights: /path/to/file.pth` (a torchvision "
            "vgg19 / vgg19().features state dict, or the normalised-VGG prefix layout with keys "
            "conv1..convN); or `loss.vgg_weights: random` for tests only."
        ) from err
    features = _from_torchvision_layout(state)
    if features is None:
        raise ValueError(
            f"torchvision's {_TORCHVISION_FILE} has unexpected keys: {sorted(state)[:8]}"
        )
    return _Weights("torchvision", features, None, f"torchvision {_TORCHVISION_FILE}")


def _resolve_weights(weights: str | os.PathLike) -> _Weights:
    if weights == "torchvision":
        return _load_torchvision_hub()
    if weights == "random":
        return _Weights("torchvision", None, None, "random init")
    return _load_file(Path(weights))


def _deepest_available(features: Mapping[str, Tensor]) -> int:
    """Index of the deepest layer whose convs (weight and bias) all are in `features`."""
    for i in _conv_indices():
        if f"{i}.weight" not in features or f"{i}.bias" not in features:
            return i - 1
    return len(_vgg19_layout()) - 1


class VGGFeatures(nn.Module):
    """Frozen VGG19 returning the requested layers' activations for [-1, 1] RGB NCHW input.

    Runs only up to the deepest requested layer. Parameters never require grad and the module
    stays in eval mode, but gradients flow to the input (perceptual loss, Gatys optimisation).
    `weights`: "torchvision" (ImageNet, via the torch hub cache), a path to a state dict in the
    torchvision or the normalised-VGG layout, or "random" (tests only).
    """

    def __init__(self, layers: Sequence[str], weights: str | os.PathLike = "torchvision") -> None:
        super().__init__()
        names = vgg_layer_names()
        if isinstance(layers, str) or not layers:
            raise ValueError(
                f"layers must be a non-empty sequence of VGG19 layer names, got {layers!r}"
            )
        unknown = [layer for layer in layers if layer not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; valid names: {names}")
        wanted = sorted(set(layers), key=names.index)
        deepest = names.index(wanted[-1])

        loaded = _resolve_weights(weights)
        if loaded.features is not None:
            available = _deepest_available(loaded.features)
            if deepest > available:
                raise ValueError(
                    f"layer {wanted[-1]!r} is deeper than the VGG weights in {loaded.source} reach: "
                    f"the deepest available layer is {names[available]!r}; request layers up to it "
                    "or supply full VGG19 weights"
                )
        self.layer_names: tuple[str, ...] = tuple(wanted)
        self.weights_source = loaded.source
        # Reflection padding for the normalised (AdaIN-family) weights, zeros for torchvision's.
        self.padding_mode = "reflect" if loaded.layout == "normalised" else "zeros"
        self.preprocess = (
            _CaffePreprocess() if loaded.layout == "normalised" else _ImageNetNormalize()
        )
        self._run_names = names[: deepest + 1]
        self.layers = self._build_layers(deepest)
        self._load(loaded, deepest)
        self.requires_grad_(False)
        self.train(False)

    def _build_layers(self, deepest: int) -> nn.Sequential:
        layers = []
        previous = ""
        for name, meta in _vgg19_layout()[: deepest + 1]:
            # ReLU in place unless it would overwrite a requested conv output.
            layers.append(_make_layer(meta, self.padding_mode, previous not in self.layer_names))
            previous = name
        return nn.Sequential(*layers)

    def _load(self, loaded: _Weights, deepest: int) -> None:
        if loaded.features is None:
            return
        kept = {k: v for k, v in loaded.features.items() if int(k.split(".")[0]) <= deepest}
        try:
            self.layers.load_state_dict(kept, strict=True)
            if loaded.preprocess is not None:
                self.preprocess.load_state_dict(loaded.preprocess, strict=True)
        except RuntimeError as err:
            raise ValueError(f"VGG weights in {loaded.source} do not fit VGG19: {err}") from err

    def train(self, mode: bool = True) -> VGGFeatures:
        # A frozen feature extractor: a parent's .train() must not switch it to training mode.
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"VGGFeatures expects RGB NCHW input in [-1, 1], got shape {tuple(x.shape)}"
            )
        h = self.preprocess(x)
        features = {}
        for name, layer in zip(self._run_names, self.layers):
            h = layer(h)
            if name in self.layer_names:
                features[name] = h
        return features

    def extra_repr(self) -> str:
        return f"layers={list(self.layer_names)}, weights={self.weights_source}, padding={self.padding_mode}"


def gram_matrix(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C): F F^T / (C H W), one batched matmul in the input's dtype
    (the style statistic of Gatys et al., shared by the Gatys losses and the style metrics)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)

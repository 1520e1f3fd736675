"""VGGFeatures: layer naming, truncation, freezing, weight layouts and the real shared prefix weights."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch import nn

from cyclestyle.models.vgg import VGGFeatures, vgg_layer_names

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def random_features() -> nn.Sequential:
    """A random torchvision vgg19().features (built on meta, then filled: skips the slow init)."""
    from torchvision.models import vgg19

    with torch.device("meta"):
        features = vgg19(weights=None).features
    features = features.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in features.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return features.eval()


def test_layer_names_follow_vgg19_features():
    names = vgg_layer_names()
    assert len(names) == 37  # 16 convs + 16 relus + 5 pools
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("relu3_1") == 11
    assert names.index("relu4_1") == 20
    assert names[-3:] == ["conv5_4", "relu5_4", "pool5"]
    assert sum(name.startswith("conv") for name in names) == 16


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match=r"relu9_9.*valid names.*relu3_1"):
        VGGFeatures(["relu9_9"], weights="random")


def test_runs_only_up_to_deepest_requested_layer():
    vgg = VGGFeatures(["relu1_1"], weights="random")
    assert len(vgg.layers) == 2  # conv1_1, relu1_1
    out = vgg(torch.zeros(1, 3, 16, 16))
    assert list(out) == ["relu1_1"] and out["relu1_1"].shape == (1, 64, 16, 16)

    vgg = VGGFeatures(["relu2_1", "conv1_2"], weights="random")
    assert len(vgg.layers) == vgg_layer_names().index("relu2_1") + 1 == 7
    out = vgg(torch.zeros(1, 3, 16, 16))
    assert out["conv1_2"].shape == (1, 64, 16, 16) and out["relu2_1"].shape == (1, 128, 8, 8)


def test_requested_conv_output_survives_the_following_relu():
    vgg = VGGFeatures(["conv1_1", "relu1_1"], weights="random")
    out = vgg(torch.randn(1, 3, 8, 8))
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_parameters_frozen_but_input_receives_gradient():
    vgg = VGGFeatures(["relu2_1"], weights="random")
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    vgg(x)["relu2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())


def test_stays_in_eval_mode_when_parent_trains():
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), VGGFeatures(["relu1_1"], weights="random"))
    parent.train()
    assert parent[0].training
    assert not any(m.training for m in parent[1].modules())


@pytest.mark.parametrize("key_prefix", ["", "features."])
def test_torchvision_layout_file_matches_torchvision_forward(tmp_path, random_features, key_prefix):
    state = {key_prefix + k: v for k, v in random_features.state_dict().items()}
    if key_prefix:  # a full vgg19 state dict also holds the classifier: ignored
        state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)

    vgg = VGGFeatures(["relu2_1"], weights=path)
    assert vgg.padding_mode == "zeros"
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = random_features[:7](((x + 1) / 2 - IMAGENET_MEAN) / IMAGENET_STD)
    torch.testing.assert_close(vgg(x)["relu2_1"], expected)


def test_torchvision_layout_prefix_refuses_deeper_layers(tmp_path, random_features):
    state = {k: v for k, v in random_features.state_dict().items() if int(k.split(".")[0]) <= 2}
    torch.save(state, tmp_path / "conv1_only.pth")
    VGGFeatures(["pool1"], weights=tmp_path / "conv1_only.pth")  # conv1_1, conv1_2 suffice
    with pytest.raises(
        ValueError, match=r"'relu2_1'.*conv1_only\.pth.*deepest available layer is 'pool1'"
    ):
        VGGFeatures(["relu2_1"], weights=tmp_path / "conv1_only.pth")


def test_file_of_unknown_layout_names_its_keys(tmp_path):
    torch.save(
        {"encoder.weight": torch.zeros(1), "decoder.bias": torch.zeros(1)}, tmp_path / "x.pth"
    )
    with pytest.raises(
        ValueError, match=r"decoder\.bias.*encoder\.weight.*torchvision.*normalised"
    ):
        VGGFeatures(["relu1_1"], weights=tmp_path / "x.pth")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        VGGFeatures(["relu1_1"], weights=tmp_path / "nowhere.pth")


def _offline_hub(monkeypatch, hub: Path) -> None:
    """Point torch hub at `hub` and make any download fail at once (no network in tests)."""

    def no_network(url, dst, *args, **kwargs):
        raise URLError(f"test: no network for {url}")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_torchvision_weights_offline_error_says_how_to_supply_them(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, tmp_path / "hub")
    with pytest.raises(RuntimeError) as info:
        VGGFeatures(["relu1_1"], weights="torchvision")
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "loss.vgg_weights" in message and "random" in message


def test_torchvision_weights_come_from_the_hub_cache(tmp_path, monkeypatch, random_features):
    _offline_hub(monkeypatch, tmp_path / "hub")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    state = {f"features.{k}": v for k, v in random_features.state_dict().items()}
    torch.save(state, tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    vgg = VGGFeatures(["relu1_2"], weights="torchvision")
    assert torch.equal(vgg.layers[2].weight, random_features[2].weight)


# --- the real normalised-VGG prefix weights from ../shared ---------------------------------------


def test_prefix_preprocessing_maps_rgb01_to_caffe_bgr(shared_vgg_prefix):
    vgg = VGGFeatures(["relu1_1"], weights=shared_vgg_prefix)
    conv = vgg.preprocess.conv
    reverse_channels_times_255 = torch.tensor([[0.0, 0, 255], [0, 255, 0], [255, 0, 0]])
    torch.testing.assert_close(conv.weight.view(3, 3), reverse_channels_times_255)
    imagenet_bgr_mean_255 = torch.tensor([0.406, 0.456, 0.485]) * 255  # (103.5, 116.3, 123.7)
    torch.testing.assert_close(-conv.bias, imagenet_bgr_mean_255, atol=1.0, rtol=0)

    rgb01 = torch.tensor([0.2, 0.5, 0.8])
    bgr = vgg.preprocess((rgb01 * 2 - 1).view(1, 3, 1, 1)).flatten()
    expected = torch.tensor([0.8 * 255 - 103.5, 0.5 * 255 - 116.3, 0.2 * 255 - 123.7])
    torch.testing.assert_close(bgr, expected, atol=1.0, rtol=0)


def test_prefix_weights_map_onto_vgg19_with_reflection_padding(shared_vgg_prefix):
    state = torch.load(shared_vgg_prefix, map_location="cpu", weights_only=True)
    vgg = VGGFeatures(["relu3_1"], weights=shared_vgg_prefix)
    convs = [m for m in vgg.layers if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5  # conv1_1, conv1_2, conv2_1, conv2_2, conv3_1
    for i, conv in enumerate(convs):
        assert torch.equal(conv.weight, state[f"conv{i + 2}.weight"])
        assert conv.padding_mode == "reflect"


def test_prefix_conv1_1_filters_are_trained_not_random(shared_vgg_prefix):
    """Trained first-layer filters are spatially smooth; random ones are not (~0 correlation)."""
    w = VGGFeatures(["relu1_1"], weights=shared_vgg_prefix).layers[0].weight  # (64, 3, 3, 3)
    left, right = w[..., :-1], w[..., 1:]
    left = (left - left.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    right = (right - right.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    assert nn.functional.cosine_similarity(left, right).mean() > 0.5


def test_prefix_refuses_layers_beyond_relu3_1(shared_vgg_prefix):
    with pytest.raises(ValueError, match=r"'relu4_1'.*vgg19_normalised_to_relu3_1\.pth.*'relu3_1'"):
        VGGFeatures(["relu1_1", "relu4_1"], weights=shared_vgg_prefix)


def _load_image(path: Path, blur: float = 0.0) -> torch.Tensor:
    """(1, 3, 64, 64) RGB in [-1, 1]."""
    image = Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (array.permute(2, 0, 1) / 127.5 - 1)[None]


def _first_image(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[0]


def test_prefix_features_tell_a_painting_from_a_blurred_photo(
    shared_vgg_prefix, shared_photo_dir, shared_painting_dir
):
    photo_path = _first_image(shared_photo_dir)
    photo, blurred = _load_image(photo_path), _load_image(photo_path, blur=1.0)
    painting = _load_image(_first_image(shared_painting_dir))
    vgg = VGGFeatures(["relu1_1", "relu2_1", "relu3_1"], weights=shared_vgg_prefix)
    with torch.no_grad():
        features = vgg(torch.cat([photo, blurred, painting]))
    for layer, f in features.items():
        to_blurred = (f[0] - f[1]).abs().mean()
        to_painting = (f[0] - f[2]).abs().mean()
        assert to_painting > 2 * to_blurred, layer

"""`cyclestyle evaluate` with no extractor flags: torchmetrics' Inception by default,
CYCLESTYLE_INCEPTION_WEIGHTS on offline machines, and one line (exit 2) when neither can be
had; every result names its extractor. Plus the check script comparing the two extractors."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from torch import nn

from cyclestyle.cli import main
from cyclestyle.metrics import features
from cyclestyle.metrics.features import file_sha256, module_extractor
from scripts import check_extractors
from tests.helpers import write_images


class TinyEmbed(nn.Module):
    """A 12-d stand-in for Inception (TorchScript-able), as in test_metrics_eval."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 16, stride=16)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.tanh(self.conv(x))).flatten(1)


@pytest.fixture
def sets(tmp_path):
    return write_images(tmp_path / "real", 5, seed=1), write_images(tmp_path / "fake", 4, seed=2)


@pytest.fixture
def no_network_no_cache(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: torch-fidelity's weights cannot be had."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.delenv(features.INCEPTION_ENV, raising=False)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def evaluate_cli(sets, tmp_path, *extra: str) -> int:
    return main(["evaluate", "--real", str(sets[0]), "--fake", str(sets[1]), "--out",
                 str(tmp_path / "eval"), "--cache-dir", str(tmp_path / "cache"), "--kid-subsets",
                 "3", "--vgg-weights", "random", *extra])


def test_the_environment_variable_gives_fid_and_kid_with_no_flags(sets, tmp_path, monkeypatch,
                                                                   no_network_no_cache):
    path = tmp_path / "tiny_embed.pt"
    torch.jit.script(TinyEmbed()).save(str(path))
    monkeypatch.setenv(features.INCEPTION_ENV, str(path))
    with pytest.warns(UserWarning):  # KID subsets reduced to the small sets
        assert evaluate_cli(sets, tmp_path) == 0
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for metric in ("fid", "kid"):
        extractor = results["metrics"][metric]["extractor"]
        assert extractor["name"] == "torchscript:tiny_embed.pt"
        assert extractor["sha256"] == file_sha256(path)
    kid = results["metrics"]["kid"]
    assert kid["mean_x1e3"] == pytest.approx(kid["mean"] * 1e3)


def test_the_shared_inception_through_the_variable(sets, tmp_path, monkeypatch,
                                                   shared_inception):
    monkeypatch.setenv(features.INCEPTION_ENV, str(shared_inception))
    with pytest.warns(UserWarning):
        assert evaluate_cli(sets, tmp_path, "--metrics", "fid,kid") == 0
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert results["metrics"]["fid"]["value"] > 0
    assert results["metrics"]["kid"]["extractor"]["sha256"] == (
        "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34")


def test_offline_with_neither_way_is_one_line_exit_2_naming_both_and_the_cache(
        sets, tmp_path, no_network_no_cache, capsys):
    assert evaluate_cli(sets, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for phrase in ("CYCLESTYLE_INCEPTION_WEIGHTS=PATH", "--inception-weights PATH",
                   str(no_network_no_cache / "weights-inception-2015-12-05-6726825d.pth"),
                   "could not be downloaded", "Temporary failure in name resolution"):
        assert phrase in err, phrase
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_the_default_is_torchmetrics_inception_with_its_file_sha256(monkeypatch, tmp_path):
    """Where torch-fidelity's weights are cached, the default extractor is torchmetrics' own,
    and its sha256 is the weights file's (stand-in weights: the real file is 95 MB away)."""
    import torchmetrics.image.fid as tm_fid

    weights = tmp_path / "weights-inception.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.delenv(features.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(features, "torchmetrics_weights_path", lambda: weights)
    built = []

    class FakeInception(TinyEmbed):
        def __init__(self, name, features_list):
            super().__init__()
            built.append((name, features_list))

    monkeypatch.setattr(tm_fid, "NoTrainInceptionV3", FakeInception)
    extractor = features.load_inception(None)
    assert built == [("inception-v3-compat", ["2048"])]
    assert extractor.name == "torchmetrics:inception-v3-compat"
    assert extractor.sha256 == file_sha256(weights) and extractor.input_range == "uint8"


def test_check_script_compares_two_extractors_against_its_tolerance(sets):
    same = module_extractor(TinyEmbed(), name="a")
    report = check_extractors.compare(sets[0], sets[1], same, module_extractor(TinyEmbed(),
                                                                              name="b"))
    assert report["agree"] and report["fid_difference"] == 0
    other = TinyEmbed()
    with torch.no_grad():
        other.conv.weight.mul_(3)
    report = check_extractors.compare(sets[0], sets[1], same, module_extractor(other))
    assert not report["agree"] and report["fid_difference"] > report["allowed"]
    assert [r["extractor"]["name"] for r in report["results"]][0] == "a"

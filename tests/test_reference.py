"""The reference implementations' generator files load into our networks and compute what the
reference computes; the reference's model zoo is listed, downloaded with a checksum and used.

"The reference architecture" is rebuilt independently of cyclestyle's models: the CycleGAN ResNet
by scripts/reference_cyclegan.py, the pix2pix U-Net and CUT's anti-aliased ResNet below, written
from junyanz/pytorch-CycleGAN-and-pix2pix's and taesungp/contrastive-unpaired-translation's
networks.py (layer order, in-place activations and bias rules included). Their state dicts
therefore carry the reference's exact key names and shapes."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cyclestyle.cli import main
from cyclestyle.imageio import find_images
from cyclestyle.models import create_generator
from cyclestyle.translate import zoo
from cyclestyle.translate.sources import load_model
from scripts.reference_cyclegan import ResnetBlock as ReferenceResnetBlock
from scripts.reference_cyclegan import ResnetGenerator as ReferenceResnetGenerator
from tests.helpers import write_images

TOLERANCE = 1e-5


# --- the reference architectures --------------------------------------------------------------

class ReferenceUnetBlock(nn.Module):
    """pytorch-CycleGAN-and-pix2pix's UnetSkipConnectionBlock."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        if type(norm_layer) is functools.partial:
            use_bias = norm_layer.func == nn.InstanceNorm2d
        else:
            use_bias = norm_layer == nn.InstanceNorm2d
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1,
                             bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2,
                                        padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1,
                                        bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2,
                                        padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # x itself went through the in-place LeakyReLU


class ReferenceUnetGenerator(nn.Module):
    """pytorch-CycleGAN-and-pix2pix's UnetGenerator (unet_256: num_downs 8, unet_128: 7)."""

    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=64, norm_layer=nn.BatchNorm2d,
                 use_dropout=False):
        super().__init__()
        block = ReferenceUnetBlock(ngf * 8, ngf * 8, innermost=True, norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = ReferenceUnetBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                       use_dropout=use_dropout)
        block = ReferenceUnetBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = ReferenceUnetBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = ReferenceUnetBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = ReferenceUnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                        outermost=True, norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)


def cut_filter(size: int) -> torch.Tensor:
    a = {3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0]}[size]
    f = torch.tensor(a)[:, None] * torch.tensor(a)[None, :]
    return f / f.sum()


class CutDownsample(nn.Module):
    """CUT's Downsample(channels): reflect pad, filt_size 3, stride 2."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", cut_filter(3)[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReflectionPad2d([1, 1, 1, 1])

    def forward(self, x):
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class CutUpsample(nn.Module):
    """CUT's Upsample(channels): replicate pad, filt_size 4, stride 2."""

    def __init__(self, channels):
        super().__init__()
        filt = cut_filter(4) * 4
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReplicationPad2d([1, 1, 1, 1])

    def forward(self, x):
        out = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2,
                                 groups=x.shape[1])[:, :, 1:, 1:]
        return out[:, :, :-1, :-1]  # filt_size 4 is even


class CutResnetGenerator(nn.Module):
    """CUT's ResnetGenerator with its defaults (anti-aliased down and up, InstanceNorm)."""

    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9):
        super().__init__()

        def norm(c):
            return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)

        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, padding=0, bias=True),
                 norm(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2**i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=1, padding=1, bias=True),
                      norm(ngf * mult * 2), nn.ReLU(True), CutDownsample(ngf * mult * 2)]
        model += [ReferenceResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [CutUpsample(ngf * mult),
                      nn.Conv2d(ngf * mult, ngf * mult // 2, 3, stride=1, padding=1, bias=True),
                      norm(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Weights ~ N(0, 0.02) as the reference initialises them, BatchNorm statistics and affine
    parameters off their defaults, so a wrongly mapped tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.normal_(0, 0.02, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.02, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.normal_(1, 0.1, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return net.eval()


INSTANCE = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
CASES = {  # case: (the reference network, input size, our registry name, the reference's netG)
    "resnet_9blocks": (lambda: ReferenceResnetGenerator(n_blocks=9), 64, "resnet",
                       "resnet_9blocks"),
    "resnet_6blocks": (lambda: ReferenceResnetGenerator(n_blocks=6), 64, "resnet",
                       "resnet_6blocks"),
    "unet_256": (lambda: ReferenceUnetGenerator(num_downs=8), 256, "reference_unet", "unet_256"),
    "unet_128": (lambda: ReferenceUnetGenerator(num_downs=7), 128, "reference_unet", "unet_128"),
    "unet_128-instance": (lambda: ReferenceUnetGenerator(num_downs=7, ngf=16, norm_layer=INSTANCE),
                          128, "reference_unet", "unet_128"),
    "cut-resnet_9blocks": (lambda: CutResnetGenerator(n_blocks=9), 64, "cut_resnet",
                           "resnet_9blocks"),
}
# Key names of the reference files, as published checkpoints spell them.
KNOWN_KEYS = {
    "resnet_9blocks": ["model.1.weight", "model.10.conv_block.1.weight",
                       "model.18.conv_block.5.bias", "model.19.weight", "model.26.weight"],
    "unet_256": ["model.model.0.weight", "model.model.1.model.2.running_var",
                 "model.model.3.bias", "model.model.1.model.3.model.3.model.3.model.3.model.3."
                 "model.3.model.1.weight"],
    "cut-resnet_9blocks": ["model.7.filt", "model.8.weight", "model.21.filt", "model.30.weight"],
}


@pytest.mark.parametrize("netg", list(CASES))
def test_a_reference_generator_file_computes_what_the_reference_computes(netg, tmp_path):
    build, size, ours, name = CASES[netg]
    reference = randomised(build())
    state = reference.state_dict()
    assert all(key in state for key in KNOWN_KEYS.get(netg, []))
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    model = load_model(path)
    generator = model.generator("a2b")
    assert generator.registry_name == ours
    assert model.config["reference"]["netG"] == name
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        want, got = reference(x.clone()), generator(x.clone())
    assert want.std() > 0.01, "a near-constant output would prove nothing"
    assert (got - want).abs().max() <= TOLERANCE


def test_our_defaults_have_the_reference_parameter_counts():
    def count(net):
        return sum(p.numel() for p in net.parameters())

    assert count(create_generator("resnet")) == count(ReferenceResnetGenerator()) == 11_378_179
    assert count(create_generator("reference_unet")) == count(ReferenceUnetGenerator()) \
        == 54_413_955
    assert count(create_generator("cut_resnet")) == count(CutResnetGenerator()) == 11_378_179


def small_reference(seed: int = 0) -> dict[str, torch.Tensor]:
    return randomised(ReferenceResnetGenerator(ngf=8, n_blocks=9), seed).state_dict()


def test_old_instance_norm_statistics_and_a_dataparallel_prefix_are_accepted(tmp_path):
    reference = randomised(ReferenceResnetGenerator(ngf=8, n_blocks=2))
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    state["module.model.2.running_mean"] = torch.zeros(8)  # PyTorch < 0.4's InstanceNorm
    state["module.model.2.running_var"] = torch.ones(8)
    torch.save(state, tmp_path / "old.pth")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        diff = (load_model(tmp_path / "old.pth").generator()(x) - reference(x)).abs().max()
    assert diff <= TOLERANCE


def test_a_cyclegan_run_folder_holds_both_directions_a_single_file_one(tmp_path, capsys):
    run = tmp_path / "horse2zebra_cyclegan"
    run.mkdir()
    torch.save(small_reference(1), run / "latest_net_G_A.pth")
    torch.save(small_reference(2), run / "latest_net_G_B.pth")
    model = load_model(run)
    assert set(model.generators) == {"a2b", "b2a"}
    g_b = randomised(ReferenceResnetGenerator(ngf=8, n_blocks=9), 2)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert (model.generator("b2a")(x) - g_b(x)).abs().max() <= TOLERANCE
    images = write_images(tmp_path / "photos", 1, seed=3)
    code = main(["translate", "--checkpoint", str(run / "latest_net_G_A.pth"), "--direction",
                 "b2a", "--input", str(images), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "direction: 'b2a' is invalid" in err and "holds one generator (a2b)" in err


@pytest.mark.parametrize("case", ["batchnorm_resnet", "not_a_generator", "zero_padding"])
def test_unsupported_files_are_refused_in_one_line_naming_why(case, tmp_path, capsys):
    if case == "batchnorm_resnet":
        state = {**small_reference(), "model.2.weight": torch.ones(8), "model.2.bias":
                 torch.zeros(8)}
        why = "trained with --norm batch"
    elif case == "not_a_generator":
        state = {"model.0.weight": torch.zeros(8, 3, 4, 4)}  # a PatchGAN's first conv
        why = "no 7x7 first convolution"
    else:
        state = {k.replace("conv_block.5", "conv_block.3").replace("conv_block.1", "conv_block.0"):
                 v for k, v in small_reference().items()}
        why = "--padding_type reflect"
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    images = write_images(tmp_path / "photos", 1, seed=3)
    code = main(["translate", "--checkpoint", str(path), "--input", str(images), "--output",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(path) in err and why in err, err


# --- the model zoo ---------------------------------------------------------------------------

@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() then follows TORCH_HOME
    return tmp_path / "torch_home" / "hub" / "checkpoints" / "cyclestyle"


def test_pretrained_list_names_the_zoo_with_official_urls(torch_home, capsys):
    assert main(["pretrained", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("horse2zebra", "zebra2horse", "monet2photo", "style_monet", "style_cezanne",
                 "style_ukiyoe", "style_vangogh", "summer2winter_yosemite",
                 "winter2summer_yosemite", "apple2orange", "orange2apple",
                 "facades_photo2label", "facades_label2photo", "cityscapes_photo2label",
                 "iphone2dslr_flower", "pix2pix_edges2shoes"):
        assert f"\n{name} " in out, name
    assert ("http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/horse2zebra.pth"
            in out)
    assert "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch/edges2shoes.pth" in out
    assert str(torch_home) in out


def test_download_checks_and_records_the_sha256_and_translate_uses_it(torch_home, tmp_path,
                                                                      capsys):
    served = tmp_path / "served" / "horse2zebra.pth"
    served.parent.mkdir()
    torch.save(small_reference(), served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    assert main(["pretrained", "download", "horse2zebra", "--url", served.as_uri(),
                 "--no-progress"]) == 0
    cached = torch_home / "horse2zebra.pth"
    assert cached.read_bytes() == served.read_bytes()
    assert (torch_home / "horse2zebra.pth.sha256").read_text().split()[0] == digest
    assert digest in capsys.readouterr().out
    images = write_images(tmp_path / "horses", 2, seed=4)
    assert main(["translate", "--checkpoint", "pretrained:horse2zebra", "--input", str(images),
                 "--output", str(tmp_path / "zebras"), "--precision", "fp32",
                 "--no-progress"]) == 0
    reference = randomised(ReferenceResnetGenerator(ngf=8, n_blocks=9))
    first = find_images(images)[0]
    x = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)[None]
    with torch.inference_mode():
        want = ((reference(x.float() / 127.5 - 1)[0].clamp(-1, 1) + 1) * 127.5).round()
    got = np.asarray(Image.open(find_images(tmp_path / "zebras")[0]).convert("RGB"))
    assert np.abs(got.astype(int) - want.permute(1, 2, 0).numpy().astype(int)).max() <= 1


def test_a_changed_download_is_refused(torch_home, tmp_path, capsys):
    served = tmp_path / "style_monet.pth"
    torch.save(small_reference(), served)
    assert main(["pretrained", "download", "style_monet", "--url", served.as_uri(),
                 "--no-progress"]) == 0
    cached = torch_home / "style_monet.pth"
    torch.save(small_reference(seed=5), cached)  # replaced behind our back
    with pytest.raises(ValueError, match=r"differs from the expected \w+ \(recorded at its first download\)"):
        zoo.pretrained_path("style_monet")
    cached.unlink()
    torch.save(small_reference(seed=6), served)  # the server now has another file
    assert main(["pretrained", "download", "style_monet", "--url", served.as_uri(),
                 "--no-progress"]) == 2
    assert "differs from the expected" in capsys.readouterr().err
    assert sorted(p.name for p in torch_home.iterdir()) == ["style_monet.pth.sha256"]


def test_pretrained_not_downloaded_or_unknown_is_one_line_saying_what_to_do(torch_home,
                                                                            tmp_path, capsys):
    images = write_images(tmp_path / "photos", 1, seed=3)
    for name, expected in (("zebra2horse", "run `cyclestyle pretrained download zebra2horse`"),
                           ("horse2cat", "not in the reference's model zoo")):
        code = main(["translate", "--checkpoint", f"pretrained:{name}", "--input", str(images),
                     "--output", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert main(["pretrained", "download", "zebra2horse", "--url",
                 (tmp_path / "missing.pth").as_uri(), "--no-progress"]) == 2
    assert "cannot download zebra2horse" in capsys.readouterr().err
    assert not list(torch_home.iterdir())  # no partial file left


def test_hubconf_generator_loads_a_reference_file(tmp_path):
    from tests.helpers import REPO

    torch.save(small_reference(), tmp_path / "latest_net_G.pth")
    generator = torch.hub.load(str(REPO), "generator", source="local",
                               checkpoint=str(tmp_path / "latest_net_G.pth"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        want = randomised(ReferenceResnetGenerator(ngf=8, n_blocks=9))(x)
        assert (generator(x) - want).abs().max() <= TOLERANCE

"""`cyclestyle evaluate`, the feature cache, style/content metrics, the training hook, real data."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cyclestyle.cli import main
from cyclestyle.imageio import find_images
from cyclestyle.metrics import (
    FeatureCache,
    TrainingFID,
    extract_features,
    fid_from_features,
    kernel_inception_distance,
    module_extractor,
    torchscript_inception,
)
from cyclestyle.metrics.content import evaluate_content, pair_by_relative_path, ssim_psnr
from cyclestyle.metrics.features import features_of_tensors, file_sha256
from cyclestyle.metrics.style import SetStyleStats, evaluate_style, style_distance
from cyclestyle.models.vgg import gram_matrix
from tests.helpers import write_images

REPO = Path(__file__).resolve().parents[1]


class TinyEmbed(nn.Module):
    """A 12-d stand-in for Inception: strided conv, pooled."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 16, stride=16)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.tanh(self.conv(x))).flatten(1)


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner, self.calls = TinyEmbed(), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]
        return self.inner(x)


@pytest.fixture
def tiny_torchscript(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_embed.pt"
    torch.jit.script(TinyEmbed()).save(str(path))
    return path


# --- feature cache -----------------------------------------------------------------------------

def test_cache_skips_recomputation_and_is_keyed_by_contents_extractor_and_resize(tmp_path):
    folder = write_images(tmp_path / "imgs", 5, seed=3)
    counting = Counting()
    extractor = module_extractor(counting)
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(folder, extractor, cache=cache, batch_size=2)
    calls = counting.calls
    again = extract_features(folder, extractor, cache=cache)
    assert counting.calls == calls and torch.equal(first, again)
    extract_features(folder, extractor, resize="tf1_bilinear", cache=cache)
    assert counting.calls == calls + 5  # other resize mode: other entry
    img = find_images(folder)[0]
    img.write_bytes(img.read_bytes() + b"\0")  # same pixels, different bytes: recomputed
    extract_features(folder, extractor, cache=cache)
    assert counting.calls == calls + 10
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3


def test_torchscript_extractor_records_file_sha256(tiny_torchscript):
    extractor = torchscript_inception(tiny_torchscript)
    assert extractor.sha256 == file_sha256(tiny_torchscript) and extractor.num_features == 12
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        torchscript_inception(tiny_torchscript.parent / "missing.pt")


def test_shared_inception_is_the_documented_file(shared_inception):
    extractor = torchscript_inception(shared_inception)
    assert extractor.num_features == 2048
    assert extractor.sha256 == "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


# --- content -------------------------------------------------------------------------------------

def test_pairing_by_relative_path_ignores_extension_and_reports_missing(tmp_path):
    src = write_images(tmp_path / "src" / "sub", 3, seed=1).parent
    fake = tmp_path / "fake"
    for p in find_images(src):
        target = fake / p.relative_to(src).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)  # PNG bytes under any name are fine for PIL
    assert len(pair_by_relative_path(src, fake)) == 3
    (fake / "sub" / "img_01.png").unlink()
    (fake / "extra.png").write_bytes((fake / "sub" / "img_00.png").read_bytes())
    with pytest.raises(ValueError, match=r"1 source image\(s\) have no translation.*sub/img_01"
                                         r".*1 translation\(s\) have no source.*extra"):
        pair_by_relative_path(src, fake)


def test_ssim_psnr_by_hand():
    a = np.full((16, 16, 3), 100, dtype=np.uint8)
    assert ssim_psnr(a, a) == (1.0, float("inf"))
    b = a + 10  # MSE 100 -> PSNR = 10 log10(255^2 / 100)
    assert ssim_psnr(a, b)[1] == pytest.approx(10 * np.log10(255**2 / 100))


def test_content_of_identity_translation_is_perfect(image_dirs):
    result = evaluate_content(image_dirs[0], image_dirs[0], lpips=False)
    assert result["n_pairs"] == 5 and result["ssim"] == pytest.approx(1.0)
    assert result["psnr_identical_pairs"] == 5 and result["lpips_skipped"]


# --- style ---------------------------------------------------------------------------------------

def test_style_stats_accumulate_the_shared_gram_in_float64():
    features = torch.ones(1, 2, 3, 4) * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    stats = SetStyleStats(("x",))
    stats.add({"x": features})
    # F F^T = 12 * [[1, 2], [2, 4]], divided by C*H*W = 24
    expected = torch.tensor([[1, 2], [2, 4]], dtype=torch.float64) / 2
    assert stats.gram["x"].total.dtype == torch.float64
    assert torch.equal(stats.gram["x"].total.view(2, 2), expected)


def test_style_distance_is_the_mean_over_all_pairs():
    g = torch.Generator().manual_seed(0)
    fa, fb = torch.rand(3, 4, 5, 5, generator=g), torch.rand(4, 4, 5, 5, generator=g) * 2
    a, b = SetStyleStats(("x",)), SetStyleStats(("x",))
    a.add({"x": fa})
    b.add({"x": fb})
    d = style_distance(a, b)
    ga, gb = gram_matrix(fa.double()), gram_matrix(fb.double())
    brute = np.mean([float((ga[i] - gb[j]).square().sum()) for i in range(3) for j in range(4)])
    assert d["gram"]["x"] == pytest.approx(brute, rel=1e-9)
    fa, fb = fa.double().flatten(2), fb.double().flatten(2)
    ma = torch.cat([fa.mean(2), fa.std(2, unbiased=False)], 1)
    mb = torch.cat([fb.mean(2), fb.std(2, unbiased=False)], 1)
    brute_m = np.mean([float((ma[i] - mb[j]).square().mean()) * 2 for i in range(3)
                       for j in range(4)])  # mean over C channels of (dmu^2 + dsigma^2)
    assert d["moments"]["x"] == pytest.approx(brute_m, rel=1e-9)


def test_style_with_shared_vgg_prefix_separates_sets(shared_vgg_prefix, tmp_path):
    a = write_images(tmp_path / "a", 3, seed=1)
    bright = tmp_path / "b"
    bright.mkdir()
    for i in range(3):
        from PIL import Image
        Image.new("RGB", (40, 40), (250, 240, 10 * i)).save(bright / f"{i}.png")
    same = evaluate_style(a, a, shared_vgg_prefix, image_size=32)
    other = evaluate_style(bright, a, shared_vgg_prefix, image_size=32)
    assert same["layers"] == ["relu1_1", "relu2_1", "relu3_1"]
    assert other["gram"]["sum"] > 2 * same["gram"]["sum"] > 0
    assert other["moments"]["mean"] > same["moments"]["mean"]


# --- the command --------------------------------------------------------------------------------

def test_evaluate_command_writes_json_report_and_table(image_dirs, tiny_torchscript, tmp_path,
                                                        capsys):
    source, real = image_dirs
    fake = tmp_path / "fake"
    shutil.copytree(source, fake)  # an identity "translator"
    out = tmp_path / "eval"
    argv = ["evaluate", "--real", str(real), "--fake", str(fake), "--source", str(source),
            "--inception-weights", str(tiny_torchscript), "--vgg-weights", "random",
            "--cache-dir", str(tmp_path / "cache"), "--kid-subsets", "5", "--out", str(out)]
    with pytest.warns(UserWarning, match="subset size reduced"):
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"FID\s+\d", printed) and "KID" in printed and "SSIM" in printed
    results = json.loads((out / "metrics.json").read_text())
    fid, kid = results["metrics"]["fid"], results["metrics"]["kid"]
    assert fid["n_real"] == 4 and fid["n_fake"] == 5 and fid["resize"] == "pil_bicubic"
    assert fid["extractor"]["sha256"] == file_sha256(tiny_torchscript)
    assert kid["subset_size"] == 2 and kid["requested_subset_size"] == 1000 and kid["seed"] == 0
    assert kid["mean_x1e3"] == pytest.approx(1e3 * kid["mean"]) and "without replacement" in \
        kid["std_method"]
    assert results["metrics"]["content"]["ssim"] == pytest.approx(1.0)
    assert results["metrics"]["content"]["psnr"] == "inf"
    assert results["metrics"]["style"]["layers"][-1] == "relu5_1"
    page = (out / "report.html").read_text()
    assert "<table>" in page and "sha256" in page and (out / "samples.png").is_file()


def test_explicit_content_without_source_fails_loudly(image_dirs, tmp_path, capsys):
    code = main(["evaluate", "--real", str(image_dirs[1]), "--fake", str(image_dirs[0]),
                 "--metrics", "content", "--out", str(tmp_path / "e")])
    assert code == 2 and "needs --source" in capsys.readouterr().err


def test_default_metrics_skip_what_cannot_run_with_reasons(image_dirs, tmp_path, monkeypatch):
    import cyclestyle.metrics.evaluation as ev

    def unavailable(_weights):
        raise RuntimeError("torchmetrics' default Inception is unavailable (test)")
    monkeypatch.setattr(ev, "load_inception", unavailable)
    results = ev.evaluate(image_dirs[1], image_dirs[0], out_dir=tmp_path / "e",
                          options=ev.EvaluateOptions(vgg_weights="random"))
    assert set(results["skipped"]) == {"fid", "kid", "content"}
    assert "unavailable" in results["skipped"]["fid"] and "style" in results["metrics"]


def test_readme_evaluate_example_runs(image_dirs, tiny_torchscript, tmp_path):
    readme = (REPO / "README.md").read_text()
    line = next((ln for ln in readme.replace("\\\n", " ").splitlines()
                 if ln.strip().startswith(".venv/bin/cyclestyle evaluate")), None)
    if line is None:
        pytest.fail("README has no `.venv/bin/cyclestyle evaluate` example")
    fake = tmp_path / "translated"
    shutil.copytree(image_dirs[0], fake)
    mapping = {"path/to/paintings": str(image_dirs[1]), "runs/p2p/translated": str(fake),
               "path/to/photos": str(image_dirs[0]),
               "../shared/weights/inception-2015-12-05-torchscript.pt": str(tiny_torchscript),
               "../shared/weights/vgg19_normalised_to_relu3_1.pth": "random",
               "runs/p2p/eval": str(tmp_path / "eval")}
    argv = [mapping.get(a, a) for a in shlex.split(line)[1:]]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--kid-subsets", "3"]
    with pytest.warns(UserWarning):
        assert main(argv) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()


# --- training hook ------------------------------------------------------------------------------

def test_training_fid_hook_scores_both_directions(image_dirs, tmp_path):
    from cyclestyle.models import create_generator

    def generator():
        return create_generator("unet_attn", base_channels=8, channel_mults=[1, 2], depth=2,
                                attention_resolutions=[4], num_res_blocks=1)

    torch.manual_seed(0)
    g_ab, g_ba = generator(), generator()
    hook = TrainingFID(image_dirs[0], image_dirs[1], every=2, extractor=TinyEmbed(),
                       image_size=32, cache_dir=tmp_path / "cache", kid_subsets=4)
    g_ab.train(), g_ba.train()
    assert hook(g_ab, g_ba, 1) == {}
    scores = hook(g_ab, g_ba, 2)
    assert set(scores) == {"fid_a2b", "kid_a2b", "kid_a2b_std", "fid_b2a", "kid_b2a",
                           "kid_b2a_std", "fid_mean", "kid_mean", "is_best"}
    assert scores["fid_mean"] == pytest.approx((scores["fid_a2b"] + scores["fid_b2a"]) / 2)
    assert scores["is_best"] == 1.0 and g_ab.training and g_ba.training
    # Each direction: its generator's translations against the other domain's real images.
    real_a = extract_features(find_images(image_dirs[0]), hook.extractor, cache=None)
    fake_a = features_of_tensors(hook.translate(g_ba, "b2a"), hook.extractor)
    assert scores["fid_b2a"] == pytest.approx(fid_from_features(real_a, fake_a))
    assert len(hook.sources["a2b"]) == 5 and len(hook.sources["b2a"]) == 4  # A: 5, B: 4 files
    with torch.no_grad():
        for p in g_ba.parameters():
            p.add_(torch.randn_like(p))
    later = hook(g_ab, g_ba, 4)
    assert later["fid_a2b"] == pytest.approx(scores["fid_a2b"])  # G_AB unchanged
    assert later["is_best"] == float(later["fid_mean"] < scores["fid_mean"])
    assert hook.state_dict() == {"best_fid": min(scores["fid_mean"], later["fid_mean"]),
                                 "best_step": 2 if later["fid_mean"] >= scores["fid_mean"] else 4,
                                 "best_by": "mean"}


@pytest.mark.parametrize("best, expected", [("mean", [1, 1, 0]), ("a2b", [1, 0, 1]),
                                             ("b2a", [1, 1, 0])])
def test_training_fid_hook_keeps_the_best_of_the_chosen_fid(image_dirs, tmp_path, best,
                                                            expected):
    hook = TrainingFID(image_dirs[0], image_dirs[1], every=1, extractor=TinyEmbed(),
                       image_size=32, cache_dir=tmp_path / "cache", kid_subsets=4, best=best)
    fids = iter([10.0, 10.0, 10.0, 5.0, 8.0, 20.0])  # (a2b, b2a) at steps 1, 2, 3
    hook.score = lambda generator, d: {f"fid_{d}": next(fids), f"kid_{d}": 0.0,
                                       f"kid_{d}_std": 0.0}
    g_ab, g_ba = object(), object()  # stand-ins: score is replaced above
    flags = [hook(g_ab, g_ba, step)["is_best"] for step in (1, 2, 3)]
    assert flags == expected
    chosen = {"mean": [10.0, 7.5, 14.0], "a2b": [10.0, 10.0, 8.0], "b2a": [10.0, 5.0, 20.0]}[best]
    assert hook.best_fid == min(chosen) and hook.best_step == 1 + chosen.index(min(chosen))


def test_training_fid_hook_judges_one_way_runs_by_a2b(image_dirs, tmp_path):
    hook = TrainingFID(image_dirs[0], image_dirs[1], every=1, extractor=TinyEmbed(),
                       image_size=32, cache_dir=tmp_path / "cache", kid_subsets=4, best="mean")
    fids = iter([12.0, 9.0])
    hook.score = lambda generator, d: {f"fid_{d}": next(fids), f"kid_{d}": 0.5,
                                       f"kid_{d}_std": 0.0}
    first, second = (hook(object(), None, step) for step in (1, 2))  # cut: no G_BA
    assert "fid_b2a" not in first and first["fid_mean"] == 12.0 and first["kid_mean"] == 0.5
    assert second["is_best"] == 1 and hook.best_fid == 9.0 and hook.best_step == 2


def test_a_best_chosen_by_another_fid_is_not_carried_over(image_dirs, tmp_path, caplog):
    hook = TrainingFID(image_dirs[0], image_dirs[1], every=1, extractor=TinyEmbed(),
                       image_size=32, cache_dir=tmp_path / "cache", kid_subsets=4, best="mean")
    hook.load_state_dict({"best_fid": 3.0, "best_step": 7})  # before both directions: G_AB's
    assert hook.best_fid is None and "chosen by a2b FID" in caplog.text
    hook.load_state_dict({"best_fid": 3.0, "best_step": 7, "best_by": "mean"})
    assert (hook.best_fid, hook.best_step) == (3.0, 7)


# --- real data ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_fid_separates_photos_from_paintings(shared_photo_dir, shared_painting_dir,
                                             shared_inception, tmp_path_factory):
    """FID(photo half, paintings) > FID(photo half 1, photo half 2), at equal N = 16.

    At 16 images per set FID's small-sample bias (~300 here) dwarfs the domain gap, so the
    margin is modest; KID (unbiased) shows the separation plainly.
    """
    extractor = torchscript_inception(shared_inception)
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    photos = extract_features(find_images(shared_photo_dir)[:32], extractor, cache=cache)
    paintings = extract_features(find_images(shared_painting_dir)[:16], extractor, cache=cache)
    half1, half2 = photos[0::2], photos[1::2]
    within = fid_from_features(half1, half2)
    across = min(fid_from_features(half1, paintings), fid_from_features(half2, paintings))
    assert across > 1.1 * within
    kid_within = kernel_inception_distance(half1, half2, subsets=1, subset_size=16).mean
    kid_across = kernel_inception_distance(half1, paintings, subsets=1, subset_size=16).mean
    assert kid_across > 0.01 and kid_across > 5 * abs(kid_within)

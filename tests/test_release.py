"""Release folders (`export --format hub`), loading from anywhere (`from_pretrained`, the
Hugging Face cache offline), `cyclestyle push` up to the upload, and torch.hub.

A model trained by `cyclestyle train` is exported, loaded back from the folder, from the Hub's
cache layout with HF_HUB_OFFLINE=1, from what `push` would upload and through torch.hub, and
must translate to the same pixels as the training checkpoint each time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.checkpoint import load_checkpoint, save_checkpoint
from cyclestyle.cli import main
from cyclestyle.imageio import find_images
from cyclestyle.metrics.evaluation import EvaluateOptions, evaluate
from cyclestyle.metrics.features import module_extractor
from cyclestyle.translate import Translator
from tests.helpers import REPO, TINY, tiny_overrides, write_images

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 2-step `cyclestyle train` run on folders named photo/ (5 images) and painting/ (4)."""
    root = tmp_path_factory.mktemp("trained")
    dirs = write_images(root / "photo", 5, seed=1), write_images(root / "painting", 4, seed=2)
    argv = ["train", str(TINY)]
    for override in tiny_overrides(dirs, root / "run", "train.max_steps=2"):
        argv += ["--set", override]
    assert main(argv) == 0
    return {"root": root, "run": root / "run", "dirs": dirs,
            "test_image": Image.open(find_images(dirs[0])[0]).convert("RGB")}


def pixels(translator: Translator, image: Image.Image) -> np.ndarray:
    return np.asarray(translator.translate(image))


def translator(source, direction: str = "a2b", **kwargs) -> Translator:
    return Translator.from_pretrained(source, direction, device="cpu", precision="fp32",
                                      **kwargs)


def expected_pixels(trained: dict, direction: str) -> np.ndarray:
    reference = Translator.from_checkpoint(trained["run"], direction, device="cpu",
                                           precision="fp32")
    out = pixels(reference, trained["test_image"])
    assert out.std() > 1, "a near-constant translation would prove nothing"
    return out


def export_hub(source, output: Path, *extra: str) -> int:
    return main(["export", "--checkpoint", str(source), "--format", "hub", "--output",
                 str(output), *extra])


def hub_cache(tmp_path: Path, release: Path, repo: str = "user/photo2painting") -> Path:
    """The Hugging Face cache layout huggingface_hub writes, holding `release` as `repo`."""
    cache = tmp_path / "hf_home" / "hub"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    shutil.copytree(release, snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return cache


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and a cache in tmp_path; any metadata request to the Hub is recorded."""
    import huggingface_hub.file_download as file_download

    requests = []

    def no_network(*args, **kwargs):
        requests.append(args)
        raise ConnectionError("the test forbids network access")

    monkeypatch.setattr(file_download, "get_hf_file_metadata", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return requests


# --- the release folder -----------------------------------------------------------------------

def test_export_hub_writes_weights_config_and_card_and_loads_to_the_same_pixels(trained,
                                                                              tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "release"
    assert export_hub(trained["run"], out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]
    state = load_checkpoint(trained["run"])
    tensors = load_file(out / "model.safetensors")
    for name, prefix in (("g_ab", "g_ab."), ("g_ba", "g_ba.")):
        stored = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        assert stored.keys() == state["models"][name].keys()
        assert all(torch.equal(v, state["models"][name][k]) for k, v in stored.items())
    config = json.loads((out / "config.json").read_text())
    model = state["config"]["model"]
    assert config["generator"] == model["generator"] == "unet_attn"
    assert {k: config["generator_args"][k] for k in model["generator_args"]} == \
        model["generator_args"]
    assert config["pixel_range"] == [-1, 1] and config["image_size"] == 32
    assert config["directions"] == {"a2b": "g_ab", "b2a": "g_ba"}
    assert config["cyclestyle_version"] and config["format_version"] == 1
    assert config["weights"] == "trained" and config["training"]["step"] == 2
    for direction in ("a2b", "b2a"):
        assert np.array_equal(pixels(translator(out, direction), trained["test_image"]),
                              expected_pixels(trained, direction)), direction


def test_model_card_front_matter_training_and_usage(trained, tmp_path):
    out = tmp_path / "release"
    assert export_hub(trained["run"], out) == 0
    card = (out / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: cyclestyle\n" in front and "\nlicense:\n" in front
    assert "- image-to-image" in front
    assert "`photo` (5 images)" in body and "`painting` (4 images)" in body
    assert "| steps | 2 of 2 (batch size 1) |" in body and "| precision | fp32 |" in body
    assert "Translator.from_pretrained(" in body and "cyclestyle translate --checkpoint" in body
    assert "Not evaluated" in body


def test_export_prefers_the_ema_weights_when_the_checkpoint_has_them(trained, tmp_path):
    state = load_checkpoint(trained["run"])
    ema = {name: {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in state["models"][name].items()} for name in ("g_ab", "g_ba")}
    state["ema"] = {"g_ab": ema["g_ab"], "g_ba": {"decay": 0.999, "updates": 2,
                                                  "weights": ema["g_ba"]}}  # ModelEMA's form
    for key in ("path", "format_version", "cyclestyle_version", "step"):
        state.pop(key)
    run = tmp_path / "ema_run"
    save_checkpoint(state, run, step=2, keep=1)
    out = tmp_path / "release"
    assert export_hub(run, out) == 0
    from safetensors.torch import load_file

    tensors = load_file(out / "model.safetensors")
    for name in ("g_ab", "g_ba"):
        assert all(torch.equal(tensors[f"{name}.{k}"], v) for k, v in ema[name].items())
    assert json.loads((out / "config.json").read_text())["weights"] == "ema"
    from_checkpoint = Translator.from_checkpoint(run, device="cpu", precision="fp32")
    assert np.array_equal(pixels(translator(out), trained["test_image"]),
                          pixels(from_checkpoint, trained["test_image"]))


def test_card_reports_the_evaluation_and_samples(trained, tmp_path):
    real, fake = trained["dirs"][1], trained["dirs"][0]
    tiny = module_extractor(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2),
                                                torch.nn.Flatten()), name="tiny")
    results = evaluate(real, fake, metrics=["fid", "kid"], out_dir=tmp_path / "eval",
                       options=EvaluateOptions(inception_weights=tiny, kid_subsets=3,
                                               use_cache=False))
    out = tmp_path / "release"
    assert export_hub(trained["run"], out, "--metrics", str(tmp_path / "eval" / "metrics.json"),
                      "--samples", str(fake)) == 0
    card = (out / "README.md").read_text()
    fid = results["metrics"]["fid"]
    assert f"| FID | {fid['value']:.2f} |" in card
    assert "N real 4, N fake 5" in card and fid["extractor"]["sha256"] in card
    assert "resize pil_bicubic" in card and "KID ×10³" in card
    samples = sorted(p.name for p in (out / "samples").iterdir())
    assert len(samples) == 4 and all(f"](samples/{name})" in card for name in samples)
    assert json.loads((out / "metrics.json").read_text())["metrics"]["fid"]["value"] == \
        fid["value"]


def test_existing_output_rules_as_for_other_exports(trained, tmp_path, capsys):
    out = tmp_path / "release"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export_hub(trained["run"], out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"output {out} is a folder that is not empty" in err
    assert "--overwrite" in err and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"metrics": {}}))
    assert export_hub(trained["run"], out, "--overwrite", "--metrics",
                      str(tmp_path / "eval" / "metrics.json")) == 0
    assert (out / "metrics.json").is_file() and (out / "notes.txt").read_text() == "mine"
    assert export_hub(trained["run"], out, "--overwrite") == 0  # the stale metrics.json goes
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors", "notes.txt"]
    assert export_hub(trained["run"], tmp_path / "eval" / "metrics.json") == 2
    assert "is invalid: an existing file" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_damaged_release_is_refused_in_one_line(trained, tmp_path, capsys):
    out = tmp_path / "release"
    assert export_hub(trained["run"], out) == 0
    config = json.loads((out / "config.json").read_text())
    config["generator_args"]["base_channels"] = 16
    (out / "config.json").write_text(json.dumps(config))
    code = main(["translate", "--checkpoint", str(out), "--input", str(trained["dirs"][0]),
                 "--output", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not match its model config" in err


# --- the Hugging Face Hub, offline --------------------------------------------------------

@pytest.mark.parametrize("spelling", ["user/photo2painting", "hf://user/photo2painting"])
def test_hub_repo_loads_from_the_cache_with_hf_hub_offline(trained, tmp_path, offline_hub,
                                                           spelling):
    out = tmp_path / "release"
    assert export_hub(trained["run"], out) == 0
    hub_cache(tmp_path, out)
    assert np.array_equal(pixels(translator(spelling), trained["test_image"]),
                          expected_pixels(trained, "a2b"))
    assert np.array_equal(pixels(translator(spelling, "b2a", revision=COMMIT),
                                 trained["test_image"]), expected_pixels(trained, "b2a"))
    assert offline_hub == []  # HF_HUB_OFFLINE=1 honoured: no request was even tried


def test_translate_cli_reads_a_hub_repo_offline(trained, tmp_path, offline_hub):
    out = tmp_path / "release"
    assert export_hub(trained["run"], out) == 0
    hub_cache(tmp_path, out)
    translated = tmp_path / "translated"
    assert main(["translate", "--checkpoint", "hf://user/photo2painting", "--input",
                 str(trained["dirs"][0]), "--output", str(translated), "--precision", "fp32",
                 "--no-progress"]) == 0
    assert len(find_images(translated)) == 5


def test_a_repo_missing_from_the_cache_offline_is_one_line_naming_repo_and_cache(
        tmp_path, offline_hub, capsys):
    images = write_images(tmp_path / "photos", 1, seed=3)
    code = main(["translate", "--checkpoint", "hf://user/elsewhere", "--input", str(images),
                 "--output", str(tmp_path / "t")])
    err = capsys.readouterr().err
    cache = tmp_path / "hf_home" / "hub"
    assert code == 2 and err.count("\n") == 1, err
    assert "hf://user/elsewhere: config.json is not in the Hugging Face cache" in err
    assert f"({cache})" in err and "HF_HUB_OFFLINE=1" in err


# --- cyclestyle push, up to the upload --------------------------------------------------------

def test_push_uploads_the_release_folder_it_builds(trained, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    uploaded = tmp_path / "uploaded"
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
            calls.append(("create_repo", repo_id, private, exist_ok))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
            calls.append(("upload_folder", repo_id, commit_message))
            shutil.copytree(folder_path, uploaded)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["push", "--checkpoint", str(trained["run"]), "--repo", "user/p2p",
                 "--private", "--samples", str(trained["dirs"][0])]) == 0
    assert calls == [("create_repo", "user/p2p", True, True),
                     ("upload_folder", "user/p2p", "Upload cyclestyle release")]
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json",
                                                          "model.safetensors", "samples"]
    card = (uploaded / "README.md").read_text()
    assert "--checkpoint hf://user/p2p" in card and 'from_pretrained("user/p2p"' in card
    assert np.array_equal(pixels(translator(uploaded), trained["test_image"]),
                          expected_pixels(trained, "a2b"))
    assert "https://huggingface.co/user/p2p" in capsys.readouterr().out
    assert main(["push", "--checkpoint", str(trained["run"]), "--repo", "not a repo"]) == 2


# --- torch.hub ---------------------------------------------------------------------------------

def test_torch_hub_loads_the_generator_from_this_checkout(trained, tmp_path):
    out = tmp_path / "release"
    assert export_hub(trained["run"], out) == 0
    g_ba = torch.hub.load(str(REPO), "generator", source="local", checkpoint=str(out),
                          direction="b2a")
    assert isinstance(g_ba, torch.nn.Module) and not g_ba.training
    hub_translator = torch.hub.load(str(REPO), "translator", source="local",
                                    checkpoint=str(trained["run"]), direction="b2a",
                                    device="cpu", precision="fp32")
    assert np.array_equal(pixels(Translator(g_ba, device="cpu", precision="fp32"),
                                 trained["test_image"]), expected_pixels(trained, "b2a"))
    assert np.array_equal(pixels(hub_translator, trained["test_image"]),
                          expected_pixels(trained, "b2a"))


def test_readme_release_commands_run(trained, tmp_path):
    import re
    import shlex

    readme = (REPO / "README.md").read_text()
    lines = [line for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
             for line in block.splitlines()]
    export = next(line for line in lines if line.startswith("cyclestyle export")
                  and "--format hub" in line)
    load = next(line for line in lines if line.startswith("cyclestyle translate --checkpoint "
                                                          "releases/p2p"))
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text(json.dumps({"metrics": {}}))
    mapping = {"runs/p2p": str(trained["run"]), "releases/p2p": str(tmp_path / "release"),
               "runs/p2p/eval/metrics.json": str(eval_dir / "metrics.json"),
               "runs/p2p/translated": str(trained["dirs"][1]),
               "photos/": str(trained["dirs"][0]), "paintings/": str(tmp_path / "paintings")}
    for line in (export, load):
        assert main([mapping.get(arg, arg) for arg in shlex.split(line)[1:]]) == 0
    assert (tmp_path / "release" / "samples").is_dir()
    assert len(find_images(tmp_path / "paintings")) == 5

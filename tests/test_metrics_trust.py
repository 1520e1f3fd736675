"""`cyclestyle evaluate` trusts nothing it did not check: cache entries, set sizes, output
folders, and the torch-free parts stay torch-free."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import cyclestyle.metrics.evaluation as ev
from cyclestyle.cli import main
from cyclestyle.metrics import FeatureCache, extract_features, module_extractor
from cyclestyle.metrics.options import EvaluateOptions
from cyclestyle.options import ConfigError
from tests.helpers import write_images
from tests.test_metrics_eval import Counting, TinyEmbed


@pytest.fixture
def tiny_torchscript(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_embed.pt"
    torch.jit.script(TinyEmbed()).save(str(path))
    return path


def evaluate_argv(real, fake, out, tiny_torchscript, *extra) -> list[str]:
    return ["evaluate", "--real", str(real), "--fake", str(fake), "--out", str(out),
            "--inception-weights", str(tiny_torchscript), "--vgg-weights", "random",
            "--style-image-size", "32", "--kid-subsets", "5", *map(str, extra)]


@pytest.fixture
def nothing_computed(monkeypatch):
    """Fails the test if evaluate gets as far as loading an extractor."""
    def refuse(_weights):
        raise AssertionError("evaluate computed before refusing its arguments")
    monkeypatch.setattr(ev, "load_inception", refuse)


# --- feature cache entries must match the images they claim -----------------------------------

def _entry(cache: FeatureCache) -> Path:
    (path,) = cache.folder.glob("*.pt")
    return path


def _forge(path: Path, change) -> None:
    entry = torch.load(path, weights_only=True)
    info = json.loads(entry["info"])
    features, info = change(entry["features"], info)
    torch.save({"features": features, "info": json.dumps(info)}, path)


@pytest.mark.parametrize("damage", ["too_few_rows", "other_files", "old_format", "other_dim"])
def test_cache_entry_not_matching_its_images_is_recomputed(tmp_path, damage, caplog):
    """An entry of 3 rows for 8 images once gave FID 0.000 with n=3; now it is recomputed."""
    folder = write_images(tmp_path / "imgs", 8, seed=4)
    counting = Counting()
    extractor = module_extractor(counting)
    cache = FeatureCache(tmp_path / "cache")
    truth = extract_features(folder, extractor, cache=cache)
    calls = counting.calls
    changes = {
        "too_few_rows": lambda f, i: (f[:3], i),
        "other_files": lambda f, i: (f, {**i, "file_sha256": i["file_sha256"][::-1]}),
        "old_format": lambda f, i: (f, {k: v for k, v in i.items() if k != "format"}),
        "other_dim": lambda f, i: (f[:, :5], i),
    }
    _forge(_entry(cache), changes[damage])
    again = extract_features(folder, extractor, cache=cache)
    assert counting.calls == calls + 8 and torch.equal(again, truth)
    assert "ignoring feature cache entry" in caplog.text
    assert torch.equal(extract_features(folder, extractor, cache=cache), truth)  # rewritten
    assert counting.calls == calls + 8


def test_unwritable_cache_entry_is_a_warning_not_an_error(tmp_path, caplog):
    folder = write_images(tmp_path / "imgs", 3, seed=4)
    (tmp_path / "a_file").write_text("")
    cache = FeatureCache(tmp_path / "a_file" / "cache")
    features = extract_features(folder, module_extractor(TinyEmbed()), cache=cache)
    assert features.shape == (3, 12) and "feature cache: not stored" in caplog.text


# --- a set too small for one metric skips that metric only -------------------------------------

def test_one_image_real_set_skips_only_fid_and_kid(tmp_path, tiny_torchscript, capsys):
    source = write_images(tmp_path / "src", 3, seed=1)
    real = write_images(tmp_path / "real", 1, seed=2)
    out = tmp_path / "eval"
    assert main(evaluate_argv(real, source, out, tiny_torchscript, "--source", source,
                              "--cache-dir", tmp_path / "cache")) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert set(results["skipped"]) == {"fid", "kid"}
    assert "needs at least 2 images per set" in results["skipped"]["fid"]
    assert f"--real {str(real)!r} has 1" in results["skipped"]["kid"]
    assert set(results["metrics"]) == {"style", "content"}
    assert "needs at least 2 images" in (out / "report.html").read_text()
    assert "skipped" in capsys.readouterr().out


def test_one_image_set_with_fid_named_fails_before_computing(tmp_path, tiny_torchscript,
                                                             capsys, nothing_computed):
    fake = write_images(tmp_path / "fake", 1, seed=1)
    real = write_images(tmp_path / "real", 4, seed=2)
    assert main(evaluate_argv(real, fake, tmp_path / "eval", tiny_torchscript,
                              "--metrics", "fid")) == 2
    err = capsys.readouterr().err
    assert "--metrics: 'fid' is invalid: fid needs at least 2 images per set; --fake" in err


# --- outputs are checked before anything is computed -------------------------------------------

def _read_only(folder: Path, monkeypatch) -> None:
    """chmod a-w; as root (which ignores it) the write probe meets EACCES there instead."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_temporary_file = tempfile.TemporaryFile

        def denied(*args, dir=None, **kwargs):  # noqa: A002
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_temporary_file(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "TemporaryFile", denied)


@pytest.mark.parametrize("case", ["existing_file", "under_a_file", "read_only"])
def test_unwritable_out_is_one_line_exit_2_before_computing(image_dirs, tiny_torchscript,
                                                            tmp_path, capsys, monkeypatch,
                                                            case, nothing_computed):
    out = {"existing_file": tmp_path / "metrics.json", "under_a_file": tmp_path / "f" / "eval",
           "read_only": tmp_path / "ro" / "eval"}[case]
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "f").write_text("")
    if case == "read_only":
        _read_only(out.parent, monkeypatch)
    try:
        assert main(evaluate_argv(image_dirs[1], image_dirs[0], out, tiny_torchscript)) == 2
    finally:
        (tmp_path / "ro").exists() and (tmp_path / "ro").chmod(0o755)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--out: {str(out)!r} is invalid: " in err
    assert {"existing_file": "an existing file, not a folder", "under_a_file": "is a file, so no",
            "read_only": "not writable (nor is its parent"}[case] in err


def test_unwritable_cache_dir_warns_and_runs_without_it(image_dirs, tiny_torchscript, tmp_path,
                                                        caplog, monkeypatch):
    cache_dir = tmp_path / "ro_cache"
    _read_only(cache_dir, monkeypatch)
    out = tmp_path / "eval"
    try:
        code = main(evaluate_argv(image_dirs[1], image_dirs[0], out, tiny_torchscript,
                                  "--metrics", "fid", "--cache-dir", cache_dir))
    finally:
        cache_dir.chmod(0o755)
    assert code == 0 and "computing features without the cache" in caplog.text
    results = json.loads((out / "metrics.json").read_text())
    assert results["feature_cache"]["note"].startswith("not used: not writable")
    assert results["metrics"]["fid"]["n_real"] == 4 and not list(cache_dir.iterdir())


@pytest.mark.parametrize("inside", ["--fake", "--real", "--source"])
def test_out_inside_an_input_folder_is_refused_naming_both(image_dirs, tiny_torchscript, tmp_path,
                                                           capsys, inside, nothing_computed):
    source, real = image_dirs
    fake = write_images(tmp_path / "fake", 5, seed=1)
    folder = {"--fake": fake, "--real": real, "--source": source}[inside]
    out = folder / "eval" if inside != "--source" else folder  # the folder itself counts too
    assert main(evaluate_argv(real, fake, out, tiny_torchscript, "--source", source)) == 2
    err = capsys.readouterr().err
    assert f"--out: {str(out)!r} is invalid: it is inside {inside} {str(folder)!r}" in err
    assert not out.exists() or out == folder


# --- options: one grammar, no torch for --help -------------------------------------------------

@pytest.mark.parametrize(("flag", "value"), [("--kid-subsets", "0"), ("--kid-subset-size", "1"),
                                             ("--batch-size", "0"), ("--style-image-size", "8")])
def test_bad_option_values_name_the_flag(image_dirs, tmp_path, capsys, flag, value):
    argv = ["evaluate", "--real", str(image_dirs[1]), "--fake", str(image_dirs[0]),
            "--out", str(tmp_path / "e"), flag, value]
    assert main(argv) == 2
    assert f"{flag}: {value} is invalid: " in capsys.readouterr().err


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"--metrics: 'fid,psnr' is invalid: unknown metric"
                                          r"\(s\) psnr; a comma-separated subset of fid,kid"):
        ev.evaluate(".", ".", metrics=["fid", "psnr"])


def test_options_are_the_flags():
    import argparse

    from cyclestyle.metrics.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--real", "r", "--fake", "f", "--no-cache",
                              "--no-lpips", "--kid-subset-size", "50"])
    from cyclestyle.options import dataclass_from_args

    opts = dataclass_from_args(EvaluateOptions, args)
    assert opts == EvaluateOptions(use_cache=False, lpips=False, kid_subset_size=50)


def test_metrics_package_cli_and_options_import_without_torch():
    code = ("import argparse, sys\n"
            "import cyclestyle.metrics, cyclestyle.metrics.resize\n"
            "from cyclestyle.metrics.cli import add_parser\n"
            "add_parser(argparse.ArgumentParser().add_subparsers())\n"
            "assert cyclestyle.metrics.RESIZE_MODES and cyclestyle.metrics.EvaluateOptions\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_every_lazy_export_resolves():
    import cyclestyle.metrics as metrics

    assert sorted(dir(metrics)) == sorted(metrics.__all__)
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None
    from cyclestyle.metrics.evaluation import EvaluateOptions as again
    from cyclestyle.metrics.features import RESIZE_MODES

    assert again is EvaluateOptions and RESIZE_MODES is metrics.RESIZE_MODES

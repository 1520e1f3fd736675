"""`cyclestyle export`: ONNX and TorchScript files that translate like PyTorch at any size.

Tolerance: the exported model's output may differ from PyTorch's by at most 1e-4 (max absolute
difference, float32, outputs in [-1, 1]); on CPU ONNX Runtime measures 1e-6 (these tiny
generators) to 2e-5 (the default unet_attn), TorchScript exactly 0.
"""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclestyle.checkpoint import plain_state_dict, save_checkpoint
from cyclestyle.cli import main
from cyclestyle.models import list_generators
from cyclestyle.models.factory import build_generators
from cyclestyle.train.config import load_config
from cyclestyle.translate import export

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
# Few channels, so exporting each generator takes seconds. A generator missing here is exported
# at its default size (slower, still tested).
TINY_ARGS = {
    # input_skip: the demo's head, tanh(head + atanh(x)), must export too.
    "unet_attn": {"base_channels": 8, "channel_mults": [1, 2], "depth": 2,
                  "attention_resolutions": [2, 4], "num_res_blocks": 1, "input_skip": True},
    "resnet": {"base_channels": 4, "n_blocks": 2},
    "reference_unet": {"base_channels": 4, "num_downs": 5},
    "cut_resnet": {"base_channels": 4, "n_blocks": 2},
}


def make_checkpoint(folder: Path, generator: str) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """A checkpoint with randomised weights: attention's zero-initialised output projection
    would otherwise hide a wrongly exported attention layer."""
    args = json.dumps(TINY_ARGS.get(generator, {}))
    config = load_config(None, [f"model.generator={generator}", f"model.generator_args={args}"])
    torch.manual_seed(0)
    g_ab, g_ba = build_generators(config.model)
    with torch.no_grad():
        for param in [*g_ab.parameters(), *g_ba.parameters()]:
            param.add_(0.1 * torch.randn_like(param))
    models = {"g_ab": plain_state_dict(g_ab), "g_ba": plain_state_dict(g_ba)}
    save_checkpoint({"config": config.to_dict(), "models": models}, folder, step=1, keep=1)
    return folder, g_ab.eval(), g_ba.eval()


def export_cli(checkpoint: Path, output: Path, fmt: str, *extra: str) -> int:
    return main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--output",
                 str(output), *extra])


def images(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def pytorch(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = generator(x)
    assert out.std() > 0.05, "outputs near constant: the comparison would prove nothing"
    return out


@pytest.fixture(scope="module", params=list_generators())
def run(request, tmp_path_factory) -> tuple[str, Path, torch.nn.Module, torch.nn.Module]:
    folder = tmp_path_factory.mktemp(f"run_{request.param}")
    return (request.param, *make_checkpoint(folder, request.param))


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    return make_checkpoint(tmp_path_factory.mktemp("resnet_run"), "resnet")


# ---------------------------------------------------------------- outputs match PyTorch


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_at_sizes_other_than_the_example(run, fmt, tmp_path, capsys):
    name, checkpoint, g_ab, _ = run
    output = tmp_path / f"g_ab.{fmt}"
    assert export_cli(checkpoint, output, fmt) == 0
    assert "max |diff| vs PyTorch" in capsys.readouterr().out
    stride = g_ab.stride
    translate = export.load_exported(output)
    # The export example is 1 x (4 stride) x (5 stride); these are not, and the first two are
    # non-square and no multiple of the stride (ONNX: padded by run_onnx, as PyTorch pads).
    for shape in [(1, 3 * stride + 1, 5 * stride + 3), (2, 6 * stride, 2 * stride + 1),
                  (3, 2 * stride, 7 * stride)]:
        x = images(*shape)
        got = translate(x)
        assert got.shape == x.shape
        diff = (got - pytorch(g_ab, x)).abs().max().item()
        assert diff <= TOLERANCE, f"{name} {fmt} {shape}: max |diff| {diff:.2e}"
    metadata = export.exported_metadata(output)
    assert metadata["cyclestyle.stride"] == str(stride)
    assert metadata["cyclestyle.direction"] == "a2b"
    assert metadata["cyclestyle.generator"] == name


def test_onnx_graph_itself_takes_any_stride_multiple(resnet_run, tmp_path):
    """Without run_onnx's padding: the graph's batch, height and width are symbolic."""
    import onnxruntime

    checkpoint, g_ab, _ = resnet_run
    assert export_cli(checkpoint, tmp_path / "g.onnx", "onnx") == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape[:1] +
               session.get_inputs()[0].shape[2:])  # symbolic names, not fixed sizes
    x = images(2, 7 * g_ab.stride, 3 * g_ab.stride)
    got = session.run(None, {"x": x.numpy()})[0]
    assert np.abs(got - pytorch(g_ab, x).numpy()).max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_runs_any_size_without_cyclestyle_and_respects_direction(resnet_run,
                                                                               tmp_path):
    checkpoint, g_ab, g_ba = resnet_run
    output = tmp_path / "g_ba.pt"
    assert export_cli(checkpoint, output, "torchscript", "--direction", "b2a") == 0
    assert zipfile.is_zipfile(output)
    module = torch.jit.load(str(output))  # plain torch: no cyclestyle code inside
    for shape in [(1, 5, 9), (2, 31, 18)]:  # down to below the stride: replicate padding
        x = images(*shape)
        with torch.inference_mode():
            got = module(x)
        assert (got - pytorch(g_ba, x)).abs().max() <= TOLERANCE
        assert (got - pytorch(g_ab, x)).abs().max() > 10 * TOLERANCE  # G_BA, not G_AB
    assert export.exported_metadata(output)["cyclestyle.direction"] == "b2a"


def test_an_export_that_drifts_beyond_the_tolerance_is_refused(resnet_run, tmp_path,
                                                               monkeypatch):
    _, g_ab, _ = resnet_run
    loader = export.load_exported

    def drifting(path):
        translate = loader(path)
        return lambda x: translate(x) + 2 * TOLERANCE

    monkeypatch.setattr(export, "load_exported", drifting)
    with pytest.raises(RuntimeError, match=r"differs from PyTorch by up to 2\.0\de-04"):
        export.export_generator(g_ab, tmp_path / "g.pt", "torchscript")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file


def test_the_check_runs_at_another_batch_and_size_than_the_export_example(resnet_run,
                                                                         tmp_path, monkeypatch):
    """A check at the example's own shape would pass an ONNX graph specialised to it."""
    pytest.importorskip("onnxruntime")
    _, g_ab, _ = resnet_run
    traced, checked = [], []
    onnx_export, loader = torch.onnx.export, export.load_exported

    def spy_export(model, args, *rest, **kwargs):
        traced.append(tuple(args[0].shape))
        return onnx_export(model, args, *rest, **kwargs)

    def spy_load(path):
        translate = loader(path)

        def run(x):
            checked.append(tuple(x.shape))
            return translate(x)
        return run

    monkeypatch.setattr(torch.onnx, "export", spy_export)
    monkeypatch.setattr(export, "load_exported", spy_load)
    report = export.export_generator(g_ab, tmp_path / "g.onnx", "onnx")
    (example,), (check,) = traced, checked
    stride = g_ab.stride
    assert check[0] > 1 and check[0] != example[0]  # another batch size: the batch axis is free
    assert check[2] != example[2] and check[3] != example[3] and check[2] != check[3]
    assert check[2] % stride and check[3] % stride  # no stride multiple: run_onnx pads
    assert report.max_abs_diff is not None and report.max_abs_diff <= TOLERANCE


@pytest.mark.parametrize("case", ["torchscript", "onnx-without-onnxruntime", "exported-nan"])
def test_a_generator_or_export_that_outputs_nan_is_refused(resnet_run, tmp_path, monkeypatch,
                                                           case):
    import copy
    import sys

    generator = copy.deepcopy(resnet_run[1])
    fmt = "onnx" if case.startswith("onnx") else "torchscript"
    if case == "exported-nan":  # PyTorch is fine; the exported file is not
        loader = export.load_exported
        monkeypatch.setattr(export, "load_exported",
                            lambda path: lambda x: loader(path)(x) * float("nan"))
        expected = "the exported model outputs NaN or inf"
    else:
        with torch.no_grad():
            next(generator.parameters()).view(-1)[0] = float("nan")
        expected = r"generator 'resnet' outputs NaN or inf on a \(2, 3, "
    if case == "onnx-without-onnxruntime":  # the comparison is skipped; the NaN check is not
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeError, match=expected):
        export.export_generator(generator, tmp_path / f"g.{fmt}", fmt)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file


def test_a_users_dot_tmp_file_beside_the_output_survives_an_export(resnet_run, tmp_path):
    """Export once wrote through the fixed name `.NAME.tmp`, replacing then deleting a user's
    file of that name; temp names are now unique (cyclestyle.atomic.atomic_path)."""
    output = tmp_path / "g_ab.pt"
    users = tmp_path / ".g_ab.pt.tmp"
    users.write_bytes(b"the user's notes")
    assert export_cli(resnet_run[0], output, "torchscript") == 0
    assert users.read_bytes() == b"the user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".g_ab.pt.tmp", "g_ab.pt"]


def test_two_exports_to_one_path_do_not_collide(resnet_run, tmp_path, monkeypatch):
    """A second export to the same file runs while the first is being checked, as two
    processes may interleave: each has its own temp file, both succeed, one whole file stays."""
    generator = resnet_run[1]
    output = tmp_path / "g.pt"
    verify, checked = export._verify, []

    def interleaved(path, images, expected):
        checked.append(path)
        if len(checked) == 1:  # the first export's file is written, not yet renamed
            export.export_generator(generator, output, "torchscript", overwrite=True)
        return verify(path, images, expected)

    monkeypatch.setattr(export, "_verify", interleaved)
    export.export_generator(generator, output, "torchscript", overwrite=True)
    assert len(set(checked)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]
    x = images(1, 20, 28)
    assert (export.load_exported(output)(x) - pytorch(generator, x)).abs().max() <= TOLERANCE


# ---------------------------------------------------------------- errors and help


def test_existing_output_is_kept_unless_overwrite(resnet_run, tmp_path, capsys):
    checkpoint = resnet_run[0]
    output = tmp_path / "g_ab.onnx"
    output.write_bytes(b"somebody's file")
    assert export_cli(checkpoint, output, "torchscript") == 2
    err = capsys.readouterr().err
    assert f"output {output} already exists" in err and "--overwrite" in err
    assert output.read_bytes() == b"somebody's file"
    assert export_cli(checkpoint, output, "torchscript", "--overwrite") == 0
    assert zipfile.is_zipfile(output)
    with pytest.raises(FileExistsError):
        export.export_generator(resnet_run[1], output, "torchscript")


def test_bad_format_folder_output_and_missing_checkpoint_are_clear_errors(resnet_run, tmp_path,
                                                                          capsys):
    checkpoint = resnet_run[0]
    with pytest.raises(SystemExit) as exit_info:
        export_cli(checkpoint, tmp_path / "g.tflite", "tflite")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tflite'" in err and "onnx" in err and "torchscript" in err
    with pytest.raises(ValueError, match="format='tflite'; choose one of onnx, torchscript"):
        export.export_generator(resnet_run[1], tmp_path / "g.tflite", "tflite")
    assert export_cli(checkpoint, tmp_path, "torchscript") == 2
    assert f"output {tmp_path} is a folder" in capsys.readouterr().err
    assert export_cli(tmp_path / "nowhere.pt", tmp_path / "g.pt", "torchscript") == 2
    assert f"checkpoint not found: {tmp_path / 'nowhere.pt'}" in capsys.readouterr().err
    assert not (tmp_path / "g.pt").exists()


def test_help_explains_formats_sizes_tolerance_and_overwrite(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("torchscript any H x W", "multiples of the generator's stride",
                   "pad_to_stride", "max absolute difference of 1e-04", "--overwrite",
                   "(N, 3, H, W) RGB in [-1, 1]"):
        assert phrase in text, phrase


def test_readme_export_example_runs(resnet_run, tmp_path):
    readme = (REPO / "README.md").read_text()
    line = next(line for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
                for line in block.splitlines() if line.startswith("cyclestyle export"))
    argv = [arg.replace("runs/p2p", str(resnet_run[0])).replace("g_ab.pt", str(tmp_path / "g.pt"))
            for arg in shlex.split(line)[1:]]
    assert main(argv) == 0
    assert export.exported_metadata(tmp_path / "g.pt")["cyclestyle.format"] == "torchscript"


def test_unscriptable_generator_names_the_reason(tmp_path):
    class Unscriptable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.contiguous(memory_format=pick_format(x))

    def pick_format(x: torch.Tensor) -> torch.memory_format:  # TorchScript knows no such type
        return torch.contiguous_format

    with pytest.raises(ValueError, match=r"'Unscriptable' cannot be compiled by torch.jit.script "
                                         r"\(\w.*\); export it with --format onnx"):
        export._export_torchscript(Unscriptable(), tmp_path / "g.pt", {})
    assert not (tmp_path / "g.pt").exists()

"""`cyclestyle export`: a generator as a standalone ONNX or TorchScript file.

Both take float32 (N, 3, H, W) RGB in [-1, 1] and return the translation in [-1, 1], same shape,
with N, H and W dynamic. They differ in which H and W they accept:

- TorchScript (`torch.jit.script`) compiles the generator's own pad-to-stride and crop, so any
  H x W works, exactly as in PyTorch. `torch.jit.trace` is not used: it bakes the example's pad
  and crop sizes into the graph (a trace at 16x20 returns 0-row images at 24x12).
- ONNX: H and W must be multiples of the generator's stride and at least twice it (the stride is
  in the metadata, "cyclestyle.stride"). `run_onnx` pads other sizes with `pad_to_stride` (centred
  reflect padding, what the PyTorch generator does internally) and crops back. The generators
  choose their padding with Python arithmetic and a branch, which torch.export specialises to
  the example, and a reflect pad of symbolic size does not export correctly in torch 2.14.

Every export is checked before it is kept: PyTorch's own output on a random check batch must
be finite (a generator with NaN weights is refused before exporting), and the exported file and
PyTorch translate that batch, of a size other than the export example (batch 2, non-square, not
a stride multiple), and must agree within TOLERANCE, a max absolute difference of 1e-4 on [-1, 1] outputs in float32 (measured on
CPU: ONNX Runtime 1e-6 for tiny generators up to 2e-5 for the default unet_attn at 333x517,
TorchScript exactly 0). An existing file is never replaced unless asked (`--overwrite`).

torch 2.14 marks TorchScript deprecated (FutureWarning) but still saves, loads and runs it, from
Python (`torch.jit.load`) or C++ (libtorch); the warning is silenced during export.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import typing
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cyclestyle.atomic import atomic_path
from cyclestyle.translate.options import FILE_FORMATS, TOLERANCE

log = logging.getLogger(__name__)

MAX_SIDE = 16384  # upper bound the ONNX exporter asks for; any image we would translate fits
METADATA_FILE = "cyclestyle.json"  # TorchScript: metadata as an extra file in the archive


class OutputExistsError(FileExistsError, ValueError):
    """The output exists and overwriting was not asked for (a ValueError too: a usage error)."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    stride: int
    max_abs_diff: float | None  # vs PyTorch on the check batch; None when not checked


def pad_to_stride(images: np.ndarray, stride: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Centred reflect padding of (N, 3, H, W) to multiples of `stride` (at least 2 * stride).

    Returns the padded array and the crop (top, left, height, width) that undoes it:
    `out[..., top:top + height, left:left + width]`.
    """
    height, width = images.shape[-2:]
    pads = []
    for side in (height, width):
        target = max(-(-side // stride) * stride, 2 * stride)
        total = target - side
        pads.append((total // 2, total - total // 2))
    fits = all(max(p) < side for p, side in zip(pads, (height, width)))
    padded = np.pad(images, ((0, 0), (0, 0), *pads), mode="reflect" if fits else "edge")
    return padded, (pads[0][0], pads[1][0], height, width)


def run_onnx(session, images: np.ndarray, stride: int) -> np.ndarray:
    """Translate (N, 3, H, W) float32 in [-1, 1] of any H, W with an onnxruntime session."""
    padded, (top, left, height, width) = pad_to_stride(images.astype(np.float32), stride)
    out = session.run(None, {session.get_inputs()[0].name: padded})[0]
    return out[..., top:top + height, left:left + width]


def check_output(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """`output` as a Path, refusing a folder, and an existing file unless `overwrite`."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name such as {path}/g_ab.onnx")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists; choose another name or pass "
                                "--overwrite (overwrite=True) to replace it")
    return path


def export_generator(generator: nn.Module, output: str | os.PathLike, fmt: str = "onnx",
                     metadata: dict[str, str] | None = None, overwrite: bool = False,
                     verify: bool = True) -> ExportReport:
    """Write a float32 CPU copy of `generator` to `output` as `fmt`, checked against PyTorch.

    The file appears only once written and checked (temp file + rename); a failed check raises
    RuntimeError and leaves nothing behind. The ONNX check needs onnxruntime (skipped without).
    """
    if fmt not in FILE_FORMATS:
        raise ValueError(f"format={fmt!r}; choose one of {', '.join(FILE_FORMATS)}")
    output = check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    generator = copy.deepcopy(generator).cpu().float().eval().requires_grad_(False)
    stride = int(generator.stride)
    metadata = {**(metadata or {}), "cyclestyle.stride": str(stride), "cyclestyle.format": fmt}
    check = _check_batch(stride)
    expected = _finite_output(generator, check) if verify else None  # before the slow export
    with atomic_path(output) as tmp:  # a unique temp name: never a user's file, no collisions
        if fmt == "onnx":
            _export_onnx(generator, stride, tmp, metadata)
        else:
            _export_torchscript(generator, tmp, metadata)
        diff = _verify(tmp, check, expected) if verify else None
    return ExportReport(output, fmt, stride, diff)


def _example_batch(stride: int) -> torch.Tensor:
    """What the ONNX exporter traces: 1 x 3 x (4 stride) x (5 stride)."""
    return torch.rand(1, 3, 4 * stride, 5 * stride) * 2 - 1


def _check_batch(stride: int) -> torch.Tensor:
    """What the check runs: unlike the example in batch size, height and width, and no stride
    multiple, so the dynamic axes and (ONNX) run_onnx's padding are exercised."""
    return torch.rand(2, 3, 3 * stride + 3, 2 * stride + 5,
                      generator=torch.Generator().manual_seed(0)) * 2 - 1


def _finite_output(generator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = generator(images)
    if not bool(torch.isfinite(out).all()):
        name = getattr(generator, "registry_name", type(generator).__name__)
        raise RuntimeError(f"generator {name!r} outputs NaN or inf on a {tuple(images.shape)} "
                           "check batch (are its weights finite?); nothing exported")
    return out


def _export_onnx(generator: nn.Module, stride: int, path: Path, metadata: dict[str, str]) -> None:
    import onnx

    example = (_example_batch(stride),)
    dim = torch.export.Dim
    dynamic = {"x": {0: dim("batch", min=1, max=1024),
                     2: stride * dim("height_blocks", min=2, max=MAX_SIDE // stride),
                     3: stride * dim("width_blocks", min=2, max=MAX_SIDE // stride)}}
    program = torch.onnx.export(generator, example, dynamo=True, input_names=["x"],
                                output_names=["y"], dynamic_shapes=dynamic, verbose=False)
    model = program.model_proto
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def _export_torchscript(generator: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from cyclestyle.models import layers
    from cyclestyle.options import first_line

    # torch.jit.script cannot read NamedTuple fields annotated as strings (layers.py postpones
    # annotations; pytorch#95858): hand it the resolved types, which mean the same.
    layers.Crop.__annotations__ = typing.get_type_hints(layers.Crop)
    with _quiet_jit():
        try:
            scripted = torch.jit.script(generator)
        except Exception as err:  # the frontend raises several types, all "cannot compile"
            name = getattr(generator, "registry_name", type(generator).__name__)
            raise ValueError(f"generator {name!r} cannot be compiled by torch.jit.script "
                             f"({first_line(err)}); export it with --format onnx") from err
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch 2.14's TorchScript deprecation FutureWarnings (save/load/script still work)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def load_exported(path: str | os.PathLike) -> Callable[[torch.Tensor], torch.Tensor]:
    """An exported file as a function: (N, 3, H, W) float32 in [-1, 1], any H and W -> same.

    TorchScript files are zip archives; anything else is read as ONNX (needs onnxruntime).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if zipfile.is_zipfile(path):
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu")
        return lambda images: module(images.float())
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    stride = int(exported_metadata(path)["cyclestyle.stride"])
    return lambda images: torch.from_numpy(run_onnx(session, images.cpu().numpy(), stride))


def exported_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The "cyclestyle.*" metadata an export stored (stride, format, direction, ...)."""
    if zipfile.is_zipfile(path):
        files = {METADATA_FILE: ""}
        with _quiet_jit():
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        return json.loads(files[METADATA_FILE])
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in model.metadata_props}


def _verify(path: Path, images: torch.Tensor, expected: torch.Tensor) -> float | None:
    """Max |exported - PyTorch| on `images`; raises above TOLERANCE or on non-finite output."""
    if not zipfile.is_zipfile(path):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("onnxruntime is not installed: %s was not checked against PyTorch", path)
            return None
    got = load_exported(path)(images)
    if not bool(torch.isfinite(got).all()):
        raise RuntimeError(f"the exported model outputs NaN or inf on a {tuple(images.shape)} "
                           "batch where PyTorch does not; not written")
    diff = float((got - expected).abs().max())
    if not diff <= TOLERANCE:
        raise RuntimeError(f"the exported model differs from PyTorch by up to {diff:.2e} on a "
                           f"{tuple(images.shape)} batch (allowed {TOLERANCE:.0e}); not written")
    return diff

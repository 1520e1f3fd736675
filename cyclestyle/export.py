"""`cyclestyle export`: a generator as a standalone ONNX file (or a torch.export program).

The exported graph takes float32 (N, 3, H, W) in [-1, 1] with dynamic N, H and W, where H and W
are multiples of the generator's stride and at least twice it; it returns the translation in
[-1, 1], same shape. Other sizes go through `pad_to_stride` (centred reflect padding, exactly
what the PyTorch generator does internally) and are cropped back. The stride is stored in the
ONNX metadata ("cyclestyle.stride").

Why not any H x W inside the graph: the generators decide their padding with Python integer
arithmetic and a branch, which torch.export specialises to the example's case; a reflect pad
with symbolic amounts does not export correctly in torch 2.14. TorchScript is not offered:
`torch.jit.script` cannot compile the padding helper (a NamedTuple with postponed annotations)
and `torch.jit.trace` bakes the example's pad and crop sizes into the graph.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torch_export")
MAX_SIDE = 16384  # upper bound the exporter asks for; any image we would translate fits


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


def _dynamic_shapes(stride: int) -> dict:
    dim = torch.export.Dim
    return {"x": {0: dim("batch", min=1, max=1024),
                  2: stride * dim("height_blocks", min=2, max=MAX_SIDE // stride),
                  3: stride * dim("width_blocks", min=2, max=MAX_SIDE // stride)}}


def export_generator(generator: nn.Module, output: str | os.PathLike, fmt: str = "onnx",
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `generator` (in eval mode, on CPU, float32) to `output` in `fmt`."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format={fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    generator = generator.cpu().float().eval()
    stride = int(generator.stride)
    example = (torch.rand(1, 3, 4 * stride, 5 * stride) * 2 - 1,)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        if fmt == "onnx":
            _export_onnx(generator, example, stride, tmp, {**(metadata or {}),
                                                            "cyclestyle.stride": str(stride)})
        else:
            program = torch.export.export(generator, example,
                                          dynamic_shapes=_dynamic_shapes(stride))
            torch.export.save(program, tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def _export_onnx(generator: nn.Module, example: tuple, stride: int, path: Path,
                 metadata: dict[str, str]) -> None:
    import onnx

    program = torch.onnx.export(generator, example, dynamo=True, input_names=["x"],
                                output_names=["y"], dynamic_shapes=_dynamic_shapes(stride),
                                verbose=False)
    model = program.model_proto
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def run_onnx(session, images: np.ndarray, stride: int) -> np.ndarray:
    """Translate (N, 3, H, W) float32 in [-1, 1] of any H, W with an onnxruntime session."""
    padded, (top, left, height, width) = pad_to_stride(images.astype(np.float32), stride)
    out = session.run(None, {session.get_inputs()[0].name: padded})[0]
    return out[..., top:top + height, left:left + width]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a generator to ONNX (dynamic batch, height and width)",
        description="Export G_AB or G_BA from a checkpoint. The exported model takes float32 "
        "(N, 3, H, W) in [-1, 1] with H and W multiples of the generator's stride (stored in "
        "the ONNX metadata as cyclestyle.stride; pad with cyclestyle.export.pad_to_stride).")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                   help="onnx, or torch_export (a torch.export program, torch.export.load)")
    p.add_argument("--output", required=True, help="file to write, e.g. g_ab.onnx")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    from cyclestyle import __version__
    from cyclestyle.checkpoint import load_generators

    g_ab, g_ba, _ = load_generators(args.checkpoint)
    generator = g_ab if args.direction == "a2b" else g_ba
    metadata = {"cyclestyle.version": __version__, "cyclestyle.direction": args.direction,
                "cyclestyle.generator": str(getattr(generator, "registry_name", "")),
                "cyclestyle.input": "float32 NCHW RGB in [-1, 1]"}
    path = export_generator(generator, args.output, args.format, metadata)
    print(f"exported {args.direction} generator ({args.format}, stride {generator.stride}) "
          f"to {path}")
    return 0

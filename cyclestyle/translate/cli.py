"""`cyclestyle translate` and `cyclestyle export`: the command line over cyclestyle.translate.

`translate` splits the files between processes under `accelerate launch` (or torchrun), runs
`translate_files`, gathers every rank's summary and prints it on rank 0; the exit code is 1 if
any file or folder failed, an output already existed (and was left alone), or the run was
interrupted. Only argparse at import time: `--help` is instant.
"""

from __future__ import annotations

import argparse
import os

from cyclestyle.options import add_dataclass_arguments, dataclass_from_args
from cyclestyle.translate.options import TOLERANCE, ExportOptions, TranslateOptions

__all__ = ["add_parsers"]

SHOWN_EXISTING = 10  # existing outputs listed by name in the summary

def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate", help="translate an image, a folder or a list of images with a checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Translate images into the other domain at their own size (output size = input\n"
            "size). A folder is searched recursively and mirrored under --output. Nothing is\n"
            "overwritten: outputs go outside the input folder (a file's folder, every listed\n"
            "file's folder), an existing output is left alone and reported unless --overwrite\n"
            "or --skip-existing (keep complete outputs: resume an interrupted run), and each\n"
            "file is written atomically. Unreadable files and folders are reported and\n"
            "skipped; the exit code is 1 if any failed or an output already existed.\n"
            "Several processes or GPUs: `accelerate launch -m cyclestyle.cli translate ...`."))
    add_dataclass_arguments(p, TranslateOptions)
    p.set_defaults(func=run_translate)
    p = subparsers.add_parser(
        "export", help="export a generator to ONNX or TorchScript (dynamic batch, height, width)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Export G_AB (a2b) or G_BA (b2a) from a checkpoint as one file that runs without\n"
            "cyclestyle. Input: float32 (N, 3, H, W) RGB in [-1, 1]; output: the translation in\n"
            "[-1, 1], same shape. N, H and W are dynamic:\n"
            "  torchscript  any H x W; the generator's own pad-to-stride is compiled in\n"
            "               (load with torch.jit.load, or libtorch in C++)\n"
            "  onnx         H, W multiples of the generator's stride, at least 2x it; the stride\n"
            "               is in the metadata (cyclestyle.stride). For other sizes pad with\n"
            "               cyclestyle.translate.export.pad_to_stride or run_onnx (centred reflect\n"
            "               padding then crop, as the PyTorch generator does)\n"
            f"Before the file is kept, PyTorch's output on a random batch of a size other than\n"
            f"the export example must be finite, and the file's must agree with it to a max\n"
            f"absolute difference of {TOLERANCE:.0e} (float32). An existing --output is never\n"
            "replaced without --overwrite."))
    add_dataclass_arguments(p, ExportOptions)
    p.set_defaults(func=run_export)


def _distributed(device: str | None) -> tuple[int, int, object]:
    """(rank, world size, accelerate state or None); WORLD_SIZE is set by accelerate/torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    # Without cpu=True accelerate sees CPU processes as independent single-process runs.
    import torch
    from accelerate import PartialState

    on_cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    return state.process_index, state.num_processes, state


def run_translate(args: argparse.Namespace) -> int:
    from cyclestyle.runtime import retain_freed_memory
    from cyclestyle.translate.runner import plan_jobs, translate_files
    from cyclestyle.translate.translator import Translator

    opts = dataclass_from_args(TranslateOptions, args).validate()
    retain_freed_memory()
    if opts.max_pixels is not None:  # process-wide too: the alpha reader opens files itself
        from cyclestyle.imageio import set_max_image_pixels

        set_max_image_pixels(opts.max_pixels)
    rank, world, state = _distributed(opts.device)
    device = opts.device or (str(state.device) if state is not None else None)
    unreadable: list = []
    jobs = plan_jobs(opts.input, opts.output, opts.format, opts.allow_inside_input, unreadable)
    translator = Translator.from_checkpoint(
        opts.checkpoint, opts.direction, device=device, precision=opts.precision,
        tile=opts.tile, tile_overlap=opts.tile_overlap, size=opts.size, max_size=opts.max_size,
        batch_size=opts.batch_size)
    summary = translate_files(translator, jobs, opts.skip_existing, opts.workers,
                              opts.max_pixels, opts.progress, rank, world,
                              overwrite=opts.overwrite)
    if state is not None:
        summary = _gather(summary)
    if rank == 0:
        from cyclestyle.translate.runner import UNREADABLE_FOLDER

        summary.failed += [(str(folder), UNREADABLE_FOLDER) for folder in unreadable]
        print(format_summary(summary, opts.output))
    return 1 if summary.failed or summary.existing or summary.interrupted else 0


def _gather(summary):
    from accelerate.utils import gather_object

    from cyclestyle.translate.runner import Summary

    parts = gather_object([summary])
    return Summary(translated=sum(s.translated for s in parts),
                   skipped_existing=sum(s.skipped_existing for s in parts),
                   existing=[path for s in parts for path in s.existing],
                   failed=[f for s in parts for f in s.failed],
                   seconds=max(s.seconds for s in parts),
                   interrupted=any(s.interrupted for s in parts))


def format_summary(summary, output: str) -> str:
    existing = summary.existing
    lines = [f"translated {summary.translated} image(s) into {output} in {summary.seconds:.1f} s "
             f"({summary.images_per_second:.2f} images/s); skipped {summary.skipped_existing} "
             f"existing; {len(existing)} exist (left alone); {len(summary.failed)} failed"]
    lines += [f"  FAILED {path}: {reason}" for path, reason in summary.failed]
    lines += [f"  EXISTS {path}" for path in existing[:SHOWN_EXISTING]]
    if len(existing) > SHOWN_EXISTING:
        lines.append(f"  ... and {len(existing) - SHOWN_EXISTING} more")
    if existing:
        lines.append(f"{len(existing)} output(s) already existed and were left alone: pass "
                     "--skip-existing to keep them and translate the rest, or --overwrite to "
                     "replace them")
    if summary.interrupted:
        lines.append("interrupted: rerun the same command with --skip-existing to finish")
    return "\n".join(lines)


def run_export(args: argparse.Namespace) -> int:
    from cyclestyle import __version__
    from cyclestyle.checkpoint import load_generators
    from cyclestyle.translate.export import check_output, export_generator

    args = dataclass_from_args(ExportOptions, args)

    check_output(args.output, args.overwrite)  # before the (slow) load and export
    g_ab, g_ba, _ = load_generators(args.checkpoint)
    generator = g_ab if args.direction == "a2b" else g_ba
    metadata = {"cyclestyle.version": __version__, "cyclestyle.direction": args.direction,
                "cyclestyle.generator": str(getattr(generator, "registry_name", "")),
                "cyclestyle.input": "float32 NCHW RGB in [-1, 1]"}
    report = export_generator(generator, args.output, args.format, metadata, args.overwrite)
    checked = ("not checked (no onnxruntime)" if report.max_abs_diff is None
               else f"max |diff| vs PyTorch {report.max_abs_diff:.1e}")
    print(f"exported {args.direction} generator ({report.format}, stride {report.stride}) to "
          f"{report.path}; {checked}")
    return 0

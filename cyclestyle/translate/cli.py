"""`cyclestyle translate`, `export`, `push` and `pretrained`: the command line over
cyclestyle.translate.

`translate` splits the files between processes under `accelerate launch` (or torchrun), runs
`translate_files`, gathers every rank's summary and prints it on rank 0; the exit code is 1 if
any file or folder failed, an output already existed (and was left alone), or the run was
interrupted. Only argparse at import time: `--help` is instant.
"""

from __future__ import annotations

import argparse
import os

from cyclestyle.options import add_dataclass_arguments, dataclass_from_args, invalid
from cyclestyle.translate.options import (
    TOLERANCE,
    ExportOptions,
    PushOptions,
    TranslateOptions,
)

__all__ = ["add_parsers"]

SHOWN_EXISTING = 10  # existing outputs listed by name in the summary

def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate", help="translate an image, a video, a folder or a list of them with a "
        "checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Translate images and videos into the other domain at their own size (output size\n"
            "= input size). A folder is searched recursively and mirrored under --output. A\n"
            "video keeps its frame rate, rotation and audio (copied); one video with --output\n"
            "named like a video (out.mp4) is written to that file. Nothing is\n"
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
            "replaced without --overwrite.\n"
            "  hub          a release folder (--output DIR) for the Hugging Face Hub: both\n"
            "               generators in model.safetensors (EMA weights when the run kept\n"
            "               them), config.json, a README.md model card (with --metrics FILE\n"
            "               and --samples DIR); load it with --checkpoint DIR or, uploaded,\n"
            "               hf://user/name"))
    add_dataclass_arguments(p, ExportOptions)
    p.set_defaults(func=run_export)
    p = subparsers.add_parser(
        "push", help="upload a model to the Hugging Face Hub as a release (export --format hub)",
        description="Build the release folder of --checkpoint (as `export --format hub` does) "
        "in a temporary folder and upload it to --repo with huggingface_hub (log in first: "
        "`hf auth login`, or set HF_TOKEN). The repository is created if it does not exist.")
    add_dataclass_arguments(p, PushOptions)
    p.set_defaults(func=run_push)
    _add_pretrained_parser(subparsers)


def _add_pretrained_parser(subparsers: argparse._SubParsersAction) -> None:
    from cyclestyle.translate.zoo import PREFIX

    p = subparsers.add_parser(
        "pretrained", help="the reference CycleGAN / pix2pix pretrained generators: list, download",
        description="The model zoo of junyanz/pytorch-CycleGAN-and-pix2pix, loadable with "
        f"--checkpoint {PREFIX}NAME once downloaded.")
    sub = p.add_subparsers(dest="pretrained_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="names, architectures and official URLs")
    listing.set_defaults(func=run_pretrained_list)
    fetch = sub.add_parser(
        "download", help="fetch one generator into the torch hub cache",
        description="Download NAME into TORCH_HOME/hub/checkpoints/cyclestyle/ (torch.hub's "
        "cache). The reference publishes no checksums: the first download's sha256 is recorded "
        "beside the file (NAME.pth.sha256) and later loads and downloads are checked against it.")
    fetch.add_argument("name", metavar="NAME", help="a name from `cyclestyle pretrained list`")
    fetch.add_argument("--url", help="download from here instead of the official URL (a mirror, "
                       "or a file:// URL)")
    fetch.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                       help="show a progress bar (default: %(default)s)")
    fetch.set_defaults(func=run_pretrained_download)


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
    from cyclestyle.translate.scale import resolve_sizes, warn_if_far_from_training_scale
    from cyclestyle.translate.sources import load_model
    from cyclestyle.translate.translator import Translator, scaled_size
    from cyclestyle.translate.video import VideoSettings

    opts = dataclass_from_args(TranslateOptions, args).validate()
    retain_freed_memory()
    if opts.max_pixels is not None:  # process-wide too: the alpha reader opens files itself
        from cyclestyle.imageio import set_max_image_pixels

        set_max_image_pixels(opts.max_pixels)
    rank, world, state = _distributed(opts.device)
    device = opts.device or (str(state.device) if state is not None else None)
    unreadable: list = []
    jobs = plan_jobs(opts.input, opts.output, opts.format, opts.allow_inside_input, unreadable)
    model = load_model(opts.checkpoint, opts.revision)
    size, max_size = resolve_sizes(opts.size, opts.max_size, model.config, model.origin)
    translator = Translator(
        model.generator(opts.direction), device=device, precision=opts.precision,
        tile=opts.tile, tile_overlap=opts.tile_overlap, size=size, max_size=max_size,
        batch_size=opts.batch_size, tile_stats=opts.tile_stats,
        tile_calibration=opts.tile_calibration)
    if rank == 0:
        warn_if_far_from_training_scale([job.source for job in jobs], model.config,
                                        lambda w, h: scaled_size(w, h, size, max_size))
    video = VideoSettings(opts.video_stats, opts.video_window)
    summary = translate_files(translator, jobs, opts.skip_existing, opts.workers,
                              opts.max_pixels, opts.progress, rank, world,
                              overwrite=opts.overwrite, video=video)
    if state is not None:
        try:
            summary = _gather(summary)
        finally:  # a live process group at exit aborts a rank now and then ("terminate
            state.destroy_process_group()  # called without an active exception")
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
                   videos=sum(s.videos for s in parts), frames=sum(s.frames for s in parts),
                   skipped_existing=sum(s.skipped_existing for s in parts),
                   existing=[path for s in parts for path in s.existing],
                   failed=[f for s in parts for f in s.failed],
                   seconds=max(s.seconds for s in parts),
                   interrupted=any(s.interrupted for s in parts))


def format_summary(summary, output: str) -> str:
    existing = summary.existing
    videos = (f", of which {summary.videos} video(s) ({summary.frames} frames)"
              if summary.videos else "")
    lines = [f"translated {summary.translated} image(s){videos} into {output} in "
             f"{summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s); skipped "
             f"{summary.skipped_existing} "
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

    args = dataclass_from_args(ExportOptions, args)
    if args.format == "hub":
        return _export_release(args)
    for flag, value in (("--metrics", args.metrics), ("--samples", args.samples)):
        if value is not None:
            raise invalid(flag, value, f"given with --format {args.format}",
                          "only --format hub writes a model card")
    from cyclestyle.translate.export import check_output, export_generator
    from cyclestyle.translate.sources import load_model

    check_output(args.output, args.overwrite)  # before the (slow) load and export
    generator = load_model(args.checkpoint, args.revision).generator(args.direction)
    metadata = {"cyclestyle.version": __version__, "cyclestyle.direction": args.direction,
                "cyclestyle.generator": str(getattr(generator, "registry_name", "")),
                "cyclestyle.input": "float32 NCHW RGB in [-1, 1]"}
    report = export_generator(generator, args.output, args.format, metadata, args.overwrite)
    checked = ("not checked (no onnxruntime)" if report.max_abs_diff is None
               else f"max |diff| vs PyTorch {report.max_abs_diff:.1e}")
    print(f"exported {args.direction} generator ({report.format}, stride {report.stride}) to "
          f"{report.path}; {checked}")
    return 0


def _export_release(args) -> int:
    from cyclestyle.translate.release import check_release_output, write_release
    from cyclestyle.translate.sources import load_model

    check_release_output(args.output, args.overwrite)  # before the load
    model = load_model(args.checkpoint, args.revision)
    out = write_release(model, args.output, metrics=args.metrics, samples=args.samples,
                        overwrite=args.overwrite)
    print(f"wrote release {out}: model.safetensors ({', '.join(model.generators)}, "
          f"{model.config['weights']} weights), config.json, README.md; load it with "
          f"--checkpoint {out}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from cyclestyle.translate.release import push_release
    from cyclestyle.translate.sources import load_model

    opts = dataclass_from_args(PushOptions, args)
    model = load_model(opts.checkpoint, opts.revision)
    url = push_release(model, opts.repo, private=opts.private, metrics=opts.metrics,
                       samples=opts.samples, message=opts.message)
    print(f"pushed {opts.checkpoint} to {url}; load it with --checkpoint hf://{opts.repo}")
    return 0


def run_pretrained_list(args: argparse.Namespace) -> int:
    from cyclestyle.translate import zoo

    print(f"{'NAME':<30} {'NETG':<15} {'STATE':<15} URL")
    for name in zoo.ZOO:
        print(zoo.describe(name))
    print(f"\ncache: {zoo.zoo_dir()}; use one with --checkpoint {zoo.PREFIX}NAME")
    return 0


def run_pretrained_download(args: argparse.Namespace) -> int:
    from cyclestyle.translate import zoo

    path = zoo.download(args.name, args.url, args.progress)
    print(f"{args.name}: {path} (sha256 {zoo.expected_sha256(args.name)}); translate with "
          f"--checkpoint {zoo.PREFIX}{args.name}")
    return 0

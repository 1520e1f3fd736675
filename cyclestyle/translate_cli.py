"""`cyclestyle translate`: the command line over cyclestyle/batch_translate.py.

Parses the options, splits the files between processes under `accelerate launch` (or torchrun),
runs `translate_files`, gathers every rank's summary and prints it on rank 0. The exit code is 1
if any file failed or the run was interrupted.
"""

from __future__ import annotations

import os

import torch

from cyclestyle.batch_translate import (
    FORMATS,
    Summary,
    default_workers,
    plan_jobs,
    translate_files,
)
from cyclestyle.runtime import retain_freed_memory
from cyclestyle.translate import Translator


def add_parser(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(
        "translate", help="translate an image, a folder or a list of images with a checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Translate images into the other domain at their own size (output size = input\n"
            "size). A folder is searched recursively and mirrored under --output. Nothing is\n"
            "overwritten: outputs go outside the input folder, each file is written atomically,\n"
            "and --skip-existing resumes an interrupted run. Unreadable files are reported and\n"
            "skipped; the exit code is 1 if any failed.\n"
            "Several processes or GPUs: `accelerate launch -m cyclestyle.cli translate ...`."))
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--input", required=True, help="an image, a folder, or a text file listing "
                   "one image path per line")
    p.add_argument("--output", required=True, help="folder for the translated images")
    p.add_argument("--direction", choices=("a2b", "b2a"), default="a2b",
                   help="a2b uses G_AB, b2a uses G_BA (default: %(default)s)")
    p.add_argument("--batch-size", type=int,
                   help="images (or tiles) of equal size per forward pass (default: 1 on CPU, "
                   "where larger batches measured slower, 4 on GPU)")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--size", type=int, help="rescale so the long side is N pixels")
    sizes.add_argument("--max-size", type=int, help="shrink images whose long side exceeds N")
    p.add_argument("--tile", type=int, help="translate images larger than N pixels in NxN "
                   "tiles, blended (for images that do not fit in memory)")
    p.add_argument("--tile-overlap", type=int, default=64,
                   help="pixels shared by neighbouring tiles (default: %(default)s)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave outputs that already exist alone (resume a stopped run)")
    p.add_argument("--format", choices=FORMATS, default="same",
                   help="output file type; 'same' keeps each input's (default: %(default)s)")
    p.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast dtype; fp16 needs CUDA (default: %(default)s)")
    p.add_argument("--workers", type=int, help="decoding processes (default on CPU: "
                   f"{default_workers('cpu')} here, none with 2 cores or fewer; on GPU: "
                   f"{default_workers('cuda')} here)")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels, a guard "
                   "against decompression bombs (default: PIL's limit; 0 = no limit)")
    p.add_argument("--allow-inside-input", action="store_true",
                   help="allow --output inside the --input folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_cli)


def _distributed(device: str | None) -> tuple[int, int, object]:
    """(rank, world size, accelerate state or None); WORLD_SIZE is set by accelerate/torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState

    # Without cpu=True accelerate sees CPU processes as independent single-process runs.
    on_cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    return state.process_index, state.num_processes, state


def run_cli(args) -> int:
    retain_freed_memory()
    if args.max_pixels is not None:  # process-wide too: the alpha reader opens files itself
        from cyclestyle.imageio import set_max_image_pixels

        set_max_image_pixels(args.max_pixels)
    rank, world, state = _distributed(args.device)
    device = args.device or (str(state.device) if state is not None else None)
    jobs = plan_jobs(args.input, args.output, args.format, args.allow_inside_input)
    translator = Translator.from_checkpoint(
        args.checkpoint, args.direction, device=device, precision=args.precision,
        tile=args.tile, tile_overlap=args.tile_overlap, size=args.size, max_size=args.max_size,
        batch_size=args.batch_size)
    summary = translate_files(translator, jobs, args.skip_existing, args.workers,
                              args.max_pixels, not args.no_progress, rank, world)
    if state is not None:
        summary = _gather(summary)
    if rank == 0:
        print(format_summary(summary, args.output))
    return 1 if summary.failed or summary.interrupted else 0


def _gather(summary: Summary) -> Summary:
    from accelerate.utils import gather_object

    parts = gather_object([summary])
    return Summary(translated=sum(s.translated for s in parts),
                   skipped_existing=sum(s.skipped_existing for s in parts),
                   failed=[f for s in parts for f in s.failed],
                   seconds=max(s.seconds for s in parts),
                   interrupted=any(s.interrupted for s in parts))


def format_summary(summary: Summary, output: str) -> str:
    lines = [f"translated {summary.translated} image(s) into {output} in {summary.seconds:.1f} s "
             f"({summary.images_per_second:.2f} images/s); skipped {summary.skipped_existing} "
             f"existing; {len(summary.failed)} failed"]
    lines += [f"  FAILED {path}: {reason}" for path, reason in summary.failed]
    if summary.interrupted:
        lines.append("interrupted: rerun the same command with --skip-existing to finish")
    return "\n".join(lines)

"""`cyclestyle translate`: whole folders of any-size images, fast and without losing anything.

Pipeline: DataLoader workers decode (and rescale) images; the main process groups decoded
images of equal size into batches (buckets) and runs the generator; a thread pool encodes and
writes each output through a temp file + rename. Under `accelerate launch` (or torchrun) each
process takes files[rank::world], so no file is done twice.

Safety: outputs never land inside the input folder unless asked, no output path may equal an
input path, an interrupted run leaves only complete images (temp files are hidden
`.NAME.*.tmp` and cleaned by the next run), and `skip_existing` resumes. An unreadable file is
reported and skipped; the summary lists every failure.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cyclestyle.imageio import IMAGE_EXTENSIONS, find_images, load_image
from cyclestyle.interrupt import StopRequested
from cyclestyle.translate import Translator, check_image_size, read_alpha, scaled_size, to_uint8_hwc

log = logging.getLogger(__name__)

FORMATS = ("same", "png", "jpg")
_ALPHA_FORMATS = (".png", ".webp", ".tif", ".tiff")
_SAVE_OPTIONS = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".webp": {"quality": 95},
                 # Level 1 writes 3-4x faster than PIL's default 6 for ~10-20% larger files.
                 ".png": {"compress_level": 1}}


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass
class Summary:
    translated: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_second(self) -> float:
        return self.translated / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------- planning


def list_inputs(input_path: str | os.PathLike) -> tuple[list[Path], Path, bool]:
    """(files, root the outputs mirror, whether root is a folder the user gave as input).

    `input_path` is an image, a folder (searched recursively) or a text file with one path per
    line (blank lines and lines starting with '#' ignored; relative paths are relative to the
    list file's folder).
    """
    path = Path(input_path).expanduser()
    if path.is_dir():
        return find_images(path), path, True
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return [path], path.parent, False
    lines = path.read_text(errors="replace").splitlines()
    files = [Path(s) if Path(s).is_absolute() else path.parent / s
             for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    if not files:
        raise ValueError(f"list file {path} names no images (one path per line expected)")
    root = Path(os.path.commonpath([f.parent.resolve() for f in files]))
    return files, root, False


def output_name(relative: Path, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; choose one of {', '.join(FORMATS)}")
    return relative if fmt == "same" else relative.with_suffix("." + fmt)


def plan_jobs(input_path: str | os.PathLike, output_dir: str | os.PathLike, fmt: str = "same",
              allow_inside_input: bool = False) -> list[Job]:
    """One Job per input image, with the safety checks; raises ValueError before any work."""
    files, root, root_is_input = list_inputs(input_path)
    out = Path(output_dir).expanduser().resolve()
    root_resolved = root.resolve()
    if root_is_input and out.is_relative_to(root_resolved):
        if not allow_inside_input:
            raise ValueError(f"output folder {out} is inside the input folder {root_resolved}; "
                             "choose another folder, or pass --allow-inside-input")
        if out != root_resolved:  # a sub-folder: its files are earlier outputs, not inputs
            files = [f for f in files if not f.resolve().is_relative_to(out)]
    jobs = [Job(f, out / output_name(_relative(f, root), fmt)) for f in files]
    _check_no_overwrite(jobs)
    return jobs


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path.name)


def _check_no_overwrite(jobs: list[Job]) -> None:
    sources = {job.source.resolve() for job in jobs}
    targets: dict[Path, Path] = {}
    for job in jobs:
        if job.target in sources:
            raise ValueError(f"output {job.target} would overwrite an input image; choose "
                             "another output folder or --format")
        if job.target in targets:
            raise ValueError(f"inputs {targets[job.target]} and {job.source} would both be "
                             f"written to {job.target}; use --format same or rename one")
        targets[job.target] = job.source


def clean_stale_temp_files(jobs: list[Job]) -> int:
    """Remove `.NAME.*.tmp` files an interrupted run left beside these jobs' outputs."""
    names_by_dir: dict[Path, set[str]] = {}
    for job in jobs:
        names_by_dir.setdefault(job.target.parent, set()).add(job.target.name)
    removed = 0
    pattern = re.compile(r"^\.(.+)\.[^.]+\.tmp$")
    for folder, names in names_by_dir.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = pattern.match(entry.name)
            if match and match.group(1) in names and entry.is_file():
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


# ---------------------------------------------------------------------------- decoding


class _DecodeDataset(Dataset):
    """Decodes job i into {'index', 'image': uint8 (3, H, W), 'alpha'} or {'index', 'error'}."""

    def __init__(self, jobs: list[Job], size: int | None, max_size: int | None,
                 max_pixels: int | None) -> None:
        self.jobs, self.size, self.max_size, self.max_pixels = jobs, size, max_size, max_pixels

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict:
        source = self.jobs[index].source
        try:
            rgb = load_image(source, max_pixels=self.max_pixels)
            alpha = read_alpha(source)
            width, height = scaled_size(*rgb.size, self.size, self.max_size)
            check_image_size(width, height, f"image {source}")
            if (width, height) != rgb.size:
                rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
            if alpha is not None and alpha.size != rgb.size:
                alpha = alpha.resize(rgb.size, Image.Resampling.LANCZOS)
        except (ValueError, OSError) as err:  # ImageLoadError is a ValueError
            return {"index": index, "error": getattr(err, "reason", "") or str(err)}
        pixels = torch.from_numpy(_as_array(rgb)).permute(2, 0, 1)  # (3, H, W) uint8
        return {"index": index, "image": pixels, "alpha": alpha}


def _as_array(image: Image.Image):
    import numpy as np

    return np.array(image, dtype=np.uint8)  # (H, W, 3), a writable copy


def _single(item: dict) -> dict:
    return item


# ---------------------------------------------------------------------------- the run


def translate_files(translator: Translator, jobs: list[Job], skip_existing: bool = False,
                    num_workers: int | None = None, max_pixels: int | None = None,
                    progress: bool = True, rank: int = 0, world_size: int = 1) -> Summary:
    """Translate `jobs[rank::world_size]`; failures are recorded, never raised."""
    start = time.perf_counter()
    summary = Summary()
    mine = jobs[rank::world_size]
    if world_size > 1:
        log.info("rank %d of %d: %d of %d files", rank, world_size, len(mine), len(jobs))
    clean_stale_temp_files(mine)
    if skip_existing:
        todo = [job for job in mine if not job.target.exists()]
        summary.skipped_existing = len(mine) - len(todo)
    else:
        todo = mine
    if todo:
        _run(translator, todo, summary, num_workers, max_pixels, progress and rank == 0)
    summary.seconds = time.perf_counter() - start
    return summary


def default_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 1) // 2))


def _run(translator: Translator, jobs: list[Job], summary: Summary, num_workers: int | None,
         max_pixels: int | None, progress: bool) -> None:
    from tqdm import tqdm

    workers = default_workers() if num_workers is None else num_workers
    dataset = _DecodeDataset(jobs, translator.size, translator.max_size, max_pixels)
    loader = DataLoader(dataset, batch_size=None, collate_fn=_single, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    buckets: dict[tuple[int, int], list[dict]] = {}
    writer = _Writer(jobs, summary, threads=max(1, workers))
    bar = tqdm(total=len(jobs), unit="img", disable=not progress, dynamic_ncols=True)
    with StopRequested() as stop, writer:
        for item in loader:
            if "error" in item:
                _fail(summary, jobs[item["index"]].source, item["error"], bar)
                continue
            bucket = buckets.setdefault(tuple(item["image"].shape[1:]), [])
            bucket.append(item)
            if len(bucket) >= translator.batch_size:
                _translate_bucket(translator, buckets.pop(tuple(bucket[0]["image"].shape[1:])),
                                  writer, bar)
            elif sum(map(len, buckets.values())) > 4 * translator.batch_size:
                # Many distinct sizes: do not hold images back forever waiting for a full batch.
                oldest = next(iter(buckets))
                _translate_bucket(translator, buckets.pop(oldest), writer, bar)
            if stop.signal:
                summary.interrupted = True
                break
        if not summary.interrupted:
            for key in list(buckets):
                _translate_bucket(translator, buckets.pop(key), writer, bar)
    bar.close()


def _fail(summary: Summary, path: Path, reason: str, bar) -> None:
    log.warning("skipped %s: %s", path, reason)
    summary.failed.append((str(path), reason))
    bar.update(1)


def _translate_bucket(translator: Translator, items: list[dict], writer: _Writer, bar) -> None:
    images = torch.stack([item["image"] for item in items])  # (B, 3, H, W) uint8
    images = images.to(translator.device, non_blocking=True).float() / 127.5 - 1.0
    outputs = to_uint8_hwc(translator.translate_tensor(images))  # (B, H, W, 3)
    for item, pixels in zip(items, outputs):
        writer.submit(item["index"], pixels, item["alpha"], bar)


class _Writer:
    """Encodes and writes outputs on a thread pool (PIL's encoders release the GIL)."""

    def __init__(self, jobs: list[Job], summary: Summary, threads: int) -> None:
        self.jobs, self.summary = jobs, summary
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cyclestyle-write")
        self.pending: list[tuple[Future, int, object]] = []
        self.limit = 4 * threads

    def submit(self, index: int, pixels, alpha: Image.Image | None, bar) -> None:
        self.pending.append((self.pool.submit(_write, self.jobs[index].target, pixels, alpha),
                             index, bar))
        while len(self.pending) > self.limit:
            self._collect(self.pending.pop(0))

    def _collect(self, entry: tuple[Future, int, object]) -> None:
        future, index, bar = entry
        try:
            future.result()
            self.summary.translated += 1
            bar.update(1)
        except OSError as err:
            _fail(self.summary, self.jobs[index].target, f"cannot write: {err}", bar)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc) -> None:
        try:
            while self.pending:
                self._collect(self.pending.pop(0))
        finally:
            self.pool.shutdown(wait=True)


def _write(target: Path, pixels, alpha: Image.Image | None) -> None:
    image = Image.fromarray(pixels, "RGB")
    suffix = target.suffix.lower()
    if alpha is not None:
        if suffix in _ALPHA_FORMATS:
            image.putalpha(alpha)
        else:
            log.warning("%s: %s cannot store transparency; alpha dropped", target, suffix)
    _save_atomic(image, target, _SAVE_OPTIONS.get(suffix, {}))


def _file_mode() -> int:
    """Permissions a plain open() would give a new file (mkstemp's temp files are 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _save_atomic(image: Image.Image, target: Path, options: dict) -> None:
    """Temp file in the target's folder, then rename: a killed run leaves no partial image."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(target.suffix.lower())
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            image.save(f, format=fmt, **options)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- command line


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
    p.add_argument("--batch-size", type=int, default=4,
                   help="images (or tiles) of equal size per forward pass (default: %(default)s)")
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
    p.add_argument("--workers", type=int, help="decoding processes (default: "
                   f"{default_workers()} here)")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels (default: "
                   "PIL's decompression-bomb limit)")
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

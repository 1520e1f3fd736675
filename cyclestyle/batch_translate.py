"""Whole folders of any-size images, fast and without losing anything (`cyclestyle translate`;
the command line is in cyclestyle/translate_cli.py).

Pipeline: DataLoader workers (none on a 2-core CPU) decode and rescale images; the main process
groups decoded images of equal size into batches (buckets) and hands them to `streams` threads
that run the generator (on CPU one image per core, each single-threaded); a thread pool encodes
and writes each output through a temp file + rename (cyclestyle/translate_writer.py). Under
`accelerate launch` (or torchrun) each process takes files[rank::world], so no file is done
twice.

Safety: outputs never land inside the input folder unless asked, no output path may equal an
input path, an interrupted run leaves only complete images (temp files are hidden
`.NAME.*.tmp` and cleaned by the next run), and `skip_existing` resumes. An unreadable file is
reported and skipped; the summary lists every failure.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cyclestyle.imageio import IMAGE_EXTENSIONS, find_images, load_image
from cyclestyle.interrupt import StopRequested
from cyclestyle.translate import Translator, check_image_size, read_alpha, scaled_size, to_uint8_hwc
from cyclestyle.translate_writer import Writer

log = logging.getLogger(__name__)

FORMATS = ("same", "png", "jpg")


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
        except (ValueError, OSError, Image.DecompressionBombError) as err:  # ImageLoadError: ValueError
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
                    progress: bool = True, rank: int = 0, world_size: int = 1,
                    streams: int | None = None) -> Summary:
    """Translate `jobs[rank::world_size]`; failures are recorded, never raised.

    `num_workers` decoding processes (default: `default_workers`) and `streams` batches in
    flight at once (default: `default_streams`).
    """
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
        workers = default_workers(translator.device) if num_workers is None else num_workers
        streams = streams or default_streams(translator.device, len(todo))
        _run(translator, todo, summary, workers, streams, max_pixels, progress and rank == 0)
    summary.seconds = time.perf_counter() - start
    return summary


def default_workers(device: torch.device | str = "cpu") -> int:
    """Decoding processes: none on a CPU with 2 cores or fewer, where a worker takes a core from
    the generator (measured slower by scripts/bench_translate.py); else up to 4."""
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cpu" and cores <= 2:
        return 0
    return min(4, max(1, cores // 2))


def default_streams(device: torch.device | str, images: int) -> int:
    """Batches translated at once. CPU: one per core, up to 4, sharing torch's threads.

    On CPU, 2 single-threaded forwards side by side beat one forward on 2 threads by about
    1.3x on 2 cores (scripts/bench_translate.py): each has no thread synchronisation to wait
    on, and decoding and encoding fill the gaps. GPU: 1, the device parallelises the batch.
    """
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(4, torch.get_num_threads(), images))


def _run(translator: Translator, jobs: list[Job], summary: Summary, workers: int, streams: int,
         max_pixels: int | None, progress: bool) -> None:
    from tqdm import tqdm

    dataset = _DecodeDataset(jobs, translator.size, translator.max_size, max_pixels)
    loader = DataLoader(dataset, batch_size=None, collate_fn=_single, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    bar = tqdm(total=len(jobs), unit="img", disable=not progress, dynamic_ncols=True)

    def written(index: int) -> None:
        summary.translated += 1
        bar.update(1)

    def failed(index: int, reason: str) -> None:
        _fail(summary, jobs[index].target, f"cannot write: {reason}", bar)

    writer = Writer([job.target for job in jobs], max(1, workers), written, failed)
    with StopRequested() as stop, writer, _Batches(translator, writer, streams) as batches:
        for item in loader:
            if "error" in item:
                _fail(summary, jobs[item["index"]].source, item["error"], bar)
            else:
                batches.add(item)
            if stop.signal:
                summary.interrupted = True
                break
        if not summary.interrupted:
            batches.flush()
    bar.close()


def _fail(summary: Summary, path: Path, reason: str, bar) -> None:
    log.warning("skipped %s: %s", path, reason)
    summary.failed.append((str(path), reason))
    bar.update(1)


class _Batches:
    """Groups decoded images of equal size into batches (buckets) and translates them on
    `streams` threads, each with its share of torch's threads; outputs go to the writer in
    submission order. Batches already running when the loop stops are finished and written."""

    def __init__(self, translator: Translator, writer: Writer, streams: int) -> None:
        self.translator, self.writer, self.streams = translator, writer, streams
        self.buckets: dict[tuple[int, int], list[dict]] = {}
        self.pending: deque[tuple[Future, list[dict]]] = deque()
        self.pool = ThreadPoolExecutor(streams, thread_name_prefix="cyclestyle-translate")

    def add(self, item: dict) -> None:
        size = self.translator.batch_size
        bucket = self.buckets.setdefault(tuple(item["image"].shape[1:]), [])
        bucket.append(item)
        if len(bucket) >= size:
            self._submit(self.buckets.pop(tuple(item["image"].shape[1:])))
        elif sum(map(len, self.buckets.values())) > 4 * size:
            # Many distinct sizes: do not hold images back forever waiting for a full batch.
            self._submit(self.buckets.pop(next(iter(self.buckets))))

    def flush(self) -> None:
        for key in list(self.buckets):
            self._submit(self.buckets.pop(key))

    def _submit(self, items: list[dict]) -> None:
        self.pending.append((self.pool.submit(_translate, self.translator, items), items))
        while len(self.pending) > self.streams:
            self._collect()

    def _collect(self) -> None:
        future, items = self.pending.popleft()
        for item, pixels in zip(items, future.result()):
            self.writer.submit(item["index"], pixels, item["alpha"])

    def __enter__(self) -> _Batches:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads // self.streams))
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            while exc_type is None and self.pending:
                self._collect()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(self.threads)


def _translate(translator: Translator, items: list[dict]):
    """(B, H, W, 3) uint8 numpy translations of `items` (decoded images of one size)."""
    images = torch.stack([item["image"] for item in items])  # (B, 3, H, W) uint8
    images = images.to(translator.device, non_blocking=True).float() / 127.5 - 1.0
    return to_uint8_hwc(translator.translate_tensor(images))

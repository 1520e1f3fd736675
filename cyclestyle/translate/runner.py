"""Whole folders of any-size images and videos, fast and without losing anything (`cyclestyle
translate`; the command line is in cyclestyle/translate/cli.py; videos are translated one by one
by cyclestyle/translate/video.py, after the images).

Pipeline: DataLoader workers (none on a 2-core CPU) decode and rescale images; the main process
groups decoded images of equal size into batches (buckets) and hands them to `streams` threads
that run the generator (on CPU one image per core, each single-threaded); a thread pool encodes
and writes each output through a temp file + rename (cyclestyle/translate/writer.py). Under
`accelerate launch` (or torchrun) each process takes files[rank::world], so no file is done
twice.

Safety: outputs never land inside the input tree unless asked (the folder given, a file's
folder, every listed file's folder), no output path may equal an input path, an output that
already exists is left alone and reported unless `overwrite` (replace it) or `skip_existing`
(count it as done, when it decodes) is asked, an interrupted run leaves only complete images
(temp files are hidden `.NAME.*.tmp` and cleaned by the next run; a video is renamed into
place only when complete). An unreadable file or sub-folder is reported and skipped; the summary
lists every failure.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cyclestyle.imageio import (
    ImageLoadError,
    from_uint8,
    load_image,
    to_uint8,
)
from cyclestyle.runtime import StopRequested, available_cores
from cyclestyle.translate.plan import (  # noqa: F401  (re-exported: the planning API)
    FORMATS,
    Job,
    clean_stale_temp_files,
    list_inputs,
    output_name,
    plan_jobs,
)
from cyclestyle.translate.translator import Translator, check_image_size, read_alpha, scaled_size
from cyclestyle.translate.video import VideoSettings, translate_videos
from cyclestyle.translate.writer import Writer
from cyclestyle.videoio import check_video, is_video

log = logging.getLogger(__name__)

UNREADABLE_FOLDER = "folder could not be listed (check its permissions); its images were skipped"


@dataclass
class Summary:
    translated: int = 0  # images and videos
    videos: int = 0  # of which videos
    frames: int = 0  # video frames written
    skipped_existing: int = 0  # complete outputs kept as done (skip_existing)
    existing: list[str] = field(default_factory=list)  # outputs that existed: left alone
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_second(self) -> float:
        return self.translated / self.seconds if self.seconds > 0 else 0.0


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
                    streams: int | None = None, overwrite: bool = False,
                    video: VideoSettings | None = None) -> Summary:
    """Translate `jobs[rank::world_size]`, images first, then videos (with `video`'s settings);
    failures are recorded, never raised.

    An output that already exists is left alone and listed in `Summary.existing`, unless
    `overwrite` (replace it) or `skip_existing` (count it as done when it is a complete image;
    an empty or undecodable one is translated again). `num_workers` decoding processes
    (default: `default_workers`) and `streams` batches in flight at once (default:
    `default_streams`).
    """
    if skip_existing and overwrite:
        raise ValueError("give skip_existing or overwrite, not both")
    start = time.perf_counter()
    summary = Summary()
    mine = jobs[rank::world_size]
    if world_size > 1:
        log.info("rank %d of %d: %d of %d files", rank, world_size, len(mine), len(jobs))
    clean_stale_temp_files(mine)
    todo = mine if overwrite else _not_done(mine, summary, skip_existing, max_pixels)
    images = [job for job in todo if not is_video(job.source)]
    if images:
        workers = default_workers(translator.device) if num_workers is None else num_workers
        streams = streams or default_streams(translator.device, len(images))
        _run(translator, images, summary, workers, streams, max_pixels, progress and rank == 0)
    videos = [(job.source, job.target) for job in todo if is_video(job.source)]
    if videos and not summary.interrupted:
        run = translate_videos(translator, videos, video or VideoSettings(),
                               progress and rank == 0)
        summary.translated += run.videos
        summary.videos, summary.frames = run.videos, run.frames
        summary.failed += run.failed
        summary.interrupted = run.interrupted
    summary.seconds = time.perf_counter() - start
    return summary


def _not_done(jobs: list[Job], summary: Summary, skip_existing: bool,
              max_pixels: int | None) -> list[Job]:
    """The jobs whose output is missing, or (skip_existing) exists but is incomplete."""
    todo = []
    for job in jobs:
        if not os.path.lexists(job.target):
            todo.append(job)
        elif not skip_existing:
            summary.existing.append(str(job.target))
        elif (problem := incomplete_output(job.target, max_pixels)) is None:
            summary.skipped_existing += 1
        else:
            log.warning("%s exists but %s: translating it again", job.target, problem)
            todo.append(job)
    return todo


def incomplete_output(path: Path, max_pixels: int | None = None) -> str | None:
    """Why an existing output cannot count as done, or None when it decodes completely."""
    if is_video(path):
        return check_video(path)
    try:
        if os.stat(path).st_size == 0:
            return "is empty (0 bytes)"
        load_image(path, max_pixels=max_pixels)
    except (OSError, ImageLoadError) as err:
        return f"cannot be decoded ({getattr(err, 'reason', '') or err})"
    return None


def default_workers(device: torch.device | str = "cpu") -> int:
    """Decoding processes: none on a CPU with 2 cores or fewer, where a worker takes a core from
    the generator (measured slower by scripts/bench_translate.py); else up to 4."""
    cores = available_cores()
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

    from cyclestyle.runtime import bar_interval

    dataset = _DecodeDataset(jobs, translator.size, translator.max_size, max_pixels)
    loader = DataLoader(dataset, batch_size=None, collate_fn=_single, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    bar = tqdm(total=len(jobs), unit="img", disable=not progress, dynamic_ncols=True,
               mininterval=bar_interval())

    def written(index: int) -> None:
        summary.translated += 1
        bar.update(1)

    def failed(index: int, reason: str) -> None:
        _fail(summary, jobs[index].target, f"cannot write: {reason}", bar)

    writer = Writer([job.target for job in jobs], max(1, workers), written, failed)
    with StopRequested("finishing the images in flight, then stopping") as stop, writer, _Batches(translator, writer, streams) as batches:
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
    images = from_uint8(images.to(translator.device, non_blocking=True))
    return to_uint8(translator.translate_tensor(images)).cpu().numpy()

"""Translate videos: `cyclestyle translate clip.mp4 --output out.mp4`, and the videos of a folder
run (cyclestyle/translate/runner.py hands them here one by one).

Pipeline: a thread decodes frames (cyclestyle/videoio.py); batches of consecutive frames
(`Translator.batch_size`: 1 on CPU, 4 on GPU) are translated on `default_video_streams` threads
(on CPU, two single-threaded passes side by side beat one two-threaded pass); a last thread
encodes them in order and copies the audio packets. PyAV releases the GIL while it decodes,
converts and encodes, so all of it overlaps; the queues between the stages are short, so memory
does not grow with the video's length.

Temporal consistency: InstanceNorm normalises each frame with its own statistics, and small
changes between frames (sensor noise, a person walking in) shift them, so colours flicker. By
default each norm layer uses an exponential average of its statistics over recent frames
(`RunningStatistics`, time constant `window` frames), restarted at scene cuts: a frame where
most of a 32x32 grey thumbnail changed (`SceneCuts`).
`cyclestyle evaluate --video` measures the result (the flicker ratio).

A frame stored sideways (a display rotation in the file) is turned upright for the generator
and back before encoding; the output keeps the input's display matrix, frame rate, frame times
and size (unless --size/--max-size), and its audio, copied.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cyclestyle.imageio import from_uint8, to_uint8
from cyclestyle.models.norm_stats import RunningStatistics
from cyclestyle.translate.options import VIDEO_STATS
from cyclestyle.translate.translator import Translator, check_image_size, scaled_size
from cyclestyle.videoio import Frame, VideoError, VideoReader, VideoWriter

log = logging.getLogger(__name__)

# A frame starts a new scene when more than SCENE_CUT_SHARE of its 32x32 grey thumbnail's cells
# changed by more than SCENE_CUT_LEVELS (8-bit levels) since the previous frame. A cut to
# another shot changes nearly every cell; within a shot, a lamp switching or a person walking
# in changes a minority, and sensor noise almost none (each cell averages 1/1000 of the frame).
# Such local changes are exactly what the running average should smooth over, not reset on.
SCENE_CUT_LEVELS = 24.0
SCENE_CUT_SHARE = 0.5
THUMBNAIL = 32
QUEUE_BATCHES = 2  # batches waiting between decoder, generator and encoder


class Interrupted(Exception):
    """A stop was requested mid-video; its output was not kept."""


@dataclass
class VideoSettings:
    stats: str = "running"  # VIDEO_STATS: running average over frames, or each frame's own
    window: int = 16  # the running average's time constant, frames


@dataclass
class VideoRun:
    """What `translate_videos` did."""

    videos: int = 0
    frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    interrupted: bool = False


def translate_videos(translator: Translator, jobs: list[tuple[Path, Path]],
                     settings: VideoSettings, progress: bool = True) -> VideoRun:
    """Translate each (source, target) in turn; a video that fails is recorded and skipped.
    SIGTERM / SIGINT stop the run; the video in progress is not kept."""
    from cyclestyle.runtime import StopRequested

    run = VideoRun()
    with StopRequested("stopping: the video in progress is not kept") as stop:
        for source, target in jobs:
            try:
                run.frames += translate_video(translator, source, target, settings, progress,
                                              stop)
                run.videos += 1
            except Interrupted:
                run.interrupted = True
                break
            except (VideoError, OSError, ValueError) as err:
                log.warning("skipped %s: %s", source, err)
                run.failed.append((str(source), str(err)))
    return run


class SceneCuts:
    """Flags the frames that start a new scene (the first frame of the video is one)."""

    def __init__(self, levels: float = SCENE_CUT_LEVELS, share: float = SCENE_CUT_SHARE) -> None:
        self.levels, self.share, self.previous = levels, share, None

    def starts(self, frames: torch.Tensor) -> list[bool]:
        """`frames` (B, 3, H, W) uint8, consecutive; one flag per frame."""
        grey = frames.float().mean(1, keepdim=True)  # (B, 1, H, W)
        thumbnails = F.adaptive_avg_pool2d(grey, THUMBNAIL)[:, 0]  # (B, 32, 32)
        flags = []
        for thumbnail in thumbnails:
            changed = None if self.previous is None else (
                (thumbnail - self.previous).abs() > self.levels).float().mean().item()
            flags.append(changed is None or changed > self.share)
            self.previous = thumbnail
        return flags


def translate_video(translator: Translator, source: Path, target: Path,
                    settings: VideoSettings | None = None, progress: bool = True,
                    stop: Any = None) -> int:
    """Translate `source` into `target` (written atomically); returns the frames written.

    Raises `Interrupted` (no output kept) when `stop.signal` is set between batches, and
    `videoio.VideoError` for a file that cannot be read or written.
    """
    from tqdm import tqdm

    from cyclestyle.runtime import bar_interval

    settings = settings or VideoSettings()
    if settings.stats not in VIDEO_STATS:
        raise ValueError(f"video stats {settings.stats!r}; choose one of {VIDEO_STATS}")
    with VideoReader(source) as reader, tqdm(total=reader.frames or None, unit="frame",
                                             desc=source.name, disable=not progress,
                                             dynamic_ncols=True, leave=False,
                                             mininterval=bar_interval()) as bar:
        size = _output_size(translator, reader.width, reader.height, source)
        running = RunningStatistics(settings.window) if settings.stats == "running" else None
        frames = _FrameBatches(translator, reader, size, running)
        decoded = _prefetch(reader.items(), QUEUE_BATCHES * translator.batch_size + 8)
        # Exits in reverse: the generator threads finish, the encoder finishes, the file is kept
        # (or removed), and the decoding thread stops before the reader's file is closed.
        with contextlib.closing(decoded), VideoWriter(target, reader, *size) as writer, \
                _Encoder(writer, bar) as encoder, _Streams(frames) as streams:
            for batch, audio in frames.batches(decoded):
                for packet in audio:
                    encoder.put(("audio", packet))
                for translated in streams.submit(batch):
                    encoder.put(("frames", translated))
                if stop is not None and stop.signal:
                    raise Interrupted(str(target))
            for translated in streams.drain():
                encoder.put(("frames", translated))
    return writer.frames_written


def default_video_streams(device: torch.device) -> int:
    """Batches of frames translated at once: on CPU one per core up to 2, each single-threaded
    (with running statistics they run one layer apart, see RunningStatistics); 1 on GPU."""
    return 1 if device.type != "cpu" else max(1, min(2, torch.get_num_threads()))


def _output_size(translator: Translator, width: int, height: int,
                 source: Path) -> tuple[int, int]:
    """The input's size, or --size/--max-size's rounded to even sides (what 4:2:0 needs)."""
    scaled = scaled_size(width, height, translator.size, translator.max_size)
    if scaled != (width, height):
        scaled = (max(2, scaled[0] - scaled[0] % 2), max(2, scaled[1] - scaled[1] % 2))
    check_image_size(*scaled, f"video {source}")
    return scaled


class _FrameBatches:
    """Groups decoded frames into batches and translates them in order."""

    def __init__(self, translator: Translator, reader: VideoReader, size: tuple[int, int],
                 running: RunningStatistics | None) -> None:
        self.translator, self.size, self.running = translator, size, running
        self.turns = round(reader.rotation / 90) % 4 if reader.rotation % 90 == 0 else 0
        self.cuts = SceneCuts()

    def batches(self, items: Iterable) -> Iterator[tuple[list[Frame], list]]:
        """(frames, audio packets that came with them), `batch_size` frames at a time."""
        frames, audio = [], []
        for item in items:
            if isinstance(item, Frame):
                frames.append(item)
                if len(frames) == self.translator.batch_size:
                    yield frames, audio
                    frames, audio = [], []
            else:
                audio.append(item)
        yield frames, audio

    def prepare(self, frames: list[Frame]) -> tuple[list[Frame], torch.Tensor, Any]:
        """In frame order, on the calling thread: the pixels (B, 3, H, W) uint8 on the device,
        and the statistics of this pass (scene cuts found, running average's turn taken)."""
        pixels = torch.stack([torch.from_numpy(f.pixels) for f in frames]).permute(0, 3, 1, 2)
        pixels = pixels.to(self.translator.device, non_blocking=True)
        starts = self.cuts.starts(pixels)
        return frames, pixels, None if self.running is None else self.running.batch(starts)

    def run(self, job: tuple[list[Frame], torch.Tensor, Any]) -> list[tuple[Any, int | None]]:
        """[(H, W, 3) uint8 translated pixels, pts] for a prepared batch (any thread)."""
        frames, pixels, stats = job
        images = from_uint8(pixels)
        width, height = self.size
        if images.shape[-2:] != (height, width):
            images = F.interpolate(images, size=(height, width), mode="bilinear",
                                   antialias=True, align_corners=False)
        # Upright for the generator (rotation is counter-clockwise), stored orientation after.
        upright = torch.rot90(images, self.turns, dims=(-2, -1))
        out = self.translator.translate_frames(upright, stats)
        out = to_uint8(torch.rot90(out, -self.turns, dims=(-2, -1))).cpu().numpy()  # (B, H, W, 3)
        return [(image, frame.pts) for image, frame in zip(out, frames)]


class _Streams:
    """Translates prepared batches on `default_video_streams` threads, each with its share of
    torch's threads; results come back in submission order."""

    def __init__(self, frames: _FrameBatches) -> None:
        self.frames = frames
        self.count = default_video_streams(frames.translator.device)
        self.pending: deque[Future] = deque()

    def submit(self, batch: list[Frame]) -> Iterator[list]:
        """Start `batch` (if any frames); yield the results that must be collected to keep at
        most `count` batches running."""
        if batch:
            job = self.frames.prepare(batch)
            self.pending.append(self.pool.submit(self.frames.run, job))
        while len(self.pending) > self.count:
            yield self.pending.popleft().result()

    def drain(self) -> Iterator[list]:
        while self.pending:
            yield self.pending.popleft().result()

    def __enter__(self) -> _Streams:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads // self.count))
        self.pool = ThreadPoolExecutor(self.count, thread_name_prefix="cyclestyle-video")
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is not None and self.frames.running is not None:
                self.frames.running.abort()  # passes waiting on a failed one fail too
            self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            torch.set_num_threads(self.threads)


def _prefetch(items: Iterable, depth: int) -> Iterator:
    """`items`, produced by a background thread at most `depth` ahead; its errors re-raised.
    Close the generator (contextlib.closing) to stop and join the thread."""
    buffer: queue.Queue = queue.Queue(depth)
    done, finished = object(), threading.Event()

    def offer(item: Any) -> bool:
        """Queue `item` unless the consumer has gone; False then."""
        while not finished.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(done)
        except BaseException as err:  # handed to the consumer
            offer(err)

    thread = threading.Thread(target=produce, name="cyclestyle-decode", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        finished.set()
        thread.join()


class _Encoder:
    """Encodes translated frames and muxes audio packets on a thread, in the order given."""

    def __init__(self, writer: VideoWriter, bar: Any) -> None:
        self.writer, self.bar = writer, bar
        self.jobs: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="cyclestyle-encode", daemon=True)

    def put(self, job: tuple[str, Any]) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put(job)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue  # drain: the caller stops at its next put
            try:
                kind, payload = job
                if kind == "audio":
                    self.writer.audio_packet(payload)
                    continue
                for pixels, pts in payload:
                    self.writer.frame(pixels, pts)
                self.bar.update(len(payload))
            except BaseException as err:
                self.error = err

    def __enter__(self) -> _Encoder:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.jobs.put(None)
        self.thread.join()
        if exc[0] is None and self.error is not None:
            raise self.error

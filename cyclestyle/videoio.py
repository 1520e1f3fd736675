"""Reading and writing videos with PyAV (FFmpeg): frames as 8-bit RGB arrays, the audio stream
copied packet for packet, the rotation metadata kept, every output written atomically.

The decisions about video files live here once, as imageio's do for images:

- Frames come out as they are stored (H, W, 3) uint8 RGB, with their presentation times;
  `VideoReader.rotation` is the display rotation the file asks players to apply, and the writer
  stores the same display matrix, so a phone's portrait clip plays upright again.
- Output video: H.264 (libx264, CRF 18: visually lossless for most content) where the FFmpeg
  build has it; else MPEG-4 Part 2 (FFmpeg's own `mpeg4` encoder, in every build, at quantiser
  3: larger files at the same quality). WebM takes VP9 (or VP8) only. Frame rate, frame times
  and size are the input's.
- Audio: the first audio stream is copied, not re-encoded (no generation loss, no time spent);
  other streams (subtitles, a second audio track, data) are not carried over.
- The output is written to a hidden temp file beside the target (`.NAME.*.tmp`, the atomic
  module's one naming rule) and renamed over it only when complete, so an interrupted run
  leaves no half-written video.

PyAV is imported when a video is opened, not at import time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from cyclestyle.atomic import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# Container per extension: the temp file's own name ends in .tmp, so FFmpeg is told.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
              ".avi": "avi"}
# Encoders in order of preference: H.264 where the FFmpeg build has it, else MPEG-4 Part 2,
# which FFmpeg implements itself (no external library), so every build can write it.
ENCODERS = {".webm": ("libvpx-vp9", "libvpx")}
DEFAULT_ENCODERS = ("libx264", "mpeg4")
ENCODER_OPTIONS = {"libx264": {"crf": "18", "preset": "medium"},
                   "libvpx-vp9": {"crf": "24", "b": "0"}, "libvpx": {"crf": "10", "b": "2M"}}
MPEG4_QUANTISER = 3  # qscale 2-5 is visually near-lossless for MPEG-4 Part 2


class VideoError(ValueError):
    """A video that cannot be read or written; the message names the file and says why."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av() -> Any:
    import av

    return av


def pick_encoder(suffix: str) -> str:
    """The first encoder of the preference list for `suffix` that this FFmpeg build has."""
    av = _av()
    choices = ENCODERS.get(suffix.lower(), DEFAULT_ENCODERS)
    for name in choices:
        with contextlib.suppress(av.codec.codec.UnknownCodecError, ValueError):
            av.codec.Codec(name, "w")
            return name
    raise VideoError(f"this FFmpeg build has none of the encoders {', '.join(choices)} for "
                     f"{suffix} files; write another container (.mp4, .mkv)")


@dataclass(frozen=True)
class Frame:
    """One decoded frame: (H, W, 3) uint8 RGB pixels as stored, its time in stream units."""

    pixels: np.ndarray
    pts: int | None


class VideoReader:
    """Decodes `path`'s first video stream and demuxes its first audio stream alongside.

    `items()` yields Frame objects and audio packets in file order. `rate`, `time_base`,
    `width`, `height`, `frames` (0 when the file does not say) and `rotation` describe it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        av = _av()
        self.path = Path(path)
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise VideoError(f"cannot read video {self.path}: {err}") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.path} holds no video stream")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"  # FFmpeg's frame threads: decoding keeps up
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        self.rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.time_base = self.video.time_base
        self.width, self.height = self.video.width, self.video.height
        self.frames = self.video.frames or self._estimated_frames()
        self._ahead = self._decode_until_first_frame()
        self.display_matrix = _display_matrix(self._first)

    def _estimated_frames(self) -> int:
        if self.container.duration is None:
            return 0
        return int(round(self.container.duration / 1_000_000 * float(self.rate)))

    def _decode_until_first_frame(self) -> list:
        """Items up to the first frame (its side data holds the rotation), kept to yield."""
        self._items, self._first = self._demux(), None
        ahead = []
        for item in self._items:
            ahead.append(item)
            if isinstance(item, Frame):
                break
        return ahead

    def _demux(self) -> Iterator:
        av = _av()
        streams = [s for s in (self.video, self.audio) if s is not None]
        try:
            for packet in self.container.demux(streams):
                if packet.stream is self.audio:
                    if packet.dts is not None:  # a flush packet carries nothing
                        yield packet
                    continue
                for frame in packet.decode():
                    if self._first is None:
                        self._first = frame
                    yield Frame(frame.to_ndarray(format="rgb24"), frame.pts)
        except av.error.FFmpegError as err:
            raise VideoError(f"cannot decode {self.path}: {err}") from None

    def items(self) -> Iterator:
        yield from self._ahead
        self._ahead = []
        yield from self._items

    @property
    def rotation(self) -> int:
        return 0 if self._first is None else self._first.rotation

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _display_matrix(decoded: Any) -> list[int] | None:
    """The 3x3 display matrix (9 int32, FFmpeg's layout) of a decoded frame, if it has one."""
    if decoded is None:
        return None
    av = _av()
    side = decoded.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    return None if side is None else np.frombuffer(bytes(side), dtype=np.int32).tolist()


class VideoWriter:
    """Encodes RGB frames into `target` (container from its extension) with the reader's frame
    rate, frame times, size and display matrix, and copies its audio packets. The file appears
    at `target` only when `close()` completes; an exception removes the temp file."""

    def __init__(self, target: str | os.PathLike, reader: VideoReader,
                 width: int | None = None, height: int | None = None) -> None:
        av = _av()
        self.target = Path(target)
        suffix = self.target.suffix.lower()
        if suffix not in CONTAINERS:
            raise VideoError(f"cannot write {self.target}: {suffix or 'no extension'} is not a "
                             f"video container; use one of {', '.join(VIDEO_EXTENSIONS)}")
        self.encoder = pick_encoder(suffix)
        self._atomic = atomic_path(self.target)
        temp = self._atomic.__enter__()
        try:
            self.container = av.open(str(temp), "w", format=CONTAINERS[suffix])
            self.video = self._video_stream(reader, width or reader.width,
                                            height or reader.height)
            self.frame_duration = 1 / (reader.rate * reader.time_base)  # in time-base units
            self.audio = self._audio_stream(reader)
        except BaseException as err:
            self._abort(err)
            raise
        self.frames_written = 0

    def _video_stream(self, reader: VideoReader, width: int, height: int) -> Any:
        stream = self.container.add_stream(self.encoder, rate=reader.rate,
                                           options=ENCODER_OPTIONS.get(self.encoder, {}))
        stream.width, stream.height = width, height
        # 4:2:0 is what players expect; it needs even sides, so odd ones keep full chroma.
        even = width % 2 == 0 and height % 2 == 0
        stream.pix_fmt = "yuv420p" if even or self.encoder == "mpeg4" else "yuv444p"
        stream.codec_context.time_base = reader.time_base
        if self.encoder == "mpeg4":
            stream.codec_context.qscale = MPEG4_QUANTISER
        if reader.display_matrix is not None:
            stream.set_display_matrix(reader.display_matrix)
        return stream

    def _audio_stream(self, reader: VideoReader) -> Any:
        if reader.audio is None:
            return None
        try:
            return self.container.add_stream_from_template(reader.audio)
        except ValueError as err:  # the container cannot hold this audio codec
            raise VideoError(f"cannot copy the audio of {reader.path} into {self.target}: "
                             f"{err}; keep the input's container") from None

    def frame(self, pixels: np.ndarray, pts: int | None) -> None:
        """Encode (H, W, 3) uint8 RGB `pixels` shown at `pts` (reader time base)."""
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        frame.pts = pts if pts is not None else round(self.frames_written * self.frame_duration)
        frame.time_base = self.video.codec_context.time_base
        self.container.mux(self.video.encode(frame))
        self.frames_written += 1

    def audio_packet(self, packet: Any) -> None:
        if self.audio is not None:
            packet.stream = self.audio
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and rename the finished file onto the target."""
        try:
            self.container.mux(self.video.encode())  # frames the encoder still holds
            self.container.close()
        except BaseException as err:
            self._abort(err)
            raise
        self._atomic.__exit__(None, None, None)

    def _abort(self, err: BaseException) -> None:
        """Close what is open and remove the temp file; `err` is re-raised by the caller."""
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(type(err), err, err.__traceback__)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of `path`'s first video stream, (H, W, 3) uint8 RGB, one at a time."""
    with VideoReader(path) as reader:
        for item in reader.items():
            if isinstance(item, Frame):
                yield item.pixels


def check_video(path: str | os.PathLike) -> str | None:
    """Why an existing output video cannot count as done, or None when it holds frames."""
    try:
        if os.stat(path).st_size == 0:
            return "is empty (0 bytes)"
        with VideoReader(path) as reader:
            if not any(isinstance(item, Frame) for item in reader._ahead):
                return "holds no frame"
    except (OSError, VideoError) as err:
        return f"cannot be decoded ({err})"
    return None

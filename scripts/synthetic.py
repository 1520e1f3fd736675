"""Small synthetic image folders for tests and benchmarks (no shared assets needed)."""

from __future__ import annotations

from pathlib import Path


def write_images(folder: Path, count: int, seed: int, sizes=((40, 48), (36, 36), (50, 34))) -> Path:
    """Small colourful PNG/JPEG images of mixed sizes, deterministic in `seed`."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(0, 255, size=3)
        pixels = (base + 80 * np.sin(xx[..., None] / rng.uniform(2, 8) + np.arange(3))
                  + 60 * np.cos(yy[..., None] / rng.uniform(2, 8))) % 255
        ext = ".png" if i % 2 == 0 else ".jpg"
        Image.fromarray(pixels.astype("uint8")).save(folder / f"img_{i:02d}{ext}")
    return folder


def write_clip(path: Path, frames, rate=30, audio: bool = True, rotation: int = 0,
               codec: str = "libx264", options: dict | None = None) -> Path:
    """A video of `frames` ((H, W, 3) uint8 arrays) written with PyAV directly (not through
    cyclestyle), with a sine-tone AAC track of the same length when `audio`, a display
    rotation when `rotation` (degrees counter-clockwise), encoder `options` (e.g. crf)."""
    from fractions import Fraction

    import av
    import numpy as np

    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=Fraction(rate), options=options or {})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=16000, layout="mono") if audio else None
        for pixels in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        if sound is not None:
            samples = int(16000 * len(frames) / Fraction(rate))
            tone = (0.3 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 16000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts = 16000, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode())
        container.mux(video.encode())
    return path


def moving_frames(count: int, width: int, height: int, seed: int = 0):
    """`count` frames of a colourful pattern drifting one pixel per frame (uint8, H x W x 3)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    return [((base + 80 * np.sin((xx[..., None] + t) / 6 + np.arange(3))
              + 60 * np.cos(yy[..., None] / 5)) % 255).astype("uint8") for t in range(count)]

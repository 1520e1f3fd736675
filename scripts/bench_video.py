#!/usr/bin/env python
"""Video translation: temporal consistency (`--flicker`) and speed (`--speed`, also run by
`scripts/bench_translate.py --video`), written as JSON.

Flicker: clips synthesised from a shared photo (else a synthetic picture), 256 px high, 4:3,
48 frames at 30 fps, written near-losslessly (x264 CRF 4):
  static  the still photo, fresh sensor-like noise each frame (Gaussian, variance 4 + 0.05 x
          signal: read noise plus shot noise, in 8-bit levels)
  pan     a slow pan, 1.5 pixels per frame, across the photo, with the same noise
  lamp    the static clip with a lamp (a ninth of the frame) switching on or off at random
Each is translated by `translate_video` with per-frame statistics and with running statistics
(window 16); reported: the flicker ratio (cyclestyle.metrics.temporal, as `cyclestyle evaluate
--video` computes it), the output's change per frame away from the lamp (lamp clip), the mean
SSIM of the running-statistics frames to the per-frame ones (the content is kept), and the
change per frame the statistics alone cause (each frame's statistics applied to the first
frame: the most any choice of statistics can remove). Quality numbers, independent of load.

Speed: frames per second at 256p and 512p (4:3, 48 and 24 frames, a slow pan, no audio) for
- ours: `translate_video` with the Translator's CPU defaults (channels_last, GroupNorm form,
  running statistics, decode and encode threads), fp32;
- naive: decode one frame, translate it (the plain generator, batch 1, no_grad), encode it,
  repeat; the same encoder and settings.
Runs alternate (ours, naive, naive, ours, ...), each in its own process, timed from the first
decoded frame to the closed file.

    .venv/bin/python scripts/bench_video.py --flicker --speed --checkpoint runs/demo_in --out bench_video.json
    .venv/bin/python scripts/bench_video.py --flicker --speed --quick --out /tmp/bench_video.json  # smoke run

runs/demo_in: configs/demo.yaml trained with `--set model.generator_args.norm=instance`; the
demo's own generator has no norms, so running statistics change nothing for it. Without
--checkpoint: that generator with seeded random weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import WITH_INSTANCE_NORM, host, in_subprocess, random_demo_checkpoint  # noqa: E402 (scripts/ on sys.path)
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PHOTO = REPO.parent / "shared/data/photo2painting/photo/neuralstyle__tubingen.jpg"
RATE = 30
FULL = {"flicker": (256, 48), "speed": [(256, 48, 2), (512, 24, 2)]}  # (height, frames, runs)
QUICK = {"flicker": (64, 12), "speed": [(64, 8, 1)]}


def photo(width: int, height: int) -> np.ndarray:
    if PHOTO.is_file():
        image = Image.open(PHOTO).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(image).astype(float)
    yy, xx = np.mgrid[0:height, 0:width]
    return 127 + 100 * np.sin(xx[..., None] / 23 + yy[..., None] / 31 + np.arange(3))


def sensor_noise(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Read noise (variance 4) plus shot noise (variance 0.05 x signal), in 8-bit levels."""
    noise = rng.normal(0, 1, frame.shape) * np.sqrt(4 + 0.05 * frame)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def synthetic_clips(height: int, frames: int) -> dict[str, tuple[list, np.ndarray | None]]:
    """{name: (frames, mask of the pixels to watch or None)} for the static, pan, lamp clips."""
    width = height * 4 // 3 // 2 * 2  # even: 4:2:0 video
    rng = np.random.default_rng(0)
    still = photo(width, height)
    wide = photo(width + int(1.5 * frames) + 2, height)
    lamp_box = (slice(height // 9, height // 9 + height // 3),
                slice(width // 9, width // 9 + width // 3))
    away = np.ones((height, width), bool)
    away[: lamp_box[0].stop + height // 8, : lamp_box[1].stop + width // 8] = False
    lamp = []
    for _ in range(frames):
        frame = still.copy()
        frame[lamp_box] = rng.choice([25.0, 230.0])
        lamp.append(sensor_noise(frame, rng))
    return {"static": ([sensor_noise(still, rng) for _ in range(frames)], None),
            "pan": ([sensor_noise(wide[:, int(1.5 * t):int(1.5 * t) + width], rng)
                     for t in range(frames)], None),
            "lamp": (lamp, away)}


# ---------------------------------------------------------------------------- flicker


def flicker(root: Path, checkpoint: str, height: int, frames: int) -> list[dict]:
    from cyclestyle.metrics.content import ssim_psnr
    from cyclestyle.metrics.temporal import flicker_ratio
    from cyclestyle.translate.translator import Translator
    from cyclestyle.translate.video import VideoSettings, translate_video
    from cyclestyle.videoio import read_frames
    from scripts.synthetic import write_clip

    translator = Translator.from_pretrained(checkpoint, device="cpu", precision="fp32")
    rows = []
    for name, (clip, away) in synthetic_clips(height, frames).items():
        source = write_clip(root / f"{name}.mp4", clip, rate=RATE, audio=False,
                            options={"crf": "4"})
        outputs = {}
        for stats in ("frame", "running"):
            out = root / f"{name}_{stats}.mp4"
            translate_video(translator, source, out, VideoSettings(stats, 16), progress=False)
            outputs[stats] = [f.astype(np.int16) for f in read_frames(out)]
        row = {"clip": name, "height": height, "frames": frames,
               **statistics_only_change(translator, clip)}
        for stats, out in outputs.items():
            measured = flicker_ratio(read_frames(source), out)
            row["source_change_levels"] = round(measured["source_change_levels"], 3)
            row[f"output_change_levels_{stats}"] = round(measured["translated_change_levels"], 3)
            row[f"flicker_ratio_{stats}"] = round(measured["flicker_ratio"], 3)
            if away is not None:
                row[f"change_away_from_lamp_{stats}"] = round(float(np.mean(
                    [np.abs(b - a)[away].mean() for a, b in zip(out, out[1:])])), 2)
        row["improvement"] = round(row["flicker_ratio_frame"] / row["flicker_ratio_running"], 2)
        row["ssim_running_to_frame"] = round(float(np.mean(
            [ssim_psnr(a.astype(np.uint8), b.astype(np.uint8))[0]
             for a, b in zip(outputs["running"], outputs["frame"])])), 4)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def statistics_only_change(translator, clip: list[np.ndarray]) -> dict:
    """How much of the output's change per frame its normalisation statistics cause: each
    frame's statistics (per-frame, or running) applied to the first frame's content, so only
    the statistics differ between outputs; mean |change| per frame in 8-bit levels."""
    from cyclestyle.imageio import from_uint8, to_uint8
    from cyclestyle.models.norm_stats import (
        FixedStatistics,
        OwnStatistics,
        RecordStatistics,
        RunningStatistics,
    )

    frames = from_uint8(torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2))
    result = {}
    for stats in ("frame", "running"):
        running, outputs = RunningStatistics(16), []
        with torch.inference_mode():
            for t in range(len(frames)):
                source = OwnStatistics() if stats == "frame" else running.batch([t == 0])
                record = RecordStatistics(source)
                translator.forward(frames[t:t + 1], record)
                content = translator.forward(frames[:1], FixedStatistics(record.recorded))
                outputs.append(to_uint8(content[0]).numpy().astype(np.int16))
        result[f"statistics_only_change_{stats}"] = round(float(np.mean(
            [np.abs(b - a).mean() for a, b in zip(outputs, outputs[1:])])), 3)
    return result


# ---------------------------------------------------------------------------- speed


def run_ours(spec: dict) -> int:
    from cyclestyle.translate.translator import Translator
    from cyclestyle.translate.video import translate_video

    translator = Translator.from_pretrained(spec["checkpoint"], device="cpu", precision="fp32")
    return translate_video(translator, Path(spec["input"]), Path(spec["output"]),
                           progress=False)


def run_naive(spec: dict) -> int:
    """Decode one frame, translate it, encode it, repeat (no threads of our own)."""
    import av

    from cyclestyle.checkpoint import load_generators
    from cyclestyle.imageio import from_uint8, to_uint8
    from cyclestyle.videoio import ENCODER_OPTIONS, pick_encoder

    generator = load_generators(spec["checkpoint"])[0].eval()
    encoder = pick_encoder(".mp4")
    count = 0
    with av.open(spec["input"]) as source, av.open(spec["output"], "w") as target:
        video = source.streams.video[0]
        stream = target.add_stream(encoder, rate=video.average_rate,
                                   options=ENCODER_OPTIONS.get(encoder, {}))
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in source.decode(video):
            pixels = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            with torch.no_grad():
                fake = generator(from_uint8(pixels)[None])  # G_AB(A)
            out = av.VideoFrame.from_ndarray(to_uint8(fake[0]).numpy(), format="rgb24")
            target.mux(stream.encode(out))
            count += 1
        target.mux(stream.encode())
    return count


def run_one(spec: dict) -> dict:
    import cyclestyle.checkpoint  # noqa: F401  imports are not the run (for either method)
    import cyclestyle.translate.video  # noqa: F401

    start = time.perf_counter()
    frames = (run_naive if spec["kind"] == "naive" else run_ours)(spec)
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds}


def speed(root: Path, checkpoint: str, cases: list[tuple[int, int, int]]) -> list[dict]:
    from scripts.synthetic import write_clip

    rows = []
    for height, frames, runs in cases:
        clip, _ = synthetic_clips(height, frames)["pan"]
        source = write_clip(root / f"speed_{height}.mp4", clip, rate=RATE, audio=False)
        fps: dict[str, list[float]] = {"ours": [], "naive": []}
        for rep in range(runs):
            for kind in ("ours", "naive") if rep % 2 == 0 else ("naive", "ours"):
                spec = {"kind": kind, "checkpoint": checkpoint, "input": str(source),
                        "output": str(root / f"speed_{height}_{kind}.mp4")}
                fps[kind].append(in_subprocess(__file__, spec)["fps"])
                print(f"{height}p {kind}: {fps[kind][-1]:.2f} frames/s", file=sys.stderr)
        row = {"height": height, "width": height * 4 // 3 // 2 * 2, "frames": frames, "runs": runs,
               **{f"{k}_fps": round(statistics.median(v), 3) for k, v in fps.items()}}
        row["speedup"] = round(row["ours_fps"] / row["naive_fps"], 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flicker", action="store_true", help="temporal consistency")
    parser.add_argument("--speed", action="store_true", help="frames/s, ours vs naive")
    parser.add_argument("--checkpoint", help="a trained run with norm layers (default: "
                        "configs/demo.yaml's generator with InstanceNorm, random weights)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64p, few frames")
    parser.add_argument("--cases", help="speed cases HEIGHT:FRAMES:RUNS,... (default: "
                        "256:48:2,512:24:2)")
    parser.add_argument("--out", default="bench_video.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if not (args.flicker or args.speed):
        parser.error("choose --flicker, --speed or both")
    plan = QUICK if args.quick else FULL
    print(f"host: {host()}", file=sys.stderr)
    report = {"benchmark": "video", "quick": args.quick, "host": host(),
              "source": PHOTO.name if PHOTO.is_file() else "synthetic",
              "checkpoint": args.checkpoint or "configs/demo.yaml with InstanceNorm, random weights"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or random_demo_checkpoint(root / "run", WITH_INSTANCE_NORM)
        if args.flicker:
            report["flicker"] = flicker(root, checkpoint, *plan["flicker"])
        if args.speed:
            cases = ([tuple(map(int, case.split(":"))) for case in args.cases.split(",")]
                     if args.cases else plan["speed"])
            report["speed"] = speed(root, checkpoint, cases)
    report["host_after"] = host()
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

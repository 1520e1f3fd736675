#!/usr/bin/env python
"""Images/s of `cyclestyle translate` against a naive loop, and peak memory of one 4000x3000
image with and without tiling, written as JSON.

Throughput: N PNG photos of S x S pixels are translated by
- ours: the `cyclestyle translate` command with its defaults (fp32; on CPU: channels_last,
  one single-threaded batch per core, no decode workers on 2 cores, glibc keeping freed memory;
  size buckets, inference mode, writer thread), and
- naive: the reference CycleGAN test script's loop: per image, PIL open -> tensor -> generator
  (batch 1, no_grad) -> PIL save with PIL's defaults; no workers.
Both load the same checkpoint. Repetitions alternate (ours, naive, naive, ours, ...) so machine
noise hits both alike; each run is its own subprocess, so its peak memory (RSS on CPU, max
allocated on GPU) is its own. Timed: loading the checkpoint and translating every image (not
Python's start-up and imports); no warm-up for either. Memory: one 4000x3000 photo through
`cyclestyle translate --workers 0` with --tile 1024 and without; the generator there has no
attention (global attention over 4000x3000 pixels would not fit), otherwise it is the
benchmark's model.

    .venv/bin/python scripts/bench_translate.py --out bench_translate.json  # ~9 min, 2 cores
    .venv/bin/python scripts/bench_translate.py --quick --out /tmp/bench.json  # smoke run

`--video` measures videos instead: frames/s at 256p and 512p of our video path against the
naive decode-translate-encode loop, side by side (scripts/bench_video.py --speed, which says how).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import in_subprocess  # noqa: E402 (scripts/ on sys.path)
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared/data/photo2painting/photo"
# The model sections the benchmark can use: configs/demo.yaml's (CPU-sized, what `cyclestyle
# demo` trains), the package default unet_attn, or configs/tiny.yaml's (for --quick).
MODELS = {"demo": "configs/demo.yaml", "default": None, "tiny": "configs/tiny.yaml"}
# Throughput cases: (side, images per run, runs per method). 1024x1024 runs 16 images per
# method as 2 alternating runs of 8: the naive loop takes ~20 s per image there.
FULL = {"sizes": [(256, 64, 3), (1024, 8, 2)], "memory_image": (4000, 3000), "tile": 1024,
        "model": "demo"}
QUICK = {"sizes": [(64, 8, 1)], "memory_image": (400, 300), "tile": 128, "model": "tiny"}


# ---------------------------------------------------------------------------- set-up


def model_config(model: str, attention: bool = True):
    from cyclestyle.train.config import load_config

    path = MODELS[model]
    config = load_config(REPO / path if path else None)
    if not attention and config.model.generator == "unet_attn":
        config.model.generator_args = {**config.model.generator_args,
                                       "attention_resolutions": []}
    return config


def make_checkpoint(folder: Path, model: str, attention: bool = True) -> dict:
    """A checkpoint of `model` (seeded random weights: speed and memory do not depend on them)."""
    from cyclestyle.checkpoint import plain_state_dict, save_checkpoint
    from cyclestyle.models.factory import build_generators

    config = model_config(model, attention)
    torch.manual_seed(0)
    g_ab, g_ba = build_generators(config.model)
    models = {"g_ab": plain_state_dict(g_ab), "g_ba": plain_state_dict(g_ba)}
    save_checkpoint({"config": config.to_dict(), "models": models}, folder, step=1, keep=1)
    return {"checkpoint": str(folder), "model": model, "source": MODELS[model] or "defaults",
            "generator": config.model.generator, "generator_args": config.model.generator_args,
            "generator_params": sum(p.numel() for p in g_ab.parameters())}


def source_photos() -> list[Image.Image]:
    """The shared photos when present (real content compresses like real outputs), else
    synthetic gradients."""
    if PHOTOS.is_dir():
        return [Image.open(p).convert("RGB") for p in sorted(PHOTOS.iterdir())[:16]]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    return [Image.fromarray(((rng.uniform(0, 255, 3) + 90 * np.sin(xx[..., None] / 9 + yy[
        ..., None] / rng.uniform(5, 15) + np.arange(3))) % 255).astype(np.uint8)) for _ in range(8)]


def write_photos(folder: Path, count: int, width: int, height: int) -> Path:
    from PIL import ImageOps

    folder.mkdir(parents=True)
    photos = source_photos()
    for i in range(count):
        image = ImageOps.fit(photos[i % len(photos)], (width, height), Image.Resampling.LANCZOS)
        image.save(folder / f"photo_{i:03d}.png", compress_level=1)
    return folder


# ---------------------------------------------------------------------------- one run


class Meter:
    """Seconds, peak RSS and peak GPU memory between start() and stop(), plus the peak PSS of
    child processes (ours' DataLoader workers), sampled every 20 ms."""

    def __init__(self, device: str) -> None:
        self.device, self.cuda = device, device.startswith("cuda")
        self.stopping, self.workers_peak = threading.Event(), 0.0
        self.sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self._sync()
        self.rss_before = _status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS: imports are not the run
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.sampler.start()
        self.started = time.perf_counter()

    def stop(self) -> dict:
        self._sync()
        seconds = time.perf_counter() - self.started
        self.stopping.set()
        self.sampler.join()
        return {"seconds": seconds, "rss_before_run_mib": round(self.rss_before, 1),
                "peak_rss_mib": round(_status_mib("VmHWM"), 1),
                "peak_workers_pss_mib": round(self.workers_peak, 1),
                "peak_gpu_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                if self.cuda else None}

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _sample(self) -> None:
        while not self.stopping.wait(0.02):
            self.workers_peak = max(self.workers_peak, sum(map(_pss_mib, _children())))


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _children() -> list[int]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += map(int, (task / "children").read_text().split())
    return pids


def _pss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # the worker just exited
        return 0.0
    return int(next(line for line in text.splitlines() if line.startswith("Pss:")).split()[1]) / 1024


def run_ours(spec: dict, meter: Meter) -> None:
    """The `cyclestyle translate` command with its defaults."""
    from cyclestyle.cli import build_parser

    argv = ["translate", "--checkpoint", spec["checkpoint"], "--input", spec["input"],
            "--output", spec["output"], "--device", spec["device"], "--no-progress"]
    if spec.get("tile"):
        argv += ["--tile", str(spec["tile"])]
    if spec.get("workers") is not None:
        argv += ["--workers", str(spec["workers"])]
    args = build_parser().parse_args(argv)  # imports every command's module: not timed
    meter.start()
    assert args.func(args) == 0, "translate failed"


def run_naive(spec: dict, meter: Meter) -> None:
    """The reference CycleGAN test loop: one image at a time, start to finish."""
    from cyclestyle.checkpoint import load_generators
    from cyclestyle.imageio import pil_to_tensor, tensor_to_pil

    meter.start()
    generator = load_generators(spec["checkpoint"])[0].to(spec["device"]).eval()
    output = Path(spec["output"])
    output.mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(spec["input"]).iterdir()):
        real_a = pil_to_tensor(Image.open(source).convert("RGB"))[None].to(spec["device"])
        with torch.no_grad():
            fake_b = generator(real_a)  # G_AB(A)
        tensor_to_pil(fake_b[0]).save(output / source.name)


def run_one(spec: dict) -> dict:
    """Run one case in this process: seconds, images/s and memory peaks."""
    import cyclestyle.checkpoint  # noqa: F401  imports are not the run (for either method)
    import cyclestyle.models  # noqa: F401

    meter = Meter(spec["device"])
    (run_naive if spec["kind"] == "naive" else run_ours)(spec, meter)
    result = meter.stop()
    return {**result, "images_per_s": spec["images"] / result["seconds"]}


# ---------------------------------------------------------------------------- the cases


def throughput(root: Path, model: dict, size: int, count: int, repeats: int,
               device: str) -> dict:
    """`repeats` runs each of ours and naive on `count` photos of size x size, alternating."""
    inputs = write_photos(root / f"in_{size}", count, size, size)
    runs: dict[str, list[dict]] = {"ours": [], "naive": []}
    for rep in range(repeats):
        for kind in ("ours", "naive") if rep % 2 == 0 else ("naive", "ours"):
            output = root / f"out_{size}_{kind}"
            spec = {"kind": kind, "checkpoint": model["checkpoint"], "input": str(inputs),
                    "output": str(output), "device": device, "images": count}
            runs[kind].append(in_subprocess(__file__, spec))
            shutil.rmtree(output)
            print(f"{size}px {kind:5s} rep {rep + 1}/{repeats}: "
                  f"{runs[kind][-1]['images_per_s']:.2f} images/s", file=sys.stderr)
    result = {"image_size": size, "images_per_run": count, "runs_per_method": repeats}
    for kind, results in runs.items():
        rates = [r["images_per_s"] for r in results]
        result[kind] = {"median_images_per_s": round(statistics.median(rates), 3),
                        "min": round(min(rates), 3), "max": round(max(rates), 3),
                        **{k: max((r[k] for r in results if r[k] is not None), default=None)
                           for k in ("peak_rss_mib", "peak_workers_pss_mib",
                                     "peak_gpu_allocated_mib")}}
    result["speedup"] = round(result["ours"]["median_images_per_s"]
                              / result["naive"]["median_images_per_s"], 2)
    return result


def memory(root: Path, model: dict, width: int, height: int, tile: int | None,
           device: str) -> dict:
    """One width x height photo through translate_files in one process, tiled or not."""
    inputs = root / f"in_{width}x{height}"
    if not inputs.exists():
        write_photos(inputs, 1, width, height)
    spec = {"kind": "ours", "checkpoint": model["checkpoint"], "input": str(inputs),
            "output": str(root / "out_memory"), "device": device, "images": 1, "tile": tile,
            "workers": 0}
    result = in_subprocess(__file__, spec)
    shutil.rmtree(root / "out_memory")
    print(f"{width}x{height} tile={tile}: peak RSS {result['peak_rss_mib']:.0f} MiB, "
          f"{result['seconds']:.1f} s", file=sys.stderr)
    return {"image": f"{width}x{height}", "tile": tile,
            "tile_overlap": 64 if tile else None, "seconds": round(result["seconds"], 2),
            **{k: v for k, v in result.items() if k.startswith(("peak", "rss"))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny model, small images, one repetition")
    parser.add_argument("--model", choices=MODELS, help="generator config (default: demo, "
                        "or tiny with --quick)")
    parser.add_argument("--sizes", help="SIDE:IMAGES:RUNS,... throughput cases: images per "
                        "run, runs per method (default: 256:64:3,1024:8:2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tiling memory cases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_translate.json")
    parser.add_argument("--video", action="store_true", help="videos: frames/s of ours vs the "
                        "naive loop at 256p and 512p (scripts/bench_video.py --speed)")
    parser.add_argument("--checkpoint", help="--video: a trained run (default: the demo "
                        "generator with random weights)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.video:
        import bench_video  # scripts/ is this script's folder, first on sys.path

        bench_video.main(["--speed", "--out", args.out, *(["--quick"] if args.quick else []),
                          *(["--checkpoint", args.checkpoint] if args.checkpoint else [])])
        return
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    plan = QUICK if args.quick else FULL
    model_name = args.model or plan["model"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_checkpoint(root / "run", model_name)
        no_attention = make_checkpoint(root / "run_no_attention", model_name, attention=False)
        sizes = ([tuple(map(int, case.split(":"))) for case in args.sizes.split(",")]
                 if args.sizes else plan["sizes"])
        rates = [throughput(root, model, size, count, runs, args.device)
                 for size, count, runs in sizes]
        width, height = plan["memory_image"]
        peaks = [] if args.no_memory else [
            memory(root, no_attention, width, height, tile, args.device)
            for tile in (plan["tile"], None)]
    report = {"benchmark": "translate", "quick": args.quick, "torch": torch.__version__,
              "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "device": args.device,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "inputs": "shared photos" if PHOTOS.is_dir() else "synthetic", "format": "png",
              "model": {k: v for k, v in model.items() if k != "checkpoint"},
              "throughput": rates,
              "memory_model": {k: v for k, v in no_attention.items() if k != "checkpoint"},
              "memory_note": "the benchmark's generator without attention: global attention "
                             "over a whole 4000x3000 image would not fit in memory",
              "memory": peaks}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

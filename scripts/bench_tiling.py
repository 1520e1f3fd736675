#!/usr/bin/env python
"""How far tiled translation is from untiled, with per-tile vs whole-image statistics, and what
each costs: mean and 99th-percentile absolute difference in 8-bit levels against the untiled
output, seconds and peak RSS, written as JSON.

The image is a shared photo upscaled to 4000x3000 (LANCZOS); the generator is a trained
checkpoint with norm layers (`--checkpoint`, e.g. configs/demo.yaml trained for a few hundred
steps with `--set model.generator_args.norm=instance`: the demo's own generator has no norms,
so its tiles have no statistics to share and equal the untiled output), else that generator
with seeded random weights (then the numbers say little about a trained model). Cases, each in
its own process so its time and peak RSS are its own: untiled; `--tile` with each tile's own statistics; with whole-image statistics and 0, 1 and
2 calibration rounds (cyclestyle.translate.tiling.image_statistics). Timed: translating the
image (not loading the checkpoint). Precision fp32 by default, so differences are tiling's.
Also reported: per norm layer, how far the statistics of the downscaled pass are from those
of the full-resolution image (the untiled run's).

    .venv/bin/python scripts/bench_tiling.py --checkpoint runs/demo --out bench_tiling.json
    .venv/bin/python scripts/bench_tiling.py --quick --out /tmp/bench_tiling.json  # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import WITH_INSTANCE_NORM, host, in_subprocess, random_demo_checkpoint  # noqa: E402 (scripts/ on sys.path)
from PIL import Image

from cyclestyle.models.norm_stats import RecordStatistics

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared/data/photo2painting/photo/cut__etretat-normandy-france.jpg"
FULL = {"size": (4000, 3000), "tile": 1024}
QUICK = {"size": (640, 480), "tile": 256}
CASES = [("untiled", None, "image", 0), ("per-tile statistics", "tile", "tile", 0),
         ("whole-image statistics", "tile", "image", 0),
         ("whole-image, 1 calibration round", "tile", "image", 1),
         ("whole-image, 2 calibration rounds", "tile", "image", 2)]


def source_image(width: int, height: int) -> Image.Image:
    """The shared photo scaled to width x height, else a synthetic one (stated in the JSON)."""
    if PHOTO.is_file():
        return Image.open(PHOTO).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = 127 + 100 * np.sin(xx[..., None] / 53 + yy[..., None] / 71 + np.arange(3))
    return Image.fromarray(pixels.astype(np.uint8))


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def run_one(spec: dict) -> dict:
    """One case in this process: translate the image, save the uint8 output, time and RSS."""
    from cyclestyle.imageio import pil_to_tensor, to_uint8
    from cyclestyle.translate.translator import Translator

    translator = Translator.from_pretrained(
        spec["checkpoint"], device="cpu", precision=spec["precision"], tile=spec["tile"],
        tile_stats=spec["stats"], tile_calibration=spec["calibration"])
    image = pil_to_tensor(Image.open(spec["input"]).convert("RGB"))[None]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS from here: the checkpoint and imports are not the case
    start = time.perf_counter()
    if spec["tile"] is None:  # untiled: also keep the full-resolution statistics it used
        record = RecordStatistics()
        with torch.inference_mode():
            out = translator.forward(image, record).clamp(-1, 1)
        torch.save([(m.mean, m.var) for _, m in record.recorded], spec["output"] + ".stats")
    else:
        out = translator.translate_tensor(image)
    seconds = time.perf_counter() - start
    np.save(spec["output"], to_uint8(out[0]).numpy())  # (H, W, 3)
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(_peak_rss_mib(), 1)}


def statistics_error(spec: dict, full_stats: str) -> dict:
    """How far the downscaled pass's statistics are from the full-resolution image's, per norm
    layer: |mean difference| in standard deviations, and the ratio of standard deviations."""
    from cyclestyle.imageio import pil_to_tensor
    from cyclestyle.translate.tiling import downscale_to_tile
    from cyclestyle.translate.translator import Translator

    translator = Translator.from_pretrained(spec["checkpoint"], device="cpu",
                                            precision=spec["precision"])
    image = pil_to_tensor(Image.open(spec["input"]).convert("RGB"))[None]
    record = RecordStatistics()
    with torch.inference_mode():
        translator.forward(downscale_to_tile(image, spec["tile"]), record)
    mean_error, std_ratio = [], []
    for (mean, var), (_, small) in zip(torch.load(full_stats), record.recorded):
        mean_error.append(float(((small.mean - mean).abs() / var.sqrt().clamp(min=1e-6)).median()))
        std_ratio.append(float((small.var.sqrt() / var.sqrt().clamp(min=1e-6)).median()))
    return {"layers": len(mean_error),
            "median_abs_mean_error_in_stds": [round(e, 4) for e in mean_error],
            "median_std_ratio": [round(r, 4) for r in std_ratio]}


def difference(a: np.ndarray, b: np.ndarray) -> dict:
    levels = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"mean_abs_levels": round(float(levels.mean()), 2),
            "p99_abs_levels": float(np.percentile(levels, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained run folder or checkpoint (default: "
                        "configs/demo.yaml's generator with InstanceNorm, random weights)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 640x480, tile 256")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--out", default="bench_tiling.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    from cyclestyle.translate.translator import Translator

    plan = QUICK if args.quick else FULL
    print(f"host: {host()}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or random_demo_checkpoint(root / "run", WITH_INSTANCE_NORM)
        if not Translator.from_pretrained(checkpoint, device="cpu").has_statistics:
            print(f"bench_tiling: {checkpoint}: its generator has no norm layers, so tiles have "
                  "no statistics to share; train one with norms (see --help)", file=sys.stderr)
            sys.exit(2)
        source_image(*plan["size"]).save(root / "image.png", compress_level=1)
        results, outputs = [], {}
        for name, tiled, stats, calibration in CASES:
            spec = {"name": name, "checkpoint": checkpoint, "input": str(root / "image.png"),
                    "output": str(root / f"{len(results)}.npy"), "precision": args.precision,
                    "tile": plan["tile"] if tiled else None, "stats": stats,
                    "calibration": calibration}
            result = {"case": name, **in_subprocess(__file__, spec)}
            outputs[name] = np.load(spec["output"])
            if tiled:
                result.update(difference(outputs[name], outputs["untiled"]))
            results.append(result)
            print(json.dumps(result), file=sys.stderr)
        downscaled = statistics_error({**spec, "tile": plan["tile"]},
                                      str(root / "0.npy") + ".stats")
    report = {"benchmark": "tiling", "quick": args.quick, "host": host(),
              "image": f"{plan['size'][0]}x{plan['size'][1]}",
              "source": str(PHOTO.name) if PHOTO.is_file() else "synthetic",
              "tile": plan["tile"], "tile_overlap": 64, "precision": args.precision,
              "checkpoint": args.checkpoint or "configs/demo.yaml with InstanceNorm, random weights",
              "cases": results, "downscaled_statistics": downscaled}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

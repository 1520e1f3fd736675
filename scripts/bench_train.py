#!/usr/bin/env python
"""Seconds per training step and peak memory of our trainer, written as JSON.

Each case runs in its own subprocess so that its peak memory (RSS on CPU, max allocated on GPU)
is its own. Reported: median step time after warm-up steps, with min and max.

    .venv/bin/python scripts/bench_train.py --out bench_train.json
    .venv/bin/python scripts/bench_train.py --cases resnet9-fp32 --steps 5 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# Reference-sized networks: ResNet-9 + 70x70 PatchGAN (the CycleGAN paper) and our default
# unet_attn + the same PatchGAN, both at their default widths.
CASES = {
    "resnet9-fp32": ["model.generator=resnet", "model.generator_args={n_blocks: 9}",
                     "train.mixed_precision=no"],
    "resnet9-bf16": ["model.generator=resnet", "model.generator_args={n_blocks: 9}",
                     "train.mixed_precision=bf16"],
    "unet_attn-fp32": ["model.generator=unet_attn", "train.mixed_precision=no"],
    "unet_attn-bf16": ["model.generator=unet_attn", "train.mixed_precision=bf16"],
}


def run_case(name: str, size: int, batch: int, steps: int, warmup: int, threads: int) -> dict:
    from conftest import write_images

    from cyclestyle.config import load_config
    from cyclestyle.train import Trainer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dirs = write_images(tmp / "A", 8, 1, sizes=((size + 20, size + 30),)), write_images(
            tmp / "B", 8, 2, sizes=((size + 30, size + 20),))
        config = load_config(None, [
            f"data.domain_a={dirs[0]}", f"data.domain_b={dirs[1]}", f"output_dir={tmp / 'run'}",
            f"data.image_size={size}", "data.num_workers=0", f"train.batch_size={batch}",
            "model.discriminator=patchgan", "model.discriminator_args={n_layers: 3}",
            "loss.lambda_perceptual=0", "train.progress=false", *CASES[name]])
        trainer = Trainer(config)
        batches = [trainer.dataset[i] for i in range(batch)]
        micro = [{k: torch.stack([b[k] for b in batches]) for k in ("a", "b")}]
        cuda = trainer.accelerator.device.type == "cuda"
        times = []
        for i in range(warmup + steps):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            logs = trainer.train_step(micro)
            float(logs["g_total"])  # wait for the step's work, as a logged step would
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in trainer.accelerator.unwrap_model(trainer.nets.g_ab).parameters())
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "case": name, "image_size": size, "batch_size": batch, "threads": threads,
        "device": str(trainer.accelerator.device),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "generator_params": params, "steps_timed": steps, "warmup_steps": warmup,
        "median_s_per_step": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "images_per_s": batch / statistics.median(times),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "peak_gpu_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench_train.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.size, args.batch_size, args.steps, args.warmup,
                                  args.threads)))
        return
    results = []
    for name in args.cases.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--size", str(args.size), "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"case {name} failed:\n{proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{name:16s} {result['median_s_per_step']:.3f} s/step (median of {args.steps}), "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    report = {"benchmark": "train_step", "torch": torch.__version__, "machine": platform.machine(),
              "cpu_count": torch.get_num_threads(), "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Seconds per L-BFGS iteration: `cyclestyle.gatys` against the PyTorch tutorial's loop, as JSON.

The baseline re-implements the tutorial "Neural Transfer Using PyTorch" plainly: loss modules
inserted into an nn.Sequential copy of the VGG after the chosen layers, targets detached once,
the content image as the start, torch.optim.LBFGS with its defaults and the tutorial's closure
(clamp, zero_grad, forward, sum the modules' losses, backward). Both use the same VGG weights,
layers, image sizes and thread count, and run side by side in one process. An iteration is
timed from one iteration's start to the next (forward, backward and the L-BFGS update), after
warm-up iterations.

    .venv/bin/python scripts/bench_gatys.py --out bench_gatys.json
    .venv/bin/python scripts/bench_gatys.py --sizes 128 --iterations 5 --warmup 1
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cyclestyle.gatys.config import GatysConfig
from cyclestyle.gatys.transfer import GatysLoss, load_vgg, optimise
from cyclestyle.imageio import find_images, load_image, pil_to_tensor

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# ---- the tutorial, written out as it teaches it ----

class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


def tutorial_gram(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor) -> None:
        super().__init__()
        self.target = tutorial_gram(target_feature).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(tutorial_gram(x), self.target)
        return x


def tutorial_model(vgg, content, style, content_layers, style_layers):
    """nn.Sequential(preprocess, conv, relu, ..., loss modules), cut after the last loss."""
    model = nn.Sequential(copy.deepcopy(vgg.preprocess))
    content_losses, style_losses = [], []
    for name, layer in zip(vgg._run_names, copy.deepcopy(vgg.layers)):
        if isinstance(layer, nn.ReLU):
            layer = nn.ReLU(inplace=False)  # the tutorial's choice: in-place ReLUs break its losses
        model.add_module(name, layer)
        if name in content_layers:
            loss = ContentLoss(model(content).detach())
            model.add_module(f"content_loss_{name}", loss)
            content_losses.append(loss)
        if name in style_layers:
            loss = StyleLoss(model(style).detach())
            model.add_module(f"style_loss_{name}", loss)
            style_losses.append(loss)
    return model, content_losses, style_losses


class _Done(Exception):
    pass


def time_tutorial(vgg, content, style, layers, iterations, warmup) -> list[float]:
    model, content_losses, style_losses = tutorial_model(vgg, content, style, *layers)
    input_img = content.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    stamps: list[tuple[float, float]] = []

    def closure():
        stamps.append(_now())
        if len(stamps) > warmup + iterations:
            raise _Done
        with torch.no_grad():
            input_img.clamp_(-1, 1)  # the tutorial clamps to [0, 1]; our images are in [-1, 1]
        optimizer.zero_grad()
        model(input_img)
        style_score = sum(sl.loss for sl in style_losses) * 1e6
        content_score = sum(cl.loss for cl in content_losses) * 1
        loss = style_score + content_score
        loss.backward()
        return style_score + content_score

    try:
        while True:
            optimizer.step(closure)
    except _Done:
        pass
    return _intervals(stamps, warmup)


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _intervals(stamps: list[tuple[float, float]], warmup: int) -> list[tuple[float, float]]:
    """(wall, cpu) seconds of each iteration after the warm-up ones."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]


def time_ours(vgg, content, style, config, iterations, warmup) -> list[float]:
    loss_fn = GatysLoss(vgg, content, [style], config)
    stamps = [_now()]
    optimise(content, loss_fn, warmup + iterations, config,
             callback=lambda *_: stamps.append(_now()))
    return _intervals(stamps, warmup)


def square_image(path: Path, size: int) -> torch.Tensor:
    image = pil_to_tensor(load_image(path))[None]
    return F.interpolate(image, size=(size, size), mode="bicubic", antialias=True).clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating ours/tutorial runs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--content-layers", default="relu3_1")
    parser.add_argument("--style-layers", default="relu1_1,relu2_1,relu3_1")
    parser.add_argument("--vgg-weights", default=str(SHARED / "weights/vgg19_normalised_to_relu3_1.pth"))
    parser.add_argument("--data", default=str(SHARED / "data/photo2painting"))
    parser.add_argument("--out", default="bench_gatys.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = (tuple(args.content_layers.split(",")), tuple(args.style_layers.split(",")))
    # fp32 like the tutorial's loop (the config's default `auto` may pick bf16)
    config = GatysConfig(content_layers=list(layers[0]), style_layers=list(layers[1]),
                         precision="fp32")
    ours_vgg = load_vgg(config, args.vgg_weights)
    plain_vgg = copy.deepcopy(ours_vgg).to(memory_format=torch.contiguous_format)
    content_path = find_images(Path(args.data) / "photo")[0]
    style_path = find_images(Path(args.data) / "painting")[0]
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        content, style = square_image(content_path, size), square_image(style_path, size)
        ours, tutorial = [], []
        for _ in range(args.rounds):
            ours += time_ours(ours_vgg, content, style, config, args.iterations, args.warmup)
            tutorial += time_tutorial(plain_vgg, content, style, layers, args.iterations,
                                      args.warmup)
        row = {"size": size}
        for i, clock in enumerate(("wall", "cpu")):
            row[f"ours_{clock}_s_per_iter"] = statistics.median(t[i] for t in ours)
            row[f"tutorial_{clock}_s_per_iter"] = statistics.median(t[i] for t in tutorial)
            row[f"ratio_{clock}"] = row[f"ours_{clock}_s_per_iter"] / row[f"tutorial_{clock}_s_per_iter"]
        row.update(ours_wall_all=[t[0] for t in ours], tutorial_wall_all=[t[0] for t in tutorial])
        results.append(row)
        print(f"{size}x{size}: ours {row['ours_wall_s_per_iter']:.3f} s/it "
              f"(cpu {row['ours_cpu_s_per_iter']:.3f}), tutorial "
              f"{row['tutorial_wall_s_per_iter']:.3f} s/it (cpu "
              f"{row['tutorial_cpu_s_per_iter']:.3f}), ratio wall {row['ratio_wall']:.2f} "
              f"cpu {row['ratio_cpu']:.2f}", flush=True)
    report = {"benchmark": "gatys s per L-BFGS iteration (median; wall clock and process CPU "
              "time, the latter less disturbed by other load)", "threads": args.threads,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "content_layers": layers[0], "style_layers": layers[1],
              "vgg_weights": args.vgg_weights, "content": str(content_path),
              "style": str(style_path), "warmup": args.warmup, "iterations": args.iterations,
              "rounds": args.rounds, "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

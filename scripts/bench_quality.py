#!/usr/bin/env python
"""Translation quality at equal wall-clock budget: the reference CycleGAN update against ours.

Every contender trains on the same data for the same number of seconds (its own steps follow
from a speed probe: steps = budget / seconds per step, so each gets its full learning-rate
schedule), with the same seed policy, then translates the same held-out images.

    # task 1: the demo's photo -> cartoon task, whose true translations are known (PSNR/SSIM)
    # task 2: ../shared/data/photo2painting, held-out photos (KID/FID against the paintings,
    #         VGG style distances, content SSIM against the sources)
    .venv/bin/python scripts/bench_quality.py --budget 300 --out bench_quality.json
    .venv/bin/python scripts/bench_quality.py --quick      # a smoke run of a few seconds
    .venv/bin/python scripts/bench_quality.py --contenders reference,ours --tasks demo

Writes JSON (and, with --grids DIR, one image grid per task: rows of held-out inputs and each
contender's translations). Contenders run one after the other in this process: nothing else
heavy may run meanwhile (2 cores; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "scripts"))

from bench_common import host  # noqa: E402 (scripts/ on sys.path)

from cyclestyle.imageio import load_image, pil_to_tensor, to_uint8  # noqa: E402


@dataclass
class Contender:
    name: str
    overrides: list[str] = field(default_factory=list)  # --set values over configs/demo.yaml
    reference_width: int = 0  # > 0: the reference update (scripts/reference_cyclegan.py)
    note: str = ""


def contenders(vgg_prefix: Path | None) -> dict[str, Contender]:
    """Ours is configs/demo.yaml; each other "ours" row changes one thing from it."""
    content = ([f"loss.vgg_weights={vgg_prefix}", "loss.lambda_content=1.0"] if vgg_prefix else [])
    # DiffAugment without its colour policy: the demo's cartoon is a change of colour, which
    # random brightness/saturation/contrast on D's inputs would teach D to ignore.
    aug, r1 = ["train.diff_augment=[translation,cutout]"], ["loss.r1_gamma=1.0"]
    table = {
        "reference": Contender("reference", reference_width=64,
                               note="ResNet-9, ngf 64, paper losses, batch 1 (11.4 M params)"),
        "reference-small": Contender("reference-small", reference_width=12,
                                     note="ResNet-9 at ngf 12: about our parameter count"),
        "ours": Contender("ours", note="configs/demo.yaml"),
        "ours-cyclegan": Contender("ours-cyclegan", ["model.objective=cyclegan"],
                                   note="the cycle objective (two generators) instead of CUT"),
        "ours-direct": Contender("ours-direct", ["model.generator_args.input_skip=false"],
                                 note="no input skip in the generator's head"),
        "ours-g-instancenorm": Contender(
            "ours-g-instancenorm", ["model.generator_args.norm=instance"],
            note="InstanceNorm in the generator (the demo model until 2026-12-06)"),
        "ours-d-instancenorm": Contender(
            "ours-d-instancenorm", ["model.discriminator_args.norm=instance",
                                    "model.discriminator_args.spectral_norm=false"],
            note="the reference discriminator's InstanceNorm instead of spectral norm"),
        "ours+fastcut": Contender("ours+fastcut", ["model.objective=fastcut"]),
        "ours-no-ema": Contender("ours-no-ema", ["train.ema_decay=0"],
                                 note="the trained weights instead of their EMA"),
        "ours+diffaug": Contender("ours+diffaug", aug),
        "ours+r1": Contender("ours+r1", r1),
        "ours+all": Contender("ours+all", aug + r1 + content),
    }
    if content:
        table["ours+content"] = Contender("ours+content", content,
                                          note="VGG distance between translation and source")
    return table


# --- tasks ----------------------------------------------------------------------------------

@dataclass
class Task:
    name: str
    train_a: Path
    train_b: Path
    held_out: list[Path]  # A images to translate
    truths: list[Path] | None = None  # their true translations (task 1)
    real_b: Path | None = None  # real B images for KID/FID/style (task 2)


def demo_task(root: Path, quick: bool) -> Task:
    from cyclestyle.train import demo

    if quick:
        demo.TRAIN_PHOTOS = demo.TRAIN_PHOTOS[:2]
    dirs = demo.build_dataset(root / "demo", per_photo=4 if quick else 40,
                              held_out_per_photo=2 if quick else 12)
    names = sorted(p.name for p in dirs["testA"].iterdir())
    return Task("demo", dirs["trainA"], dirs["trainB"], [dirs["testA"] / n for n in names],
                truths=[dirs["testB_true"] / n for n in names])


def photo2painting_task(root: Path, held_out: int) -> Task | None:
    photos, paintings = SHARED / "data/photo2painting/photo", SHARED / "data/photo2painting/painting"
    if not photos.is_dir():
        print(f"task photo2painting skipped: {photos} is absent", file=sys.stderr)
        return None
    from cyclestyle.imageio import find_images

    files = find_images(photos)
    rng = random.Random(0)
    test = sorted(rng.sample(files, held_out))
    train_dir = root / "p2p_trainA"
    train_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f not in test:
            (train_dir / f.name).symlink_to(f.resolve())
    return Task("photo2painting", train_dir, paintings, test, real_b=paintings)


# --- training -------------------------------------------------------------------------------

def our_config(task: Task, out: Path, contender: Contender, steps: int, seed: int, size: int,
               quick: bool):
    from cyclestyle.train.config import load_config

    overrides = [f"data.domain_a={task.train_a}", f"data.domain_b={task.train_b}",
                 f"output_dir={out}", f"train.max_steps={steps}", f"train.seed={seed}",
                 "train.progress=false", f"train.checkpoint_every={max(steps, 1)}",
                 f"train.sample_every={max(steps, 1)}", "data.num_workers=0",
                 f"data.image_size={size}", f"data.load_size={round(size * 72 / 64)}",
                 *contender.overrides]
    if quick:
        overrides += ["model.generator_args.base_channels=8", "train.batch_size=1"]
    return load_config(REPO / "configs" / "demo.yaml", overrides)


def train_ours(task: Task, out: Path, contender: Contender, budget: float, seed: int, size: int,
               quick: bool) -> tuple[torch.nn.Module, dict]:
    from cyclestyle.checkpoint import load_generators
    from cyclestyle.train.trainer import Trainer

    probe_steps = 2 if quick else 6
    probe = Trainer(our_config(task, out / "probe", contender, probe_steps, seed, size, quick))
    started = time.perf_counter()
    probe.fit()
    per_step = (time.perf_counter() - started) / probe_steps
    steps = max(1, int(budget / per_step))
    config = our_config(task, out / "run", contender, steps, seed, size, quick)
    trainer = Trainer(config)
    started = time.perf_counter()
    path = trainer.fit()
    seconds = time.perf_counter() - started
    g_ab, _, _ = load_generators(path)  # EMA weights when the run kept them
    images = steps * config.train.batch_size
    return g_ab, {"steps": steps, "seconds": round(seconds, 1), "images_seen": images,
                  "precision": trainer.precision, "params": _params(g_ab)}


def train_reference(task: Task, contender: Contender, budget: float, seed: int, size: int
                    ) -> tuple[torch.nn.Module, dict]:
    """The reference update at batch 1 on our data stream, for `budget` seconds (fp32)."""
    import reference_cyclegan as ref

    from cyclestyle.train.data import UnpairedDataset, find_domain_images

    torch.manual_seed(seed)
    random.seed(seed)
    model = ref.ReferenceCycleGAN()
    if contender.reference_width != 64:
        width = contender.reference_width
        model.netG_A = ref.init_weights(ref.ResnetGenerator(ngf=width))
        model.netG_B = ref.init_weights(ref.ResnetGenerator(ngf=width))
        model.optimizer_G = torch.optim.Adam([*model.netG_A.parameters(),
                                              *model.netG_B.parameters()], lr=2e-4,
                                             betas=(0.5, 0.999))
    files_a, files_b = find_domain_images(str(task.train_a), str(task.train_b), "", "train")
    data = UnpairedDataset(files_a, files_b, size, load_size=round(size * 72 / 64), seed=seed)
    total = _reference_steps(model, data, budget)
    # The reference schedule: constant, then linear decay over the second half.
    schedule = [torch.optim.lr_scheduler.LambdaLR(opt, lambda s, n=total: min(1.0, 2 * (1 - s / n)))
                for opt in (model.optimizer_G, model.optimizer_D)]
    started = time.perf_counter()
    for step in range(total):
        item = data[step]
        model.set_input(item["a"][None], item["b"][None])
        model.optimize_parameters()
        for sched in schedule:
            sched.step()
    seconds = time.perf_counter() - started
    return model.netG_A.eval(), {"steps": total, "seconds": round(seconds, 1),
                                 "images_seen": total, "precision": "fp32",
                                 "params": _params(model.netG_A)}


def _reference_steps(model, data, budget: float) -> int:
    probe = 5
    state = [{k: v.clone() for k, v in net.state_dict().items()}
             for net in (model.netG_A, model.netG_B, model.netD_A, model.netD_B)]
    started = time.perf_counter()
    for step in range(probe):
        item = data[10_000 + step]
        model.set_input(item["a"][None], item["b"][None])
        model.optimize_parameters()
    per_step = (time.perf_counter() - started) / probe
    for net, saved in zip((model.netG_A, model.netG_B, model.netD_A, model.netD_B), state):
        net.load_state_dict(saved)  # the probe's updates do not count
    model.optimizer_G.state.clear()
    model.optimizer_D.state.clear()
    return max(1, int(budget / per_step))


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- scoring --------------------------------------------------------------------------------

@torch.no_grad()
def translate(g_ab: torch.nn.Module, paths: list[Path], size: int) -> list[np.ndarray]:
    g_ab = g_ab.eval().float()
    out = []
    for path in paths:
        image = load_image(path)
        scale = size / min(image.size)
        image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
        x = pil_to_tensor(image)[None]
        out.append(to_uint8(g_ab(x).clamp(-1, 1))[0].numpy())
    return out


def score_demo(task: Task, translated: list[np.ndarray]) -> dict:
    from cyclestyle.train.demo import score

    truths = [np.asarray(load_image(p)) for p in task.truths]
    return score(translated, truths)


def score_photo2painting(task: Task, translated: list[np.ndarray], out: Path) -> dict:
    from cyclestyle.metrics import EvaluateOptions, evaluate

    fake = out / "translated"
    fake.mkdir(parents=True, exist_ok=True)
    sources = out / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    for path, pixels in zip(task.held_out, translated):
        Image.fromarray(pixels).save(fake / f"{path.stem}.png")
        load_image(path).resize(pixels.shape[1::-1]).save(sources / f"{path.stem}.png")
    inception = SHARED / "weights/inception-2015-12-05-torchscript.pt"
    vgg = SHARED / "weights/vgg19_normalised_to_relu3_1.pth"
    options = EvaluateOptions(inception_weights=str(inception), vgg_weights=str(vgg),
                              use_cache=False, lpips=False, kid_subsets=50)
    results = evaluate(str(task.real_b), str(fake), str(sources), None, str(out / "eval"), options)
    return _flatten_metrics(results)


def _flatten_metrics(results: dict, prefix: str = "") -> dict:
    """Every number of evaluate's metrics as a dotted key: kid.mean_x1e3, style.gram.sum, ..."""
    flat = {}
    for name, value in results.get("metrics", results).items():
        if isinstance(value, dict):
            flat |= _flatten_metrics(value, f"{prefix}{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{name}"] = value
    return flat


GRID_PAD = 2  # pixels between a grid's rows, and around it


def save_grid(task: Task, rows: dict[str, list[np.ndarray]], path: Path,
              count: int = 6) -> dict:
    """Labelled rows of `count` held-out images: the inputs, their true translations (task 1),
    then each contender's translations."""
    from cyclestyle.imageio import make_grid_image, pil_to_tensor, save_image_atomic

    side = 64

    def row(images: list) -> torch.Tensor:
        return torch.stack([pil_to_tensor(Image.fromarray(np.asarray(x)).resize(
            (side, side), Image.Resampling.BICUBIC)) for x in images[:count]])

    lines = {"input": [load_image(p) for p in task.held_out[:count]]}
    if task.truths:
        lines["true translation"] = [load_image(p) for p in task.truths[:count]]
    lines |= rows
    save_image_atomic(make_grid_image([row(x) for x in lines.values()], list(lines),
                                      label_width=130, pad=GRID_PAD), path)
    return {"path": str(path), "shared_rows": len(lines) - len(rows), "row_height": side}


def stack_grids(grids: list[dict], path: Path) -> None:
    """One grid from several runs' grids of the same task: the first whole, the others
    without the rows they share with it (inputs, true translations)."""
    from cyclestyle.imageio import save_image_atomic

    parts = []
    for i, grid in enumerate(grids):
        image = Image.open(grid["path"]).convert("RGB")
        top = 0 if i == 0 else GRID_PAD + grid["shared_rows"] * (grid["row_height"] + GRID_PAD)
        parts.append(image.crop((0, top, image.width, image.height)))
    canvas = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height
    save_image_atomic(canvas, path)


# --- the table ------------------------------------------------------------------------------

COLUMNS = {"demo": [("psnr", "PSNR dB", 2), ("ssim", "SSIM", 3)],
           "photo2painting": [("kid.mean_x1e3", "KID x1e3", 2), ("kid.std_x1e3", "± (std)", 2),
                              ("fid.value", "FID", 1), ("style.gram.sum", "style Gram", 2),
                              ("content.ssim", "content SSIM", 3)]}


def markdown(report: dict) -> str:
    """One table per task: each contender's scores (mean over seeds, ± their std where there
    are several), steps, images seen and seconds."""
    lines = [f"Host: cpu {report['host']['cpu_capability']}, {report['host']['threads']} threads, "
             f"budget {report['budget_s']:.0f} s per contender and task.", ""]
    for task, results in report["tasks"].items():
        columns = COLUMNS.get(task, [])
        lines += [f"**{task}**", "",
                  "| contender | " + " | ".join(c[1] for c in columns) + " | seeds | steps | images seen | s |",
                  "|---" * (len(columns) + 5) + "|"]
        bar_first = sorted(results, key=lambda name: name != "untranslated")  # stable sort
        for name in bar_first:
            runs = results[name]["runs"]
            cells = [_cell([r.get(key) for r in runs], digits) for key, _, digits in columns]
            info = [len(runs), _cell([r.get("steps") for r in runs], 0),
                    _cell([r.get("images_seen") for r in runs], 0), _cell([r.get("seconds") for r in runs], 0)]
            lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(map(str, info)) + " |")
        lines.append("")
    return "\n".join(lines)


def merge_reports(paths: list[Path], out: Path, table: Path | None,
                  grids: Path | None = None) -> int:
    reports = [json.loads(p.read_text()) for p in paths]
    merged = {**reports[0], "tasks": {}, "grids": {}, "merged_from": [str(p) for p in paths]}
    for report in reports:
        for task, results in report["tasks"].items():
            merged["tasks"].setdefault(task, {}).update(results)
    if grids:
        for task in merged["tasks"]:
            parts = [r["grids"][task] for r in reports if task in r.get("grids", {})]
            if parts:
                path = grids / f"quality_{task}.png"
                stack_grids(parts, path)
                merged["grids"][task] = {**parts[0], "path": str(path)}
    out.write_text(json.dumps(merged, indent=1))
    text = markdown(merged)
    print(text)
    if table:
        table.write_text(text)
    return 0


def _cell(values: list, digits: int) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return ""
    mean = sum(values) / len(values)
    if len(values) == 1 or digits == 0:
        return f"{mean:.{digits}f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --- the run --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300.0,
                        help="training seconds per contender and task (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per contender")
    parser.add_argument("--tasks", default="demo,photo2painting")
    parser.add_argument("--contenders", default="",
                        help="comma-separated names (default: all; the untranslated inputs are "
                             "always scored, and 'untranslated' alone trains nothing)")
    parser.add_argument("--size", type=int, default=64, help="training crop (default: 64)")
    parser.add_argument("--held-out", type=int, default=8,
                        help="photos held out in task 2 (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds, tiny models")
    parser.add_argument("--grids", type=Path,
                        help="folder for one sample grid per task (with --merge: the reports' "
                             "grids stacked into one per task)")
    parser.add_argument("--out", type=Path, default=Path("bench_quality.json"))
    parser.add_argument("--table", type=Path, help="also write the markdown tables here")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="combine earlier reports (e.g. contenders run in two processes side "
                             "by side) into --out and --table, training nothing")
    args = parser.parse_args(argv)
    if args.merge:
        return merge_reports(args.merge, args.out, args.table, args.grids)
    budget = 2.0 if args.quick else args.budget
    vgg = SHARED / "weights/vgg19_normalised_to_relu3_1.pth"
    table = contenders(vgg if vgg.is_file() else None)
    names = [n for n in args.contenders.split(",") if n] or list(table)
    if args.quick and not args.contenders:
        names = ["reference-small", "ours", "ours+all"]
    names = [n for n in names if n != "untranslated"]  # always scored (alone: nothing trains)
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"--contenders: {','.join(unknown)} unknown; valid: {','.join(table)}")
    report = {"host": host(), "budget_s": budget, "size": args.size, "quick": args.quick,
              "tasks": {}, "grids": {}}
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        root = Path(tmp)
        tasks = []
        for name in args.tasks.split(","):
            task = (demo_task(root, args.quick) if name == "demo"
                    else photo2painting_task(root, 2 if args.quick else args.held_out))
            if task is not None:
                tasks.append(task)
        for task in tasks:
            results, grids = {}, {}
            for name in names:
                contender = table[name]
                runs = []
                for seed in range(args.seeds):
                    out = root / task.name / name / str(seed)
                    if contender.reference_width:
                        g_ab, info = train_reference(task, contender, budget, seed, args.size)
                    else:
                        g_ab, info = train_ours(task, out, contender, budget, seed, args.size,
                                                args.quick)
                    translated = translate(g_ab, task.held_out, args.size)
                    scores = (score_demo(task, translated) if task.truths else
                              score_photo2painting(task, translated, out))
                    runs.append({"seed": seed, **info, **scores})
                    grids.setdefault(name, translated)
                    print(f"{task.name:15s} {name:16s} seed {seed}: {json.dumps(runs[-1])}",
                          flush=True)
                results[name] = {"note": contender.note, "overrides": contender.overrides,
                                 "runs": runs}
            # The untranslated inputs, scored the same way: the bar, and what a generator
            # that copies its input would score.
            inputs = translate(torch.nn.Identity(), task.held_out, args.size)
            results["untranslated"] = {"runs": [
                score_demo(task, inputs) if task.truths else
                score_photo2painting(task, inputs, root / task.name / "untranslated")]}
            report["tasks"][task.name] = results
            if args.grids:
                report["grids"][task.name] = save_grid(task, grids,
                                                       args.grids / f"quality_{task.name}.png")
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    table = markdown(report)
    print(table)
    if args.table:
        args.table.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

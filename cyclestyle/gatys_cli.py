"""`cyclestyle gatys`: neural style for one pair, a blend of styles, or content x style batches.

The optimisation itself is `cyclestyle.gatys`; this module plans the runs (which outputs, never
over an input), loads images, shows progress and writes images and JSON loss logs atomically.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cyclestyle.atomic import atomic_write
from cyclestyle.gatys import (
    OPTIMIZERS,
    PRECISIONS,
    GatysConfig,
    blend_weights,
    finish,
    load_vgg,
    resize_longest,
    transfer,
)
from cyclestyle.imageio import (
    IMAGE_EXTENSIONS,
    find_images,
    load_image,
    pil_to_tensor,
    tensor_to_pil,
)
from cyclestyle.samples import save_image_atomic
from cyclestyle.vgg import VGGFeatures

__all__ = ["add_parser", "plan_jobs", "run_cli"]


@dataclass
class _Job:
    content: Path
    styles: list[Path]
    output: Path  # the image; the JSON log and snapshots go beside it


def _images(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """Files as given, folders expanded (recursively); also whether any folder was given."""
    found, folder = [], False
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found += find_images(path)
            folder = True
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image {str(path)!r} does not exist")
    return found, folder


def plan_jobs(contents: Sequence[str], styles: Sequence[str], output: str,
              blend: Sequence[float] | None, protected: Sequence[Path] = ()) -> list[_Job]:
    """Pairs to run. Several style *files* blend into one style; a style *folder* means one run
    per style. One content and one (blended) style write to `output` when it names an image
    file; otherwise `output` is a folder of `content__style.png` files."""
    content_paths, _ = _images(contents)
    style_paths, style_folder = _images(styles)
    if style_folder and blend is not None:
        raise ValueError("--style-weights blends several style files; it cannot be used with a "
                         "style folder (which runs each style separately)")
    style_sets = [[p] for p in style_paths] if style_folder else [style_paths]
    out = Path(output).expanduser()
    single = len(content_paths) == 1 and len(style_sets) == 1
    if single and out.suffix.lower() in IMAGE_EXTENSIONS:
        jobs = [_Job(content_paths[0], style_sets[0], out)]
    else:
        if out.suffix.lower() in IMAGE_EXTENSIONS:
            raise ValueError(f"--output {str(out)!r} names an image file, but this run makes "
                             f"{len(content_paths) * len(style_sets)} images; give a folder")
        jobs = [_Job(c, s, out / f"{c.stem}__{'+'.join(p.stem for p in s)}.png")
                for c in content_paths for s in style_sets]
    _refuse_overwriting_inputs(jobs, [*content_paths, *style_paths, *protected])
    return jobs


def _refuse_overwriting_inputs(jobs: Sequence[_Job], inputs: Sequence[Path]) -> None:
    inputs_real = {os.path.realpath(p) for p in inputs}
    for job in jobs:
        for written in (job.output, job.output.with_suffix(".json")):
            if os.path.realpath(written) in inputs_real:
                raise ValueError(f"output {str(written)!r} would overwrite an input image; "
                                 "choose another --output")
    names = [os.path.realpath(j.output) for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("two inputs share a file name stem, so their outputs would collide; "
                         "rename them or run them separately")


def _load(path: Path, device: torch.device) -> Tensor:
    return pil_to_tensor(load_image(path))[None].to(device)


def _run_job(job: _Job, vgg: VGGFeatures, config: GatysConfig, blend, init, device, bar) -> None:
    content = _load(job.content, device)
    styles = [_load(p, device) for p in job.styles]
    log = {"content": str(job.content), "styles": [str(p) for p in job.styles],
           "style_blend": blend_weights(len(styles), blend), "config": asdict(config),
           "steps": []}
    last_stage = len(config.sizes) - 1
    stage_iterations = config.stage_iterations()

    def callback(stage: int, iteration: int, image: Tensor, parts: dict[str, Tensor]) -> None:
        bar.update(1)
        end = iteration == stage_iterations[stage]
        if not (end or (config.save_every and iteration % config.save_every == 0)):
            return
        values = {k: float(v) for k, v in parts.items()}
        log["steps"].append({"stage": stage, "size": config.sizes[stage],
                             "iteration": iteration, **values})
        bar.set_postfix(loss=f"{values['total']:.4g}")
        if config.save_every and not (end and stage == last_stage):
            content_now = resize_longest(content, config.sizes[stage])
            snapshot = finish(image, content_now, config)[0]
            name = f"{job.output.stem}_s{stage}_{iteration:05d}{job.output.suffix}"
            save_image_atomic(tensor_to_pil(snapshot), job.output.with_name(name))

    result = transfer(vgg, content, styles, config, blend, init, callback)
    save_image_atomic(tensor_to_pil(result[0]), job.output)
    _write_json_atomic(log, job.output.with_suffix(".json"))


def _write_json_atomic(data: dict, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1)


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, "
                                             f"got {text!r}") from err
    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d = GatysConfig()
    p = subparsers.add_parser(
        "gatys", help="classic optimisation-based neural style (Gatys et al. 2015)",
        description="Optimise an image so its VGG features match the content image's and its "
        "Gram matrices match the style's. Several --style files blend (--style-weights); a "
        "folder of contents or styles runs every content x style pair into the --output "
        "folder as content__style.png, each with a JSON log of its losses.")
    a = p.add_argument
    a("--content", action="append", required=True, metavar="IMG", help="content image or "
      "folder (repeatable)")
    a("--style", action="append", required=True, metavar="IMG", help="style image or folder "
      "(repeatable; several files blend into one style)")
    a("--style-weights", type=_csv(float), metavar="W1,W2", help="blend weights of the style "
      "files (default: equal)")
    a("--output", required=True, help="output image (one pair) or folder")
    a("--size", type=int, default=d.sizes[-1], help="longest side of the output (default: "
      "%(default)s)")
    a("--scales", type=_csv(int), metavar="S1,S2,..", help="coarse-to-fine longest sides, e.g. "
      "256,512,1024; overrides --size")
    a("--style-scale", type=float, default=d.style_scale, help="style size relative to the "
      "output (default: %(default)s)")
    a("--iterations", type=_csv(int), default=d.iterations, metavar="N[,N..]", help="iterations"
      " (one per scale, or one for all; default: 500)")
    a("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    a("--lbfgs-history", type=int, default=d.lbfgs_history, help="L-BFGS history size")
    a("--learning-rate", type=float, default=d.learning_rate, help="Adam step size")
    a("--init", default=d.init, help="content, random, or an image path (default: content)")
    a("--content-weight", type=float, default=d.content_weight)
    a("--style-weight", type=float, default=d.style_weight)
    a("--tv-weight", type=float, default=d.tv_weight)
    a("--content-layers", type=_csv(str), default=d.content_layers, metavar="L1,..",
      help="default: " + ",".join(d.content_layers))
    a("--style-layers", type=_csv(str), default=d.style_layers, metavar="L1,..",
      help="default: " + ",".join(d.style_layers))
    a("--original-colors", action="store_true", help="keep the content's colours (transfer "
      "luminance only)")
    a("--match-color", action="store_true", help="recolour the style to the content's colour "
      "mean and covariance first")
    a("--vgg-weights", default="torchvision", help="torchvision, or a VGG19 state dict file "
      "(torchvision or normalised-VGG layout)")
    a("--seed", type=int, default=d.seed)
    a("--save-every", type=int, default=0, metavar="N", help="also log losses and save a "
      "snapshot every N iterations")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    a("--precision", choices=PRECISIONS, default=d.precision, help="VGG autocast precision")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    config = GatysConfig(
        content_layers=args.content_layers, style_layers=args.style_layers,
        content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, sizes=args.scales or (args.size,),
        iterations=args.iterations, style_scale=args.style_scale,
        original_colors=args.original_colors, match_color=args.match_color,
        optimizer=args.optimizer, lbfgs_history=args.lbfgs_history,
        learning_rate=args.learning_rate, init=args.init, seed=args.seed,
        precision=args.precision, save_every=args.save_every)
    config.validate()
    init_path = None if args.init in ("content", "random") else Path(args.init)
    if init_path is not None and not init_path.is_file():
        raise FileNotFoundError(f"--init {args.init!r} is neither 'content', 'random' nor an "
                                "existing image file")
    jobs = plan_jobs(args.content, args.style, args.output, args.style_weights,
                     [init_path] if init_path else [])
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)
    vgg = load_vgg(config, args.vgg_weights, device)
    init = _load(init_path, device) if init_path else args.init
    total = len(jobs) * sum(config.stage_iterations())
    with tqdm(total=total, unit="it", desc="gatys", dynamic_ncols=True) as bar:
        for job in jobs:
            bar.set_description(job.output.name)
            _run_job(job, vgg, config, args.style_weights, init, device, bar)
    print(f"wrote {len(jobs)} image(s): " + (str(jobs[0].output) if len(jobs) == 1
                                             else str(jobs[0].output.parent)))
    return 0

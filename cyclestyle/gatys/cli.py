"""`cyclestyle gatys`: neural style for one pair, a blend of styles, or content x style batches.

The optimisation itself is `cyclestyle.gatys`; this module plans the runs (which outputs, never
over an input), loads images, shows progress and writes images and JSON loss logs atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cyclestyle.gatys.config import GatysConfig
from cyclestyle.imageio import IMAGE_EXTENSIONS, find_images
from cyclestyle.options import add_dataclass_arguments, dataclass_from_args, list_parser

if TYPE_CHECKING:  # torch, torchvision and tqdm load in run_cli: `--help` stays instant
    import torch
    from torch import Tensor

    from cyclestyle.models.vgg import VGGFeatures

__all__ = ["add_parser", "plan_jobs", "run_cli"]

log = logging.getLogger(__name__)


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
    from cyclestyle.imageio import load_image, pil_to_tensor

    return pil_to_tensor(load_image(path))[None].to(device)


def _run_job(job: _Job, vgg: VGGFeatures, config: GatysConfig, blend, init, device, bar) -> None:
    from cyclestyle.gatys.transfer import blend_weights, finish, resize_longest, transfer
    from cyclestyle.imageio import save_image_atomic, tensor_to_pil

    content = _load(job.content, device)
    styles = [_load(p, device) for p in job.styles]
    record = {"content": str(job.content), "styles": [str(p) for p in job.styles],
              "style_blend": blend_weights(len(styles), blend), "config": dataclasses.asdict(config),
              "steps": []}
    last_stage = len(config.sizes) - 1
    stage_iterations = config.stage_iterations()

    def callback(stage: int, iteration: int, image: Tensor, parts: dict[str, Tensor]) -> None:
        bar.update(1)
        end = iteration == stage_iterations[stage]
        if not (end or (config.save_every and iteration % config.save_every == 0)):
            return
        values = {k: float(v) for k, v in parts.items()}
        record["steps"].append({"stage": stage, "size": config.sizes[stage],
                                "iteration": iteration, **values})
        bar.set_postfix(loss=f"{values['total']:.4g}")
        if config.save_every and not (end and stage == last_stage):
            content_now = resize_longest(content, config.sizes[stage])
            snapshot = finish(image, content_now, config)[0]
            name = f"{job.output.stem}_s{stage}_{iteration:05d}{job.output.suffix}"
            save_image_atomic(tensor_to_pil(snapshot), job.output.with_name(name))

    result = transfer(vgg, content, styles, config, blend, init, callback)
    save_image_atomic(tensor_to_pil(result[0]), job.output)
    _write_json_atomic(record, job.output.with_suffix(".json"))


def _write_json_atomic(data: dict, path: Path) -> None:
    from cyclestyle.atomic import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1)


class _OneStage(argparse.Action):
    """`--size N`: one stage at longest side N, unless --scales is given (before or after)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if getattr(namespace, self.dest) is parser.get_default(self.dest):  # no --scales yet
            setattr(namespace, self.dest, [values])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
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
    a("--style-weights", type=list_parser(float), metavar="W1,W2",
      help="blend weights of the style files (default: equal)")
    a("--output", required=True, help="output image (one pair) or folder")
    a("--vgg-weights", default="torchvision", help="torchvision, or a VGG19 state dict file "
      "(torchvision or normalised-VGG layout) (default: %(default)s)")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ... "
      "(default: %(default)s)")
    add_dataclass_arguments(p, GatysConfig)
    # After --scales, whose default _OneStage compares against.
    a("--size", dest="sizes", type=int, action=_OneStage, default=argparse.SUPPRESS,
      metavar="N", help="one stage at longest side N: --scales N (--scales wins)")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    config: GatysConfig = dataclass_from_args(GatysConfig, args)
    config.validate()  # before torch loads: a bad option fails at once
    init_path = None if args.init in ("content", "random") else Path(args.init)
    if init_path is not None and not init_path.is_file():
        raise FileNotFoundError(f"--init {args.init!r} is neither 'content', 'random' nor an "
                                "existing image file")
    jobs = plan_jobs(args.content, args.style, args.output, args.style_weights,
                     [init_path] if init_path else [])
    import torch
    from tqdm.auto import tqdm

    from cyclestyle.gatys.transfer import blend_weights, load_vgg
    from cyclestyle.runtime import bar_interval, describe_precision, resolve_precision

    for job in jobs:  # a blend that does not fit fails before the VGG loads
        blend_weights(len(job.styles), args.style_weights)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    precision, reason = resolve_precision(config.precision, device)
    log.info("precision: %s", describe_precision(precision, reason))
    config = dataclasses.replace(config, precision=precision)
    torch.manual_seed(config.seed)
    vgg = load_vgg(config, args.vgg_weights, device)
    init = _load(init_path, device) if init_path else args.init
    total = len(jobs) * sum(config.stage_iterations())
    with tqdm(total=total, unit="it", desc="gatys", dynamic_ncols=True,
              mininterval=bar_interval()) as bar:
        for job in jobs:
            bar.set_description(job.output.name)
            _run_job(job, vgg, config, args.style_weights, init, device, bar)
    print(f"wrote {len(jobs)} image(s): " + (str(jobs[0].output) if len(jobs) == 1
                                             else str(jobs[0].output.parent)))
    return 0

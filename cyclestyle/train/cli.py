"""`cyclestyle train`, `cyclestyle demo`, `cyclestyle models` and `cyclestyle report`.

Only argparse at import time: the heavy modules load when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import textwrap

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_demo(sub)
    _add_models(sub)
    _add_report(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from cyclestyle.train.config import flat_keys

    p = sub.add_parser(
        "train", help="train a CycleGAN translator between two folders of images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Train G_AB: A -> B and G_BA: B -> A from two unpaired image folders.

            Example:
              cyclestyle train configs/tiny.yaml --set data.domain_a=photos \\
                  --set data.domain_b=paintings --set output_dir=runs/p2p

            The run folder gets config.yaml (the resolved config), metrics.jsonl,
            samples/step_*.png and checkpoints/step_*.pt. Interrupt with Ctrl-C or SIGTERM:
            the current step finishes and a checkpoint is written; continue with --resume.
            Several processes or GPUs: `accelerate launch -m cyclestyle.cli train ...`.
            """),
        epilog="config keys (for --set): " + ", ".join(flat_keys()))
    p.add_argument("config", nargs="?", help="YAML config file (e.g. configs/tiny.yaml); "
                   "omitted: the built-in defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_steps=1000 (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in output_dir, or from CHECKPOINT")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit without training")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from cyclestyle.train.config import load_config

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    import os

    from cyclestyle.imageio import set_max_image_pixels
    from cyclestyle.train.config import resolve_epochs
    from cyclestyle.train.data import find_domain_images

    data = config.data
    files_a, files_b = find_domain_images(data.domain_a, data.domain_b, data.root,
                                          data.split)  # before any network
    # train.epochs -> steps; WORLD_SIZE is set by `accelerate launch` (and torchrun).
    resolve_epochs(config, max(len(files_a), len(files_b)), int(os.environ.get("WORLD_SIZE", 1)))
    set_max_image_pixels(data.max_image_pixels)  # DataLoader workers inherit it
    from cyclestyle.train.trainer import train

    try:
        path = train(config, resume=args.resume)
    except OSError as err:  # a full disk, a read-only output_dir: a message, not a traceback
        if isinstance(err, FileNotFoundError):
            raise
        raise RuntimeError(str(err)) from err
    if path is not None:
        logging.getLogger("cyclestyle").info("last checkpoint: %s", path)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train and evaluate a small photo -> cartoon translator on built-in images",
        description="Build an unpaired photo/cartoon dataset from scikit-image's bundled photos, "
        "train a small unet_attn CycleGAN on CPU, translate held-out photos, and write an HTML "
        "report comparing PSNR/SSIM of translated and untranslated photos against the true "
        "cartoon renditions.")
    p.add_argument("--output-dir", default="demo_out", help="where to write data, run and report "
                   "(default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the demo's training config (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import json
    import sys

    from cyclestyle.train.demo import DemoStopped, run_demo

    try:
        report = run_demo(args.output_dir, overrides=args.overrides, resume=args.resume)
    except DemoStopped as stopped:  # interrupted, not failed: exit 1, as translate does
        print(f"cyclestyle demo: {stopped}", file=sys.stderr)
        return 1
    results = json.loads((report.parent / "results.json").read_text())
    print(f"report: {report}")
    if not results["learned"]:
        print(f"cyclestyle demo: {results['verdict']}", file=sys.stderr)
        return 1
    print(f"demo: {results['verdict']} ({results['train_seconds']} s, precision "
          f"{results['precision']})")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered generators and discriminators "
                       "with their arguments")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from cyclestyle import models

    for kind, names, arguments in (
            ("generators", models.list_generators(), models.generator_arguments),
            ("discriminators", models.list_discriminators(), models.discriminator_arguments)):
        print(f"{kind}:")
        for name in names:
            args_text = ", ".join(f"{k}={v!r}" for k, v in arguments(name).items())
            print(f"  {name}({args_text})")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/index.html: loss and FID/KID charts, "
                       "samples over time, config, throughput (opens offline)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output_dir")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from cyclestyle.train.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0

"""`cyclestyle evaluate`: FID/KID, style and content metrics for a folder of translations.

The flags of the settings come from `EvaluateOptions` (one field, one flag); nothing here
imports torch until the command runs, so `cyclestyle evaluate --help` is instant. There is no
--precision: the extractors run without autocast, in float32, and the statistics are float64.
"""

from __future__ import annotations

import argparse
import textwrap

from cyclestyle.metrics.options import METRICS, EvaluateOptions, parse_metrics
from cyclestyle.options import add_dataclass_arguments, dataclass_from_args, invalid

__all__ = ["add_parser"]

DESCRIPTION = textwrap.dedent("""\
    Score a folder of translated images against real images of the target domain
    (FID, KID, VGG style distances) and against their sources (SSIM, PSNR, LPIPS;
    source and translation are paired by relative path without extension).

    FID/KID use torchmetrics' own Inception by default (torch-fidelity's weights,
    fetched once into the torch hub cache). Offline, point CYCLESTYLE_INCEPTION_WEIGHTS
    at a TorchScript Inception, or pass --inception-weights; with neither and nothing
    cached the command stops (exit 2) saying so. Every result records the extractor's
    name and sha256.

    --video scores temporal consistency instead: --fake and --source are two videos
    (or folders of videos, paired by relative path), and the flicker ratio, mean
    |out_t - out_t-1| / mean |in_t - in_t-1| in 8-bit levels, is reported per video
    (1: the translation is as steady as its input; above 1: it flickers). No --real.

    Example (offline, with a TorchScript Inception):
      cyclestyle evaluate --real data/paintings --fake out/translated \\
          --source data/photos_test --inception-weights inception-2015-12-05-torchscript.pt \\
          --vgg-weights vgg19_normalised_to_relu3_1.pth --out eval/

    Without --metrics every metric runs and those whose weights or inputs are missing
    (or whose sets are too small: FID and KID need 2 images per set) are skipped with the
    reason (in metrics.json); named metrics fail loudly instead, and so do FID and KID
    when no Inception can be had at all. Inception features are
    cached per image set (keyed by file contents, extractor sha256 and resize mode), so
    scoring many checkpoints against one real set is cheap. KID is reported x10^3 with its
    std over subsets; sets not larger than --kid-subset-size use subsets of half the
    smaller set, so the std is not 0 by construction.
    """)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score translated images: FID, KID, style similarity, content "
        "preservation; writes metrics.json and report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION)
    p.add_argument("--real", help="folder of real target-domain images (not with --video)")
    p.add_argument("--fake", required=True, help="folder of translated images")
    p.add_argument("--source", help="folder of the untranslated inputs (for content metrics); "
                   "with --video, the untranslated video or folder of videos")
    p.add_argument("--video", action="store_true", help="score videos: the flicker ratio of "
                   "--fake against --source")
    p.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} "
                   "(default: all that can run)")
    p.add_argument("--out", default="evaluation", help="where metrics.json, report.html and "
                   "samples.png go; not inside --real, --fake or --source (default: %(default)s)")
    add_dataclass_arguments(p, EvaluateOptions)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    if args.video:
        return _run_video(args)
    if args.real is None:
        raise invalid("--real", None, "missing", "a folder of real target-domain images (or "
                      "--video to score videos)")
    options = dataclass_from_args(EvaluateOptions, args)
    options.validate()  # before torch is imported
    metrics, _ = parse_metrics(args.metrics)
    from pathlib import Path

    from cyclestyle.metrics.evaluation import evaluate
    from cyclestyle.metrics.report import format_table, summary_rows

    results = evaluate(args.real, args.fake, args.source, metrics if args.metrics else None,
                       args.out, options)
    print(format_table(summary_rows(results)))
    out = Path(args.out)
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.html'}")
    return 0


def _run_video(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cyclestyle.metrics.temporal import evaluate_videos, format_videos

    if args.real is not None or args.metrics is not None:
        flag = "--real" if args.real is not None else "--metrics"
        raise invalid(flag, args.real or args.metrics, "given with --video",
                      "--video scores the flicker ratio of --fake against --source only")
    results = evaluate_videos(args.fake, args.source, args.out)
    print(format_videos(results))
    print(f"\nwrote {Path(args.out) / 'metrics.json'}")
    return 0

"""`cyclestyle evaluate`: FID/KID, style and content metrics for a folder of translations.

The flags of the settings come from `EvaluateOptions` (one field, one flag); nothing here
imports torch until the command runs, so `cyclestyle evaluate --help` is instant. There is no
--precision: the extractors run without autocast, in float32, and the statistics are float64.
"""

from __future__ import annotations

import argparse
import textwrap

from cyclestyle.metrics.options import METRICS, EvaluateOptions, parse_metrics
from cyclestyle.options import add_dataclass_arguments, dataclass_from_args

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
    p.add_argument("--real", required=True, help="folder of real target-domain images")
    p.add_argument("--fake", required=True, help="folder of translated images")
    p.add_argument("--source", help="folder of the untranslated inputs (for content metrics)")
    p.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} "
                   "(default: all that can run)")
    p.add_argument("--out", default="evaluation", help="where metrics.json, report.html and "
                   "samples.png go; not inside --real, --fake or --source (default: %(default)s)")
    add_dataclass_arguments(p, EvaluateOptions)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
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

"""`cyclestyle evaluate`: FID/KID, style and content metrics for a folder of translations."""

from __future__ import annotations

import argparse
import textwrap

from cyclestyle.metrics.features import RESIZE_MODES

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score translated images: FID, KID, style similarity, content "
        "preservation; writes metrics.json and report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Score a folder of translated images against real images of the target domain
            (FID, KID, VGG style distances) and against their sources (SSIM, PSNR, LPIPS;
            source and translation are paired by relative path without extension).

            Example (offline, with a TorchScript Inception):
              cyclestyle evaluate --real data/paintings --fake out/translated \\
                  --source data/photos_test --inception-weights inception-2015-12-05-torchscript.pt \\
                  --vgg-weights vgg19_normalised_to_relu3_1.pth --out eval/

            Without --metrics every metric runs and those whose weights or inputs are missing
            are skipped with the reason (in metrics.json); named metrics fail loudly instead.
            Inception features are cached per image set (keyed by file contents, extractor
            sha256 and resize mode), so scoring many checkpoints against one real set is cheap.
            """))
    p.add_argument("--real", required=True, help="folder of real target-domain images")
    p.add_argument("--fake", required=True, help="folder of translated images")
    p.add_argument("--source", help="folder of the untranslated inputs (for content metrics)")
    p.add_argument("--metrics", help="comma-separated subset of fid,kid,style,content "
                   "(default: all that can run)")
    p.add_argument("--inception-weights", metavar="PATH", help="TorchScript Inception file "
                   "(NCHW [-1, 1] at 299x299 -> 2048-d); default: torchmetrics' Inception "
                   "(needs torch-fidelity)")
    p.add_argument("--resize", choices=sorted(RESIZE_MODES), default="pil_bicubic",
                   help="resize to the Inception input: " + "; ".join(
                       f"{k}: {v}" for k, v in RESIZE_MODES.items()) + " (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--kid-subsets", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="reduced to the smaller "
                   "set's size when needed, with a warning (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="KID subset RNG seed (default: %(default)s)")
    p.add_argument("--vgg-weights", default="torchvision", help="VGG19 weights for style "
                   "metrics: 'torchvision' or a state-dict path, e.g. the normalised prefix "
                   "vgg19_normalised_to_relu3_1.pth (default: %(default)s)")
    p.add_argument("--cache-dir", help="feature cache folder (default: "
                   "~/.cache/cyclestyle/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--out", default="evaluation", help="where metrics.json, report.html and "
                   "samples.png go (default: %(default)s)")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cyclestyle.metrics.evaluation import EvaluateOptions, evaluate
    from cyclestyle.metrics.report import format_table, summary_rows

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    options = EvaluateOptions(
        inception_weights=args.inception_weights, resize=args.resize,
        batch_size=args.batch_size, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, seed=args.seed, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, vgg_weights=args.vgg_weights, lpips=not args.no_lpips,
        device=args.device)
    results = evaluate(args.real, args.fake, args.source, metrics, args.out, options)
    print(format_table(summary_rows(results)))
    out = Path(args.out)
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.html'}")
    return 0

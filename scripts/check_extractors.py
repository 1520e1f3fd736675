"""Check that the two FID/KID extractors agree: torchmetrics' own Inception (the default of
`cyclestyle evaluate`) and a TorchScript Inception (the offline one), on the same folders.

Both are ports of the TF FID graph's Inception (2015-12-05 weights), but they are not the same
program: torchmetrics' takes images rounded to 8 bits and normalises with (x - 128) / 128, the
TorchScript file takes floats in [-1, 1] (x / 127.5 - 1). FIDs from the two should agree to
within TOLERANCE below; this script says whether they do on your data. Not run in CI: it needs
torch-fidelity's weights (fetched once from GitHub into the torch hub cache) and a real set of
a few hundred images or more per folder (FID of tiny sets is dominated by estimation noise).

    .venv/bin/python scripts/check_extractors.py --real data/paintings --fake runs/p2p/translated \\
        --inception-weights ../shared/weights/inception-2015-12-05-torchscript.pt

Tolerance, the acceptance criterion (not a measurement; this machine has no network for the
torchmetrics weights): |FID_torchmetrics - FID_torchscript| <= 1% of their mean + 0.1. Prints
both results as JSON (with each extractor's name and sha256) and exits 1 when they disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REL_TOLERANCE = 0.01  # of the mean FID
ABS_TOLERANCE = 0.1  # for FIDs near 0, where a relative bound is meaningless


def compare(real: str | os.PathLike, fake: str | os.PathLike, first, second,
            resize: str = "pil_bicubic", batch_size: int = 32, device: str = "cpu",
            rel_tolerance: float = REL_TOLERANCE, abs_tolerance: float = ABS_TOLERANCE) -> dict:
    """FID (and KID x 10^3) of `fake` against `real` with two extractors, and whether the FIDs
    agree within the tolerance."""
    from cyclestyle.metrics.features import extract_features
    from cyclestyle.metrics.fid import fid_from_features, kernel_inception_distance

    results = []
    for extractor in (first, second):
        real_features = extract_features(real, extractor, resize, batch_size, device)
        fake_features = extract_features(fake, extractor, resize, batch_size, device)
        kid = kernel_inception_distance(real_features, fake_features, subsets=50)
        results.append({"extractor": extractor.describe(),
                        "fid": fid_from_features(real_features, fake_features),
                        "kid_x1e3": kid.mean_x1e3, "n_real": real_features.shape[0],
                        "n_fake": fake_features.shape[0]})
    difference = abs(results[0]["fid"] - results[1]["fid"])
    allowed = rel_tolerance * (results[0]["fid"] + results[1]["fid"]) / 2 + abs_tolerance
    return {"results": results, "resize": resize, "fid_difference": difference,
            "allowed": allowed, "agree": difference <= allowed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", required=True, help="folder of real images")
    parser.add_argument("--fake", required=True, help="folder of translated images")
    parser.add_argument("--inception-weights", default=os.environ.get("CYCLESTYLE_INCEPTION_"
                        "WEIGHTS"), help="TorchScript Inception (default: "
                        "$CYCLESTYLE_INCEPTION_WEIGHTS)")
    parser.add_argument("--resize", default="pil_bicubic")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rel-tolerance", type=float, default=REL_TOLERANCE)
    parser.add_argument("--abs-tolerance", type=float, default=ABS_TOLERANCE)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not args.inception_weights:
        parser.error("--inception-weights (or CYCLESTYLE_INCEPTION_WEIGHTS) is required")
    from cyclestyle.metrics.features import torchmetrics_inception, torchscript_inception

    report = compare(args.real, args.fake, torchmetrics_inception(),
                     torchscript_inception(args.inception_weights), args.resize,
                     args.batch_size, args.device, args.rel_tolerance, args.abs_tolerance)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

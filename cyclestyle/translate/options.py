"""The options of `cyclestyle translate` and `cyclestyle export`, each written once.

Field, flag (`tile_overlap` -> `--tile-overlap`), default and help come from these dataclasses;
`validate` checks them in the package's one error grammar. No torch at import time.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from cyclestyle.imageio import MAX_IMAGE_PIXELS
from cyclestyle.options import check, option
from cyclestyle.runtime import PRECISIONS

DIRECTIONS = ("a2b", "b2a")
OUTPUT_FORMATS = ("same", "png", "jpg")
FILE_FORMATS = ("onnx", "torchscript")  # one standalone file per generator
EXPORT_FORMATS = (*FILE_FORMATS, "hub")  # hub: a release folder (cyclestyle.translate.release)
TILE_STATS = ("image", "tile")  # --tile-stats: whole-image statistics (default) or each tile's own
VIDEO_STATS = ("running", "frame")  # --video-stats: averaged over frames (default) or per frame
MIN_SIDE = 8  # smaller images carry too little content to translate
TOLERANCE = 1e-4  # export: max |exported - PyTorch| on [-1, 1] outputs, float32
HF_PREFIX = "hf://"  # --checkpoint hf://user/name: a Hugging Face Hub repo
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # user/name
MAX_SAMPLES = 4  # export --format hub: sample images copied into the model card


# What --checkpoint accepts, wherever a model is loaded (cyclestyle.translate.sources).
MODEL_SOURCES = ("a training checkpoint (file or run folder), a release folder (export --format "
                 "hub), a Hugging Face Hub repo (hf://user/name or user/name), pretrained:NAME "
                 "(cyclestyle pretrained list), or a generator file of pytorch-CycleGAN-and-"
                 "pix2pix or CUT (latest_net_G_A.pth, or its folder)")


TRAIN = "train"  # --size/--max-size: the training scale (cyclestyle.translate.scale)


def size_or_train(text: str) -> int | str:
    """argparse `type=` of --size/--max-size: a number of pixels, or 'train'."""
    if text == TRAIN:
        return TRAIN
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: expected an integer number of "
                                         f"pixels or {TRAIN}") from None


@dataclass
class TranslateOptions:
    checkpoint: str = option(help=MODEL_SOURCES)
    input: str = option(help="an image, a video, a folder (searched for both), or a text file "
                        "listing one path per line; also accepted as the first argument",
                        positional=True)
    output: str = option(help="folder for the translated images and videos; for one video "
                         "input, a file name like out.mp4 works too")
    direction: str = option("a2b", help="a2b uses G_AB, b2a uses G_BA", choices=DIRECTIONS)
    revision: str | None = option(None, help="Hub repo only: branch, tag or commit (default: "
                                  "main)")
    batch_size: int | None = option(None, help="images (or tiles) of equal size per forward "
                                    "pass (default: 1 on CPU, where larger batches measured "
                                    "slower, 4 on GPU)")
    size: int | str | None = option(None, help="rescale so the long side is N pixels; 'train': "
                                    "to the scale the model was trained at", metavar="N|train",
                                    type=size_or_train)
    max_size: int | str | None = option(None, help="shrink images whose long side exceeds N; "
                                        "'train': those above the training scale",
                                        metavar="N|train", type=size_or_train)
    tile: int | None = option(None, help="translate images larger than N pixels in NxN tiles, "
                              "blended (for images that do not fit in memory)", metavar="N")
    tile_overlap: int = option(64, help="pixels shared by neighbouring tiles")
    tile_stats: str = option("image", choices=TILE_STATS, help="with --tile, the statistics "
                             "each tile's InstanceNorms use: image (the whole image's, from a "
                             "pass over it downscaled to a tile's size: tiles agree on one "
                             "style) or tile (each tile's own: colours drift between tiles)")
    tile_calibration: int = option(0, metavar="N", help="with --tile-stats image: N passes "
                                   "over the tiles that correct the downscaled statistics "
                                   "toward full resolution's; each costs about one more tiled "
                                   "translation (docs/benchmarks.md)")
    video_stats: str = option("running", choices=VIDEO_STATS, help="videos: the statistics "
                              "each frame's InstanceNorms use: running (averaged over recent "
                              "frames, restarted at scene cuts: less flicker) or frame (each "
                              "frame's own)")
    video_window: int = option(16, metavar="FRAMES", help="videos, --video-stats running: the "
                               "average's time constant in frames")
    skip_existing: bool = option(False, help="count outputs that already exist as done (resume "
                                 "a stopped run); empty or undecodable ones are translated again")
    overwrite: bool = option(False, help="replace outputs that already exist (never an input; "
                             "without this or --skip-existing they are left alone and reported)")
    format: str = option("same", help="output file type; 'same' keeps each input's",
                         choices=OUTPUT_FORMATS)
    device: str | None = option(None, help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    precision: str = option("auto", help="fp32, bf16, fp16 (CUDA only) or auto: bf16 where the "
                            "hardware has it natively, else fp32", choices=PRECISIONS)
    workers: int | None = option(None, help="decoding processes (default on CPU: none with 2 "
                                 "cores or fewer, else up to 4)")
    max_pixels: int | None = option(None, help="refuse images with more pixels, a guard against "
                                    f"decompression bombs (default: {MAX_IMAGE_PIXELS:,}; 0 = no "
                                    "limit)")
    allow_inside_input: bool = option(False, help="allow --output inside the input folder (a "
                                      "file's folder, every listed file's folder); inputs are "
                                      "never replaced")
    progress: bool = option(True, help="show a progress bar")

    def validate(self) -> TranslateOptions:
        check(self.size is None or self.max_size is None, "--size", self.size,
              "given together with --max-size", "give one of them")
        for flag, value in (("--size", self.size), ("--max-size", self.max_size)):
            check(value in (None, TRAIN) or value >= MIN_SIDE, flag, value,
                  f"below {MIN_SIDE} pixels", f"expected an integer >= {MIN_SIDE} or {TRAIN}")
        check(self.batch_size is None or self.batch_size >= 1, "--batch-size", self.batch_size,
              "below 1", "expected an integer >= 1")
        check(self.workers is None or self.workers >= 0, "--workers", self.workers, "below 0",
              "expected an integer >= 0")
        check(self.max_pixels is None or self.max_pixels >= 0, "--max-pixels", self.max_pixels,
              "below 0", "expected an integer >= 0 (0 = no limit)")
        check(self.tile_calibration >= 0, "--tile-calibration", self.tile_calibration,
              "below 0", "expected an integer >= 0")
        check(self.video_window >= 1, "--video-window", self.video_window, "below 1",
              "expected a number of frames >= 1 (1 = per-frame statistics)")
        check(not (self.overwrite and self.skip_existing), "--overwrite", True,
              "given together with --skip-existing", "give one of them")
        return self


@dataclass
class ExportOptions:
    checkpoint: str = option(help=MODEL_SOURCES)
    output: str = option(help="file to write, e.g. g_ab.onnx or g_ab.pt; for hub a folder")
    direction: str = option("a2b", help="a2b exports G_AB, b2a exports G_BA (hub: both)",
                            choices=DIRECTIONS)
    format: str = option("onnx", help="file type, or hub: a release folder (model.safetensors, "
                         "config.json, README.md model card)", choices=EXPORT_FORMATS)
    revision: str | None = option(None, help="Hub repo only: branch, tag or commit")
    metrics: str | None = option(None, metavar="FILE", help="hub: the metrics.json of "
                                 "`cyclestyle evaluate`, reported in the model card")
    samples: str | None = option(None, metavar="DIR", help="hub: a folder of translated "
                                 f"images; the first {MAX_SAMPLES} (sorted) go into the model card")
    overwrite: bool = option(False, help="replace --output if it exists (hub: a non-empty "
                             "folder; the release's files are replaced, others left alone)")


@dataclass
class PushOptions:
    checkpoint: str = option(help=MODEL_SOURCES)
    repo: str = option(help="Hub repository to upload to, user/name (created if absent)")
    private: bool = option(False, help="create the repository as private")
    revision: str | None = option(None, help="source Hub repo only: branch, tag or commit")
    metrics: str | None = option(None, metavar="FILE", help="metrics.json of `cyclestyle "
                                 "evaluate`, reported in the model card")
    samples: str | None = option(None, metavar="DIR", help="folder of translated images for "
                                 "the model card")
    message: str = option("Upload cyclestyle release", help="commit message")

"""Temporal consistency of translated videos (`cyclestyle evaluate --video`): the flicker ratio.

    flicker ratio = mean |out_t - out_{t-1}| / mean |in_t - in_{t-1}|

over every pixel, channel and pair of consecutive frames, in 8-bit levels. It asks how much the
translation changes from frame to frame relative to how much its input did: 1 means the output
moves as much as the input, above 1 that the translation adds flicker of its own (InstanceNorm
statistics jumping between frames do), below 1 that it steadies the input (a static scene's
sensor noise painted over). Frames are streamed, two at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cyclestyle.options import invalid
from cyclestyle.videoio import VIDEO_EXTENSIONS, is_video, read_frames

__all__ = ["flicker_ratio", "evaluate_videos"]


def flicker_ratio(sources: Iterable[np.ndarray], translations: Iterable[np.ndarray]) -> dict:
    """The flicker ratio of `translations` against their `sources`: two equally long sequences
    of (H, W, 3) uint8 frames, paired in order (sizes may differ between the two)."""
    change = {"source": 0.0, "translated": 0.0}
    previous: dict[str, np.ndarray | None] = {"source": None, "translated": None}
    frames, missing = 0, object()
    source_iter, translated_iter = iter(sources), iter(translations)
    while True:
        pair = {"source": next(source_iter, missing), "translated": next(translated_iter, missing)}
        if (pair["source"] is missing) != (pair["translated"] is missing):
            short = "source" if pair["source"] is missing else "translation"
            raise invalid("--fake", f"{frames + 1} frames", f"the {short} ends after {frames}",
                          "a translation with one frame per source frame")
        if pair["source"] is missing:
            break
        for key, frame in pair.items():
            current = np.asarray(frame, dtype=np.int16)
            if previous[key] is not None:
                change[key] += float(np.abs(current - previous[key]).mean())
            previous[key] = current
        frames += 1
    steps = max(frames - 1, 1)
    source_change, translated_change = change["source"] / steps, change["translated"] / steps
    return {"flicker_ratio": translated_change / source_change if source_change else float("inf"),
            "source_change_levels": source_change,
            "translated_change_levels": translated_change, "frames": frames}


def video_pairs(fake: str | os.PathLike, source: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(source, translation) pairs: two videos, or two folders of videos paired by relative
    path without extension (as image metrics pair images)."""
    fake, source = Path(fake), Path(source)
    if fake.is_file() and source.is_file():
        return [(source, fake)]
    if not (fake.is_dir() and source.is_dir()):
        raise invalid("--fake", str(fake), "with --video, --fake and --source must both be "
                      "videos or both folders of videos", f"videos are {', '.join(VIDEO_EXTENSIONS)}")
    translated = {p.relative_to(fake).with_suffix("").as_posix(): p
                  for p in sorted(fake.rglob("*")) if is_video(p)}
    pairs = [(p, translated[key]) for p in sorted(source.rglob("*")) if is_video(p)
             and (key := p.relative_to(source).with_suffix("").as_posix()) in translated]
    if not pairs:
        raise invalid("--fake", str(fake), f"no video there pairs with one in {source} by "
                      "relative path", "translations named like their sources")
    return pairs


def evaluate_videos(fake: str | os.PathLike, source: str | os.PathLike | None,
                    out_dir: str | os.PathLike) -> dict:
    """The flicker ratio of each translated video against its source, and their mean;
    written to out_dir/metrics.json."""
    from cyclestyle.metrics.report import write_json

    if source is None:
        raise invalid("--source", None, "--video compares each translation with its source",
                      "the untranslated video (or a folder of them)")
    results = {"videos": []}
    for src, out in video_pairs(fake, source):
        ratio = flicker_ratio(read_frames(src), read_frames(out))
        results["videos"].append({"source": str(src), "fake": str(out), **ratio})
    ratios = [v["flicker_ratio"] for v in results["videos"]]
    results["mean_flicker_ratio"] = float(np.mean(ratios))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_json(results, Path(out_dir) / "metrics.json")
    return results


def format_videos(results: dict) -> str:
    lines = [f"{'video':<40} {'flicker ratio':>13} {'source Δ':>9} {'output Δ':>9} frames"]
    for v in results["videos"]:
        lines.append(f"{Path(v['fake']).name:<40} {v['flicker_ratio']:>13.3f} "
                     f"{v['source_change_levels']:>9.2f} {v['translated_change_levels']:>9.2f} "
                     f"{v['frames']}")
    lines.append(f"mean flicker ratio {results['mean_flicker_ratio']:.3f} (output change per "
                 "frame / input change per frame, 8-bit levels; 1 = as steady as the input)")
    return "\n".join(lines)

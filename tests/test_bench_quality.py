"""scripts/bench_quality.py --quick: every contender trains, translates and is scored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.slow
def test_quick_run_scores_the_reference_and_ours_on_the_demo_task(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_quality

    out = tmp_path / "q.json"
    assert bench_quality.main(["--quick", "--tasks", "demo", "--out", str(out),
                               "--grids", str(tmp_path / "grids")]) == 0
    report = json.loads(out.read_text())
    demo = report["tasks"]["demo"]
    assert {"reference-small", "ours", "ours+all", "untranslated"} <= set(demo)
    for name in ("reference-small", "ours", "ours+all"):
        (run,) = demo[name]["runs"]
        assert run["steps"] >= 1 and run["seconds"] > 0 and run["images_seen"] >= run["steps"]
        assert 0 < run["psnr"] < 60 and -1 <= run["ssim"] <= 1
    assert report["host"]["cpu_capability"] and (tmp_path / "grids" / "quality_demo.png").is_file()

    # Merging two processes' reports stacks their grids: rows of 64 px + 2 px padding; the
    # second drops the rows both share (input, true translation) and adds its 3 contenders.
    from PIL import Image

    first = Image.open(tmp_path / "grids" / "quality_demo.png")
    assert first.height == 2 + (2 + 3) * 66
    merged_dir = tmp_path / "merged"
    merged_dir.mkdir()
    assert bench_quality.main(["--merge", str(out), str(out), "--out", str(tmp_path / "m.json"),
                               "--grids", str(merged_dir)]) == 0
    merged = Image.open(merged_dir / "quality_demo.png")
    assert merged.size == (first.width, first.height + 3 * 66)
    assert merged.crop((0, first.height, first.width, merged.height)).tobytes() == \
        first.crop((0, 2 + 2 * 66, first.width, first.height)).tobytes()
    sys.modules.pop("bench_quality", None)

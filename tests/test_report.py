"""`cyclestyle report RUN_DIR`: index.html of a tiny run, as HTML and in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cyclestyle.cli import main
from tests.helpers import tiny_config, write_images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from cyclestyle.train.trainer import train

    tmp = tmp_path_factory.mktemp("report")
    dirs = write_images(tmp / "A", 4, seed=1), write_images(tmp / "B", 4, seed=2)
    run = tmp / "run"
    train(tiny_config(dirs, run, "train.max_steps=8", "train.log_every=2",
                      "train.sample_every=4", "train.checkpoint_every=8"))
    # Held-out FID/KID needs Inception weights; these lines have the trainer's eval format.
    with (run / "metrics.jsonl").open("a") as f:
        for step, fid in ((4, 300.0), (8, 250.0)):
            f.write(json.dumps({"step": step, "eval_fid": fid, "eval_kid_mean": fid / 1000}) + "\n")
    assert main(["report", str(run)]) == 0
    return run


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images, self.polylines, self.svgs = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "polyline":
            self.polylines.append(attrs)
        elif tag == "svg":
            self.svgs.append(attrs["id"])


def test_page_references_existing_images_and_draws_every_chart(run_dir):
    page = _Page()
    text = (run_dir / "index.html").read_text()
    page.feed(text)
    assert page.svgs == ["chart-losses", "chart-eval"]
    keys = {line["data-key"]: line["points"].split() for line in page.polylines}
    assert set(keys) == {"g_total", "d_a", "d_b", "cycle", "eval_fid", "eval_kid_mean"}
    assert all(len(points) > 1 for points in keys.values())
    assert len(keys["g_total"]) == 4  # log steps 2, 4, 6, 8
    samples = sorted((run_dir / "samples").glob("step_*.png"), reverse=True)
    assert len(samples) == 2
    assert page.images[0] == "samples/step_00000008.png"  # the slider's image: the newest
    assert set(page.images) == {p.relative_to(run_dir).as_posix() for p in samples}
    assert all((run_dir / src).is_file() for src in page.images)
    assert "precision</th><td>fp32" in text and "images/s" in text
    assert "lambda_cycle" in text  # the resolved config


def test_report_of_a_folder_without_metrics_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="no Chromium: install it with apt-get install -y chromium")
def test_page_renders_with_visible_charts_in_headless_chromium(run_dir, tmp_path):
    import numpy as np
    from PIL import Image

    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,900", (run_dir / "index.html").as_uri()],
                   check=True, timeout=120, capture_output=True)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # The two charts sit side by side below the summary table (y about 150..450): the coloured
    # lines are the only saturated pixels there (text and axes are grey).
    for name, box in (("losses", (0, 120, 560, 480)), ("eval", (560, 120, 1120, 480))):
        left, top, right, bottom = box
        region = image[top:bottom, left:right]
        coloured = int((region.max(-1) - region.min(-1) > 80).sum())
        assert coloured > 200, f"chart {name}: only {coloured} coloured pixels in {box}"

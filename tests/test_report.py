"""`cyclestyle report RUN_DIR`: index.html of a tiny run, as HTML and in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cyclestyle.cli import main
from tests.helpers import tiny_config, write_images, write_tiny_inception

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHARTS = ["chart-losses", "chart-fid", "chart-kid", "chart-change", "chart-d_accuracy"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """8 steps with held-out FID/KID (a tiny TorchScript stand-in for Inception) every 4."""
    from cyclestyle.train.trainer import train

    tmp = tmp_path_factory.mktemp("report")
    for split, count in (("train", 4), ("val", 2)):
        for side, seed in (("A", 1), ("B", 2)):
            write_images(tmp / "data" / f"{split}{side}", count, seed=seed)
    run = tmp / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(tmp / "cache"))  # the real features' disk cache
        train(tiny_config(("", ""), run, f"data.root={tmp / 'data'}", "train.max_steps=8",
                          "train.log_every=2", "train.sample_every=4",
                          "train.checkpoint_every=8", "eval.every=4", "eval.batch_size=2",
                          f"eval.inception_weights={write_tiny_inception(tmp / 'incep.pt')}"))
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
    assert page.svgs == CHARTS
    keys = {line["data-key"]: line["points"].split() for line in page.polylines}
    assert set(keys) == {"g_total", "d_a", "d_b", "cycle", "eval_fid_a2b", "eval_fid_b2a",
                         "eval_fid_mean", "eval_kid_a2b", "eval_kid_b2a", "eval_kid_mean",
                         "change_ab", "change_ba", "d_a_acc_real", "d_a_acc_fake",
                         "d_b_acc_real", "d_b_acc_fake"}
    assert len(keys["g_total"]) == 4  # log steps 2, 4, 6, 8
    assert len(keys["eval_fid_b2a"]) == 2  # eval steps 4, 8
    for prefix in ("step", "heldout_step"):  # training and held-out grids at steps 8 and 4
        grids = [f"samples/{prefix}_{step:08d}.png" for step in (8, 4)]
        assert all((run_dir / grid).is_file() for grid in grids)
        assert page.images.count(grids[0]) == 2  # the slider's image (the newest) and the strip
        assert page.images.count(grids[1]) == 1
    assert len(page.images) == 6
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
                    "--hide-scrollbars", "--window-size=2900,900",
                    (run_dir / "index.html").as_uri()],
                   check=True, timeout=120, capture_output=True)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # The five charts (boxes 540 px wide, 16 px apart, after the 16 px page margin) sit side
    # by side below the summary table (y about 150..450): the coloured lines are the only
    # saturated pixels there (text and axes are grey).
    for name, left in zip(CHARTS, range(16, 16 + 5 * 556, 556)):
        region = image[120:480, left:left + 540]
        coloured = int((region.max(-1) - region.min(-1) > 80).sum())
        assert coloured > 200, f"{name}: only {coloured} coloured pixels at x {left}..{left + 540}"

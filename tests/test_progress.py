"""The training bar tells the truth: steps, images/s, ETA, losses, and what a pause is."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

from cyclestyle.train.progress import TrainingProgress
from cyclestyle.train.trainer import Trainer
from tests.helpers import tiny_config, write_tiny_inception


def _lines(stream: io.StringIO) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]", stream.getvalue()) if line.strip()]


def test_bar_shows_steps_images_per_second_eta_and_losses():
    out = io.StringIO()
    progress = TrainingProgress(file=out, redraw_seconds=0.1)  # a terminal's rate
    progress.start(total_steps=100, step=10, images_per_step=8)  # e.g. batch 4 x 2 processes
    progress.losses({"g_total": 1.23456, "d_a": 0.25, "d_b": 0.5, "cycle": 9.0})
    for _ in range(5):
        time.sleep(0.12)  # past tqdm's minimum interval, so each step redraws and is timed
        progress.step()
    progress.close()
    last = _lines(out)[-1]
    assert "15/100" in last  # resumed at 10, five steps since
    steps_per_s = float(re.search(r"([\d.]+)step/s", last).group(1))
    images_per_s = float(re.search(r"([\d.]+) img/s", last).group(1))
    assert images_per_s == pytest.approx(8 * steps_per_s, rel=0.05)
    assert re.search(r"<\d\d:\d\d", last)  # the ETA
    assert "g_total=1.235 d_a=0.250 d_b=0.500" in last and "cycle" not in last


def test_a_pause_is_named_on_the_bar_and_kept_out_of_the_rate():
    out = io.StringIO()
    progress = TrainingProgress(file=out, redraw_seconds=0.1)
    progress.start(total_steps=1000, step=0, images_per_step=1)
    for _ in range(4):
        time.sleep(0.12)
        progress.step()
    rate_before = progress.bar.format_dict["rate"]
    with progress.status("writing a checkpoint"):
        assert _lines(out)[-1].startswith("train [writing a checkpoint]:")
        time.sleep(1.5)  # 12 steps' worth
    assert _lines(out)[-1].startswith("train:")  # the name goes when the work is done
    time.sleep(0.12)
    progress.step()
    # Counted, the pause would have cut the smoothed rate to about a fifth (tqdm's EMA, 0.3).
    assert progress.bar.format_dict["rate"] > 0.8 * rate_before
    progress.close()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, redraws_allowed", [(_Terminal, range(15, 33)),
                                                     (io.StringIO, range(2, 4))])
def test_a_bar_into_a_log_redraws_rarely_and_into_a_terminal_often(stream, redraws_allowed):
    out = stream()
    progress = TrainingProgress(file=out)  # the redraw interval follows the stream
    progress.start(total_steps=30, step=0, images_per_step=1)
    for _ in range(30):
        time.sleep(0.11)  # 3.3 s: past a terminal's 0.1 s each step, far short of a log's 30 s
        progress.step()
    progress.close()
    redraws = sum("/30 [" in line for line in _lines(out))
    assert redraws in redraws_allowed  # at most: the first, one per step, the last
    assert "30/30" in _lines(out)[-1]


def test_without_a_bar_statuses_are_logged_with_their_duration(caplog):
    with caplog.at_level(logging.INFO, logger="cyclestyle.train.progress"):
        with TrainingProgress(show_bar=False).status("listing the training images"):
            pass
        with TrainingProgress(show_bar=False).status("compiling", when=False):
            pass
        with TrainingProgress(show_bar=False, speak=False).status("on another process"):
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "listing the training images ..."
    assert re.fullmatch(r"listing the training images: done in \d+\.\d s", messages[1])
    assert len(messages) == 2


def test_a_run_names_each_pause(image_dirs, tmp_path, monkeypatch, caplog):
    """Set-up work is logged (no bar yet); in the loop the bar names the first step's
    compilation, sample grids, held-out FID/KID and checkpoint writing while they run."""
    seen: list[str] = []
    original = TrainingProgress.status

    def spy(self, what, when=True):
        if when:
            seen.append(f"{what} ({'bar' if self.bar is not None else 'log'})")
        return original(self, what, when)

    monkeypatch.setattr(TrainingProgress, "status", spy)
    monkeypatch.setattr(Trainer, "_compile", lambda self: None)  # train.compile, minus the wait
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    inception = write_tiny_inception(tmp_path / "inception.pt")
    config = tiny_config(image_dirs, tmp_path / "run", "train.max_steps=2", "train.progress=true",
                         "train.compile=true",
                         "train.sample_every=2", "train.checkpoint_every=2", "eval.every=2",
                         f"eval.domain_a={image_dirs[0]}", f"eval.domain_b={image_dirs[1]}",
                         f"eval.inception_weights={inception}")
    Trainer(config).fit()
    assert seen == ["reading held-out images and their features (log)",
                    "listing the training images (log)",
                    "compiling (torch.compile) in the first step (bar)",  # step 1 only
                    "sample grids (bar)",
                    "held-out FID/KID (bar)", "writing a checkpoint (bar)",
                    "writing the run page (log)"]

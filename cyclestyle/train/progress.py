"""What a training run is doing, as it does it: the step bar and the work between steps.

The bar shows steps, images/s, the ETA and the latest logged losses. Work that is not a step
(building the dataset, reading held-out images and their features, the first step under
torch.compile, held-out evaluation, sample grids, checkpoint writing) is named on the bar while
it runs, or logged with its duration where there is no bar (before the loop, train.progress
false, processes other than the first), so a long pause never looks like a hang. Its time is
kept out of the bar's rate, so the ETA counts steps only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import IO

from tqdm.auto import tqdm

from cyclestyle.runtime import bar_interval

__all__ = ["LOSSES_SHOWN", "TrainingProgress"]

log = logging.getLogger(__name__)

LOSSES_SHOWN = ("g_total", "d_a", "d_b")  # of the logged means; more would not fit a line
DESCRIPTION = "train"


class TrainingProgress:
    """`status(what)` works from construction on; the bar exists from `start` to `close`.

    `show_bar`: draw the bar (train.progress, on the first process of each machine); `speak`:
    log statuses where there is no bar (false on the other processes, which would repeat them)."""

    def __init__(self, show_bar: bool = True, speak: bool = True,
                 file: IO[str] | None = None, redraw_seconds: float | None = None) -> None:
        self.show_bar, self.speak, self.file = show_bar, speak, file
        # None: as often as a terminal suits, or every LOG_BAR_SECONDS into a log or pipe
        self.redraw_seconds = redraw_seconds
        self.bar: tqdm | None = None
        self.images_per_step = 1
        self._losses = ""

    def start(self, total_steps: int, step: int, images_per_step: int) -> None:
        """Show the bar at `step` of `total_steps`; a step consumes `images_per_step` images
        over all processes (batch size x processes x accumulation)."""
        self.images_per_step = images_per_step
        if self.show_bar:
            interval = self.redraw_seconds
            if interval is None:
                interval = bar_interval(self.file)
            self.bar = tqdm(total=total_steps, initial=step, desc=DESCRIPTION, unit="step",
                            dynamic_ncols=True, file=self.file, mininterval=interval)

    def step(self) -> None:
        if self.bar is None:
            return
        rate = self.bar.format_dict["rate"]  # steps/s, smoothed; None until it is measured
        speed = f"{rate * self.images_per_step:.3g} img/s" if rate else "? img/s"
        self.bar.set_postfix_str(", ".join(filter(None, (speed, self._losses))), refresh=False)
        self.bar.update(1)

    def losses(self, values: dict[str, float]) -> None:
        """The newest logged losses (means since the last log step), shown until the next."""
        self._losses = " ".join(f"{key}={values[key]:.3f}" for key in LOSSES_SHOWN
                                if key in values)

    @contextlib.contextmanager
    def status(self, what: str, when: bool = True) -> Iterator[None]:
        """Name `what` while the block runs (nothing when `when` is false)."""
        if not when or (self.bar is None and not self.speak):
            yield
            return
        started = time.perf_counter()
        if self.bar is None:
            log.info("%s ...", what)
        else:
            self.bar.set_description_str(f"{DESCRIPTION} [{what}]", refresh=True)
        try:
            yield
        finally:
            if self.bar is None:
                log.info("%s: done in %.1f s", what, time.perf_counter() - started)
            else:
                self.bar.set_description_str(DESCRIPTION, refresh=True)
                self.bar.unpause()  # the block's time is not step time: keep it out of the ETA

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

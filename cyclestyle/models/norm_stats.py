"""Normalisation statistics from a chosen extent: run a generator with the per-channel mean and
variance of its InstanceNorm / GroupNorm layers supplied from elsewhere.

InstanceNorm takes its statistics from whatever the network is shown. Shown one tile of a large
image, or one frame of a video, each tile or frame gets its own statistics, so colours drift
between tiles and flicker between frames. Supplying the statistics of a larger extent fixes
both:

    with norm_statistics(recorder := RecordStatistics()):  # a pass over the whole image, downscaled
        generator(small)
    with norm_statistics(FixedStatistics(recorder.recorded)):
        tile_out = generator(tile)  # every tile normalised as the whole image is

    running = RunningStatistics(window=16)  # video: an exponential average over frames
    with norm_statistics(running.batch(scene_starts)):
        out = generator(frames)  # (B, 3, H, W), consecutive frames; the next batch continues

Layers are keyed by call order within one forward pass, checked against module identity: a
network calls its norm layers in the same order every time. `norm_statistics` covers exactly
one forward pass; it is per thread (a ContextVar), so other threads using the same generator are
unaffected. It applies to cyclestyle's `InstanceNorm2d` and `GroupNorm`, which every registered
generator uses (`make_norm`); BatchNorm in eval mode already uses fixed statistics, and
norm="none" has none to supply. `layers.check_statistics_supported` refuses torch's own norm
classes.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cyclestyle.options import invalid


@dataclass
class Moments:
    """Statistics of one norm layer's input: mean and (biased) variance per sample and group,
    each (B, G) float32; B = 1 broadcasts over a batch."""

    mean: torch.Tensor
    var: torch.Tensor

    def select(self, index: int) -> Moments:
        return Moments(self.mean[index:index + 1], self.var[index:index + 1])


def own_moments(x: torch.Tensor, groups: int) -> Moments:
    """The statistics InstanceNorm (groups = C) or GroupNorm computes from `x` (B, C, H, W)."""
    values = x if x.dtype == torch.float32 else x.float()
    batch, channels = values.shape[:2]
    # torch's own group norm kernel returns the mean and 1/std it normalised with; it reads
    # channels_last input in place, about 10x faster than var_mean over (H, W) there. Its
    # normalised output is not used. eps = 0 gives the plain variance (1/inf^2 = 0 if flat).
    _, mean, rstd = torch.native_group_norm(values, None, None, batch, channels,
                                            values[0, 0].numel(), groups, 0.0)
    return Moments(mean, rstd.pow(-2))


def normalise(x: torch.Tensor, moments: Moments, groups: int, weight: torch.Tensor | None,
              bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias, per group, as one fused multiply-add."""
    per_group = x.shape[1] // groups
    scale = torch.rsqrt(moments.var + eps).repeat_interleave(per_group, dim=1)  # (B, C)
    mean = moments.mean.repeat_interleave(per_group, dim=1)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return torch.addcmul(shift[..., None, None], x, scale[..., None, None])  # (B, C, H, W)


class StatisticsSource:
    """Decides the statistics each norm layer normalises with; `moments` is called once per
    norm layer per forward pass, with the layer's position `index` in that pass."""

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        raise NotImplementedError


class OwnStatistics(StatisticsSource):
    """Each input's own statistics: the normal forward, computed by this module."""

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        return own_moments(x, groups)


class RecordStatistics(StatisticsSource):
    """Uses the statistics of `inner` (default: the input's own) and records them per layer,
    so a later pass can be given them (`FixedStatistics`)."""

    def __init__(self, inner: StatisticsSource | None = None) -> None:
        self.inner = inner or OwnStatistics()
        self.recorded: list[tuple[nn.Module, Moments]] = []

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        used = self.inner.moments(index, layer, x, groups)
        self.recorded.append((layer, used))
        return used


class FixedStatistics(StatisticsSource):
    """The statistics of an earlier pass of the same network (`RecordStatistics.recorded`)."""

    def __init__(self, recorded: Sequence[tuple[nn.Module, Moments]]) -> None:
        self.recorded = list(recorded)

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        if index >= len(self.recorded) or self.recorded[index][0] is not layer:
            raise RuntimeError(f"norm layer {index} of this pass is not the one recorded there: "
                               "statistics were recorded on another network")
        return self.recorded[index][1]


class RunningStatistics:
    """An exponential average of each layer's statistics over consecutive frames.

    `window` frames is the average's time constant: each frame's own statistics enter with
    weight 2 / (window + 1) (the span convention, so window 1 is per-frame). Means and second
    moments are averaged, so the variance used is that of all the frames' pixels pooled (it
    includes the spread of the means), as whole-image statistics pool tiles. The average restarts
    at a scene cut: a new shot's colours should not be normalised with the last shot's.

    `batch(scene_starts)` hands out the source for the next forward pass, in frame order.
    Passes may run at the same time on several threads: each layer of a pass waits until the
    pass before has updated that layer, so two passes run one layer apart (a wavefront) and
    compute exactly what one after the other would.
    """

    def __init__(self, window: int = 16, timeout: float = 600.0) -> None:
        if not isinstance(window, int) or window < 1:
            raise invalid("window", window, "not a positive integer",
                          "a number of frames >= 1 (1 = per-frame statistics)")
        self.alpha, self.timeout = 2.0 / (window + 1), timeout
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index -> (mean, E[x^2])
        self.turn: dict[int, int] = {}  # index -> passes that have updated that layer
        self.passes, self.failed = 0, False
        self.changed = threading.Condition()

    def batch(self, scene_starts: Sequence[bool]) -> StatisticsSource:
        """The source of the next pass over consecutive frames; frame b of its batch starts a
        new scene (or the video) when scene_starts[b]."""
        ticket, self.passes = self.passes, self.passes + 1
        return _RunningPass(self, ticket, list(scene_starts))

    def abort(self) -> None:
        """A pass failed: wake the passes waiting for it, which then fail too."""
        with self.changed:
            self.failed = True
            self.changed.notify_all()

    def update(self, index: int, ticket: int, own: Moments, starts: list[bool]) -> Moments:
        """Pass `ticket`'s statistics at layer `index`, once the pass before has updated it."""
        with self.changed:
            ready = self.changed.wait_for(
                lambda: self.failed or self.turn.get(index, 0) == ticket, self.timeout)
            if self.failed or not ready:
                raise RuntimeError("running statistics: an earlier pass failed or stalled")
            mean, square = self.state.get(index, (None, None))
            means, squares = [], []
            for b in range(len(starts)):  # frames in time order: each builds on the last
                own_square = own.var[b] + own.mean[b] ** 2
                if mean is None or starts[b]:
                    mean, square = own.mean[b], own_square
                else:
                    mean = torch.lerp(mean, own.mean[b], self.alpha)
                    square = torch.lerp(square, own_square, self.alpha)
                means.append(mean)
                squares.append(square)
            self.state[index], self.turn[index] = (mean, square), ticket + 1
            self.changed.notify_all()
        mean_b, square_b = torch.stack(means), torch.stack(squares)  # (B, G)
        return Moments(mean_b, (square_b - mean_b**2).clamp_(min=0))


class _RunningPass(StatisticsSource):
    """One forward pass's view of a RunningStatistics."""

    def __init__(self, running: RunningStatistics, ticket: int, starts: list[bool]) -> None:
        self.running, self.ticket, self.starts = running, ticket, starts

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        if len(self.starts) != x.shape[0]:
            raise RuntimeError(f"{x.shape[0]} frames in this pass but {len(self.starts)} "
                               "scene flags were given (RunningStatistics.batch)")
        own = own_moments(x, groups)  # outside the lock: passes compute in parallel
        return self.running.update(index, self.ticket, own, self.starts)


class PooledStatistics(StatisticsSource):
    """Normalises with `inner`'s statistics and pools each layer's own input statistics over
    several passes (the tiles of one image), each sample counted over its `region` only: the
    part of the image its tile owns, so pixels where tiles overlap count once.

    Regions are (top, bottom, left, right) fractions of the sample's feature maps, set with
    `regions` before each pass; fractions carry over to every layer's resolution.
    """

    def __init__(self, inner: StatisticsSource) -> None:
        self.inner = inner
        self.boxes: list[tuple[float, float, float, float]] = []
        self.sums: dict[int, list] = {}  # index -> [layer, sum n*mean, sum n*E[x^2], n]

    def regions(self, boxes: Sequence[tuple[float, float, float, float]]) -> PooledStatistics:
        self.boxes = list(boxes)
        return self

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        height, width = x.shape[-2:]
        entry = self.sums.setdefault(index, [layer, 0.0, 0.0, 0])
        for b, (top, bottom, left, right) in enumerate(self.boxes):
            crop = x[b:b + 1, :, round(top * height):max(round(bottom * height), 1),
                     round(left * width):max(round(right * width), 1)]
            own, count = own_moments(crop, groups), crop.shape[-2] * crop.shape[-1]
            # float64 sums: millions of pixels over dozens of tiles
            entry[1] = entry[1] + own.mean.double() * count
            entry[2] = entry[2] + (own.var.double() + own.mean.double() ** 2) * count
            entry[3] += count
        return self.inner.moments(index, layer, x, groups)

    def pooled(self) -> list[tuple[nn.Module, Moments]]:
        """Per layer, the statistics of all regions' pixels together (`FixedStatistics` input)."""
        result = []
        for index in sorted(self.sums):
            layer, mean_sum, square_sum, count = self.sums[index]
            mean, square = mean_sum / count, square_sum / count
            result.append((layer, Moments(mean.float(), (square - mean**2).clamp(min=0).float())))
        return result


class CorrectedStatistics(StatisticsSource):
    """The input's own statistics, corrected per layer: mean + shift, variance * ratio.

    Records what it saw (`own`) and what it used (`used`). With corrections that map a
    downscaled image's statistics to the full-resolution image's (`correction`), one pass over
    the downscaled image gives statistics close to those of the full image.
    """

    def __init__(self, corrections: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                 ) -> None:
        self.corrections = list(corrections or [])
        self.own: list[tuple[nn.Module, Moments]] = []
        self.used: list[tuple[nn.Module, Moments]] = []

    def moments(self, index: int, layer: nn.Module, x: torch.Tensor, groups: int) -> Moments:
        own = own_moments(x, groups)
        used = own
        if index < len(self.corrections):
            shift, ratio = self.corrections[index]
            used = Moments(own.mean + shift, own.var * ratio)
        self.own.append((layer, own))
        self.used.append((layer, used))
        return used


def correction(target: Moments, seen: Moments) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, ratio) that maps statistics `seen` onto `target`: mean shift, variance ratio.
    A channel flat in `seen` keeps ratio 1 (nothing to scale)."""
    ratio = torch.where(seen.var > 0, target.var / seen.var.clamp(min=1e-12),
                        torch.ones_like(seen.var))
    return target.mean - seen.mean, ratio


class _Pass:
    """One forward pass under a source: counts the norm layers as they are called."""

    def __init__(self, source: StatisticsSource) -> None:
        self.source, self.calls = source, 0

    def apply(self, layer: nn.Module, x: torch.Tensor, groups: int) -> torch.Tensor:
        index, self.calls = self.calls, self.calls + 1
        moments = self.source.moments(index, layer, x, groups)
        return normalise(x, moments, groups, layer.weight, layer.bias, layer.eps)


_ACTIVE: contextvars.ContextVar[_Pass | None] = contextvars.ContextVar("norm_statistics",
                                                                        default=None)


def active_pass() -> _Pass | None:
    """The pass the current thread runs under `norm_statistics`, if any (read by the norms)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def norm_statistics(source: StatisticsSource) -> Iterator[None]:
    """Within the block (one forward pass, this thread only) cyclestyle's InstanceNorm2d and
    GroupNorm layers normalise with the statistics `source` gives them."""
    token = _ACTIVE.set(_Pass(source))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


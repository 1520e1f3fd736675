"""Training diagnostics users ask for: is the generator copying, is a discriminator winning?

Two failure modes of CycleGAN training show in numbers long before they show in samples:

- **Copying.** mean |G_AB(A) - A| near zero: the cycle and identity terms are satisfied by doing
  nothing, and the adversarial term is too weak to move the generator.
- **The discriminator wins.** D tells real from fake on nearly every patch: its gradient to the
  generator saturates or points nowhere useful, and the generator stops improving.

The trainer logs the numbers every `train.log_every` steps (`change_ab`, `change_ba`,
`d_a_acc_real`, `d_a_acc_fake`, `d_b_acc_real`, `d_b_acc_fake`); `Diagnostics` watches them and
warns once per stretch, with the usual remedies.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# mean |G(x) - x| on the [-1, 1] scale below which a generator counts as copying: 0.02 is 2.5
# 8-bit levels, far below any visible translation (the demo's cartoon mapping is about 0.3).
COPY_THRESHOLD = 0.02
# Both accuracies above this: the discriminator calls nearly every patch right.
WIN_THRESHOLD = 0.99
# A condition must hold at this many consecutive logs, covering at least STRETCH_STEPS steps
# (or a fifth of a shorter run), before it is worth a warning: early training passes through
# both states briefly.
MIN_LOGS = 3
STRETCH_STEPS = 1000

COPY_REMEDIES = ("lower loss.lambda_identity (it rewards copying) or loss.lambda_cycle, raise "
                 "train.lr, and check that the two domains really differ")
WIN_REMEDIES = ("train.diff_augment=[color,translation,cutout] (few images), loss.r1_gamma=1, "
                "a shallower discriminator (model.discriminator_args.n_layers) or spectral norm, "
                "more training images")


@dataclass
class _Streak:
    """Consecutive logs at which a condition held, and whether it was already reported."""

    logs: int = 0
    since: int = 0
    warned: bool = False

    def update(self, holds: bool, step: int) -> None:
        if not holds:
            self.logs, self.warned = 0, False
            return
        if self.logs == 0:
            self.since = step
        self.logs += 1


@dataclass
class Diagnostics:
    """Watches logged values; `check(step, values, max_steps)` returns the warnings it issued."""

    log_every: int
    streaks: dict[str, _Streak] = field(default_factory=dict)
    needed_logs: int = MIN_LOGS

    def check(self, step: int, values: dict[str, float], max_steps: int) -> list[str]:
        stretch = min(STRETCH_STEPS, max(1, max_steps // 5))
        self.needed_logs = max(MIN_LOGS, math.ceil(stretch / max(1, self.log_every)))
        messages = []
        for direction in ("ab", "ba"):
            change = values.get(f"change_{direction}")
            if change is not None:
                message = self._watch(
                    f"copy_{direction}", change < COPY_THRESHOLD, step,
                    f"G_{direction.upper()} barely changes its input (mean |G(x) - x| = "
                    f"{change:.4f} on the [-1, 1] scale)", COPY_REMEDIES)
                messages += [message] if message else []
        for d in ("d_a", "d_b"):
            real, fake = values.get(f"{d}_acc_real"), values.get(f"{d}_acc_fake")
            if real is not None and fake is not None:
                message = self._watch(
                    f"win_{d}", min(real, fake) > WIN_THRESHOLD, step,
                    f"{d.upper()} wins completely (right on {real:.1%} of real and {fake:.1%} "
                    "of fake patches), so the generator gets little useful gradient",
                    WIN_REMEDIES)
                messages += [message] if message else []
        for message in messages:
            log.warning(message)
        return messages

    def _watch(self, key: str, holds: bool, step: int, what: str, remedies: str) -> str | None:
        streak = self.streaks.setdefault(key, _Streak())
        streak.update(holds, step)
        if streak.warned or streak.logs < self.needed_logs:
            return None
        streak.warned = True
        return f"step {step}: {what} since step {streak.since}; usual remedies: {remedies}"

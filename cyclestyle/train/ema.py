"""An exponential moving average of generator weights (Polyak averaging for GANs).

GAN generators oscillate around a good solution as the discriminator chases them; the average
of recent weights is smoother and usually better (Yazici et al. 2019, "The Unusual
Effectiveness of Averaging in GAN Training"; Karras et al. use it in every StyleGAN). The EMA
copy is what samples, held-out evaluation, `best.pt`, translate and export use when present.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """ema <- d * ema + (1 - d) * weights after each optimizer step, with a warm-up
    d_t = min(decay, (1 + t) / (10 + t)) so early, far-from-converged weights fade fast.

    Buffers (none in our generators but norm statistics if any) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay} must lie in (0, 1)")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - d)  # ema + (1 - d) (p - ema)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        weights = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return {"decay": self.decay, "updates": self.updates, "weights": weights}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.module.load_state_dict(state["weights"])

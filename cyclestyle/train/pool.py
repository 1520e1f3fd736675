"""History pool of generated images (Shrivastava et al. 2017, used by CycleGAN).

The discriminators see a mix of the newest fakes and older ones, which damps oscillation. The
pool draws from its own seeded generator and has a state dict, so a resumed run makes exactly
the choices the uninterrupted run would have made.
"""

from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []  # each (C, H, W), float32, on the training device
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch the size of `images`: each one is the new image, or with probability
        1/2 (once the pool is full) a stored older one that the new image then replaces.

        With whole-image training (batch size 1) an older image may differ in size from the new
        one; the trainer crops real and fake to a common size before the discriminator."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach().float():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
                continue
            # Draw on CPU from our own generator: reproducible and no device sync.
            swap, slot = torch.rand(1, generator=self.generator).item(), torch.randint(
                self.size, (1,), generator=self.generator).item()
            if swap < 0.5:
                out.append(self.images[slot])
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out).to(images.dtype)

    def state_dict(self) -> dict:
        # Whole-image training (data.preprocess scale_width / none) keeps fakes of several sizes,
        # which cannot be stacked: a list of tensors then (load_state_dict takes either).
        sizes = {tuple(img.shape) for img in self.images}
        images = ([img.cpu() for img in self.images] if len(sizes) > 1 else
                  torch.stack(self.images).cpu() if self.images else torch.empty(0))
        return {"size": self.size, "images": images, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = state["size"]
        self.images = [img.to(device) for img in state["images"]]
        self.generator.set_state(state["rng"])

"""cyclestyle: CycleGAN-style unpaired image domain transfer."""

__version__ = "0.1.0"

"""The resize modes of FID/KID feature extraction, by name (torch-free, so configs and
`--help` can list them without importing torch; `features.resize_to` implements them)."""

from __future__ import annotations

__all__ = ["RESIZE_MODES"]

RESIZE_MODES = {
    "pil_bicubic": "PIL bicubic with antialiasing, per channel in float32 (no re-quantisation)",
    "tf1_bilinear": "TensorFlow 1 ResizeBilinear (align_corners=False, no half-pixel centres, "
                    "no antialiasing), as in the original TF FID code",
}

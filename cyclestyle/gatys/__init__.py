"""Gatys et al. (2015) neural style: optimise one image's pixels against a frozen VGG19.

    from cyclestyle.gatys import GatysConfig, load_vgg, transfer
    config = GatysConfig(sizes=[256, 512])
    image = transfer(load_vgg(config), content, [style], config)

`config` holds the settings (torch-free, also the CLI's flags), `transfer` the losses and the
optimisation, `color` the colour controls, `cli` the `cyclestyle gatys` command. Exports load
on first use, so the CLI's `--help` does not import torch.
"""

from cyclestyle._lazy import lazy_exports

_CONFIG = "cyclestyle.gatys.config"
_TRANSFER = "cyclestyle.gatys.transfer"
_COLOR = "cyclestyle.gatys.color"
__getattr__, __dir__ = lazy_exports(__name__, {
    "OPTIMIZERS": _CONFIG,
    "GatysConfig": _CONFIG,
    "min_image_side": _CONFIG,
    "GatysLoss": _TRANSFER,
    "blend_weights": _TRANSFER,
    "finish": _TRANSFER,
    "initial_image": _TRANSFER,
    "load_vgg": _TRANSFER,
    "optimise": _TRANSFER,
    "resize_longest": _TRANSFER,
    "total_variation": _TRANSFER,
    "transfer": _TRANSFER,
    "match_color": _COLOR,
    "rgb_to_ycbcr": _COLOR,
    "transfer_luminance": _COLOR,
    "ycbcr_to_rgb": _COLOR,
})

"""Networks: generators and discriminators built by name from a registry, VGG features, and
the factory that builds a whole set of networks from a `ModelConfig`, and normalisation
statistics supplied from a chosen extent (`norm_statistics`, for tiles and video frames).

    from cyclestyle.models import create_generator
    g_ab = create_generator("unet_attn", base_channels=32)

Exports load on first use, so importing `cyclestyle.models.factory` (the torch-free config)
does not import torch; the registry registers every model family before its first lookup.
"""

from cyclestyle._lazy import lazy_exports

_REGISTRY = "cyclestyle.models.registry"
__getattr__, __dir__ = lazy_exports(__name__, {
    "PatchGANDiscriminator": "cyclestyle.models.patchgan",
    "ResnetGenerator": "cyclestyle.models.resnet",
    "UNetAttnGenerator": "cyclestyle.models.unet_attn",
    "channels_last_is_safe": "cyclestyle.models.layers",
    "receptive_field": "cyclestyle.models.patchgan",
    "create_discriminator": _REGISTRY,
    "create_generator": _REGISTRY,
    "discriminator_arguments": _REGISTRY,
    "generator_arguments": _REGISTRY,
    "list_discriminators": _REGISTRY,
    "list_generators": _REGISTRY,
    "register_discriminator": _REGISTRY,
    "register_generator": _REGISTRY,
    "norm_statistics": "cyclestyle.models.norm_stats",
    "RecordStatistics": "cyclestyle.models.norm_stats",
    "FixedStatistics": "cyclestyle.models.norm_stats",
    "RunningStatistics": "cyclestyle.models.norm_stats",
    "ModelConfig": "cyclestyle.models.factory",
    "Networks": "cyclestyle.models.factory",
    "build_generators": "cyclestyle.models.factory",
    "build_networks": "cyclestyle.models.factory",
})

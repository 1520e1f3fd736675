"""Networks: generators and discriminators, built by name from a registry.

    from cyclestyle.models import create_generator
    g_ab = create_generator("unet_attn", base_channels=32)

Importing this package registers every model family below.
"""

from cyclestyle.models.layers import channels_last_is_safe
from cyclestyle.models.patchgan import PatchGANDiscriminator, receptive_field
from cyclestyle.models.registry import (
    create_discriminator,
    create_generator,
    discriminator_arguments,
    generator_arguments,
    list_discriminators,
    list_generators,
    register_discriminator,
    register_generator,
)
from cyclestyle.models.resnet import ResnetGenerator
from cyclestyle.models.unet_attn import UNetAttnGenerator

__all__ = [
    "PatchGANDiscriminator",
    "ResnetGenerator",
    "UNetAttnGenerator",
    "channels_last_is_safe",
    "create_discriminator",
    "create_generator",
    "discriminator_arguments",
    "generator_arguments",
    "list_discriminators",
    "list_generators",
    "receptive_field",
    "register_discriminator",
    "register_generator",
]

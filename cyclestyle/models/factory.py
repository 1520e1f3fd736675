"""The model section of a config and the factory that builds a whole set of networks from it.

`ModelConfig` is plain data (no torch at import): training configs, checkpoints and release
files all store it, and `build_generators` / `build_networks` rebuild the networks from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cyclestyle.options import ConfigError

if TYPE_CHECKING:
    from torch import nn


@dataclass
class ModelConfig:
    generator: str = "unet_attn"
    discriminator: str = "patchgan"
    # Constructor arguments of the chosen networks; checked against their signatures.
    generator_args: dict[str, Any] = field(default_factory=dict)
    discriminator_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from cyclestyle.models import registry

        for kind, name, args, known in (
            ("generator", self.generator, self.generator_args, registry.list_generators()),
            ("discriminator", self.discriminator, self.discriminator_args,
             registry.list_discriminators()),
        ):
            if name not in known:
                raise ConfigError(f"model.{kind}: {name!r} is invalid: not a registered {kind}; "
                                  f"valid: {', '.join(known)}")
            accepted = (registry.generator_arguments(name) if kind == "generator"
                        else registry.discriminator_arguments(name))
            unknown = sorted(set(args) - set(accepted))
            if unknown:
                raise ConfigError(f"model.{kind}_args: {', '.join(unknown)} is invalid: not "
                                  f"accepted by {name!r}; valid: {', '.join(sorted(accepted))}")


@dataclass
class Networks:
    g_ab: nn.Module  # G_AB: A -> B
    g_ba: nn.Module  # G_BA: B -> A
    d_a: nn.Module  # D_A: real A vs G_BA(B)
    d_b: nn.Module  # D_B: real B vs G_AB(A)


def build_generators(model: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """G_AB and G_BA as `model` describes them."""
    from cyclestyle.models.registry import create_generator

    kwargs = model.generator_args
    return create_generator(model.generator, **kwargs), create_generator(model.generator, **kwargs)


def build_networks(model: ModelConfig) -> Networks:
    """G_AB, G_BA, D_A, D_B as `model` describes them."""
    from cyclestyle.models.registry import create_discriminator

    g_ab, g_ba = build_generators(model)
    kw = model.discriminator_args
    return Networks(g_ab, g_ba, create_discriminator(model.discriminator, **kw),
                    create_discriminator(model.discriminator, **kw))

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


# cyclegan: two generators and two discriminators, cycle-consistency (Zhu et al. 2017).
# cut / fastcut: one generator (A -> B) and D_B, PatchNCE between each image and its
# translation instead of a cycle (Park et al. 2020): about half the network passes per step.
OBJECTIVES = ("cyclegan", "cut", "fastcut")


@dataclass
class ModelConfig:
    objective: str = "cyclegan"
    generator: str = "unet_attn"
    discriminator: str = "patchgan"
    # Constructor arguments of the chosen networks; checked against their signatures.
    generator_args: dict[str, Any] = field(default_factory=dict)
    discriminator_args: dict[str, Any] = field(default_factory=dict)

    @property
    def one_way(self) -> bool:
        """Whether only G_AB and D_B exist (the contrastive objectives)."""
        return self.objective != "cyclegan"

    def validate(self) -> None:
        from cyclestyle.models import registry

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"model.objective: {self.objective!r} is invalid: not a known "
                              f"objective; valid: {', '.join(OBJECTIVES)}")
        encoders = registry.generators_with_encoder()
        if self.one_way and self.generator in registry.list_generators() and \
                self.generator not in encoders:
            raise ConfigError(f"model.generator: {self.generator!r} is invalid: objective "
                              f"{self.objective} needs a generator with encoder features; "
                              f"valid: {', '.join(encoders)}")
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
    """The networks of one objective; those it does not use are None (g_ba and d_a under cut
    and fastcut, nce_heads under cyclegan). `present()` lists the others by name."""

    g_ab: nn.Module  # G_AB: A -> B
    d_b: nn.Module  # D_B: real B vs G_AB(A)
    g_ba: nn.Module | None = None  # G_BA: B -> A
    d_a: nn.Module | None = None  # D_A: real A vs G_BA(B)
    nce_heads: nn.Module | None = None  # CUT's patch projection MLPs

    def present(self) -> dict[str, nn.Module]:
        return {name: net for name, net in vars(self).items() if net is not None}


def build_generators(model: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """G_AB and G_BA as `model` describes them."""
    from cyclestyle.models.registry import create_generator

    kwargs = model.generator_args
    return create_generator(model.generator, **kwargs), create_generator(model.generator, **kwargs)


def build_networks(model: ModelConfig) -> Networks:
    """The networks `model.objective` trains, as `model` describes them: G_AB, G_BA, D_A, D_B
    for cyclegan; G_AB, D_B and the patch projection heads for cut and fastcut."""
    from cyclestyle.models.registry import create_discriminator, create_generator

    kw = model.discriminator_args
    if model.one_way:
        from cyclestyle.models.patch_nce import PatchProjection, encoder_channels

        g_ab = create_generator(model.generator, **model.generator_args)
        heads = PatchProjection(encoder_channels(g_ab, model.generator_args.get("in_channels", 3)))
        return Networks(g_ab, create_discriminator(model.discriminator, **kw), nce_heads=heads)
    g_ab, g_ba = build_generators(model)
    d_a = create_discriminator(model.discriminator, **kw)  # built in this order: seeded weights
    d_b = create_discriminator(model.discriminator, **kw)
    return Networks(g_ab, d_b, g_ba, d_a)

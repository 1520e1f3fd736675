"""Name -> class registries for generators and discriminators.

A model's constructor arguments are its whole configuration: they are plain JSON values, so a
config file or checkpoint can store them and `create_generator(name, **args)` rebuilds the net.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

_GENERATORS: dict[str, type[nn.Module]] = {}
_DISCRIMINATORS: dict[str, type[nn.Module]] = {}
# The leading constructor arguments every model of a kind must have, in this order.
_LEADING_ARGUMENTS = {"generator": ("in_channels", "out_channels"), "discriminator": ("in_channels",)}
_JSON_SCALARS = (bool, int, float, str, type(None))


def _is_json_value(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, _JSON_SCALARS) for item in value)
    return isinstance(value, _JSON_SCALARS)


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _signature_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    """Constructor arguments of `cls` and their defaults, in declaration order."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return {p.name: p.default for p in parameters}


def _check_class(kind: str, name: str, cls: type[nn.Module]) -> None:
    """Registration-time checks, so a malformed model fails on import, not mid-experiment."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            raise TypeError(f"{kind} {name!r}: argument {p.name!r} needs a default and a name")
        if not _is_json_value(p.default):
            raise TypeError(f"{kind} {name!r}: default of {p.name!r} is not a JSON value")
    leading = tuple(p.name for p in parameters[: len(_LEADING_ARGUMENTS[kind])])
    if leading != _LEADING_ARGUMENTS[kind]:
        raise TypeError(f"{kind} {name!r} must take {_LEADING_ARGUMENTS[kind]} first, got {leading}")


def _register(table: dict[str, type[nn.Module]], kind: str, name: str) -> Callable:
    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__name__})")
        _check_class(kind, name, cls)
        table[name] = cls
        return cls

    return decorator


_FAMILIES = ("cyclestyle.models.resnet", "cyclestyle.models.unet_attn", "cyclestyle.models.patchgan",
             "cyclestyle.models.reference_unet", "cyclestyle.models.cut_resnet")


def _ensure_registered() -> None:
    """Import the built-in model families (each registers itself) before any lookup."""
    import importlib

    for module in _FAMILIES:
        importlib.import_module(module)


def _lookup(table: dict[str, type[nn.Module]], kind: str, name: str) -> type[nn.Module]:
    _ensure_registered()
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; registered {kind}s: {sorted(table)}")
    return table[name]


def _check_kwargs(kind: str, name: str, cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    accepted = list(_signature_defaults(cls))
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"{kind} {name!r} got unknown argument(s) {unknown}; accepted: {accepted}")
    for key, value in kwargs.items():
        if not _is_json_value(value):
            raise TypeError(
                f"{kind} {name!r}: argument {key}={value!r} is not a JSON value "
                "(int, float, str, bool, or a list of these)"
            )


def _create(table: dict[str, type[nn.Module]], kind: str, name: str, kwargs: dict) -> nn.Module:
    cls = _lookup(table, kind, name)
    _check_kwargs(kind, name, cls, kwargs)
    model = cls(**kwargs)
    # Everything needed to rebuild this exact network:
    # create_<kind>(model.registry_name, **model.config).
    model.registry_name = name
    model.config = {**_arguments(table, kind, name), **{k: _to_json(v) for k, v in kwargs.items()}}
    return model


def _arguments(table: dict[str, type[nn.Module]], kind: str, name: str) -> dict[str, Any]:
    cls = _lookup(table, kind, name)
    return {key: _to_json(value) for key, value in _signature_defaults(cls).items()}


def register_generator(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a generator available as `create_generator(name)`."""
    return _register(_GENERATORS, "generator", name)


def register_discriminator(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a discriminator available as `create_discriminator(name)`."""
    return _register(_DISCRIMINATORS, "discriminator", name)


def create_generator(name: str, **kwargs: Any) -> nn.Module:
    """Build the generator registered as `name`.

    The result carries `registry_name` and `config` (every constructor argument, JSON values),
    which is all a checkpoint needs to rebuild it.
    """
    return _create(_GENERATORS, "generator", name, kwargs)


def create_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """Build the discriminator registered as `name` (with `registry_name` and `config`)."""
    return _create(_DISCRIMINATORS, "discriminator", name, kwargs)


def list_generators() -> list[str]:
    _ensure_registered()
    return sorted(_GENERATORS)


def list_discriminators() -> list[str]:
    _ensure_registered()
    return sorted(_DISCRIMINATORS)


def generators_with_encoder() -> list[str]:
    """Generators with an `encode(x)` method (encoder features), which cut/fastcut need."""
    _ensure_registered()
    return sorted(name for name, cls in _GENERATORS.items() if callable(getattr(cls, "encode", None)))


def generator_arguments(name: str) -> dict[str, Any]:
    """Constructor arguments of generator `name` with their defaults (tuples as lists)."""
    return _arguments(_GENERATORS, "generator", name)


def discriminator_arguments(name: str) -> dict[str, Any]:
    """Constructor arguments of discriminator `name` with their defaults (tuples as lists)."""
    return _arguments(_DISCRIMINATORS, "discriminator", name)

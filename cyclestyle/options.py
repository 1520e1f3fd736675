"""Typed options: dataclasses filled from YAML, `--set key=value` and command-line flags.

Every command's settings are a dataclass. This module builds them from plain data (rejecting
unknown keys and wrong types), applies `--set` overrides, turns a dataclass into argparse flags
(so a field, its flag, its default and its help are written once), and holds the one error
grammar of the package:

    <key>: <value> is invalid: <why>; <what is valid>

The CLI prints a `ConfigError` on one line and exits 2, whatever the command. No torch here:
`cyclestyle --help` must stay instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value, key or option is invalid; the message names the key."""


def invalid(key: str, value: Any, why: str, valid: str) -> ConfigError:
    """The one wording of a bad value: `<key>: <value> is invalid: <why>; <what is valid>`."""
    return ConfigError(f"{key}: {value!r} is invalid: {why}; {valid}")


def check(ok: bool, key: str, value: Any, why: str, valid: str) -> None:
    if not ok:
        raise invalid(key, value, why, valid)


def check_finite(key: str, value: float) -> None:
    check(math.isfinite(value), key, value, "not a finite number", "expected a finite number")


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message (TorchScript's start with an empty one),
    without its closing full stop."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else "(no message)"


# --- building from plain data ---------------------------------------------------------------

def from_dict(data: dict[str, Any] | None, cls: type, prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, rejecting unknown keys and wrong types."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise invalid(prefix.rstrip(".") or "config", data, f"a {type(data).__name__}",
                      "expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"unknown key(s) {', '.join(prefix + str(k) for k in unknown)} at "
                          f"{where}; valid keys: {', '.join(prefix + k for k in fields)}")
    values = {name: _coerce(data[name], hints[name], prefix + name)
              for name in fields if name in data}
    built = cls(**values)
    # Remembered so that a value equal to its default can still be told apart from an unset
    # one (train.max_steps given next to train.epochs must agree with them; see given_keys).
    object.__setattr__(built, _GIVEN, frozenset(values))
    return built


_GIVEN = "_cyclestyle_given_keys"


def given_keys(obj: Any) -> frozenset[str] | None:
    """The fields that `from_dict` found in the data (YAML or `--set`) for `obj`, or None when
    `obj` was not built by `from_dict` (then nothing is known about what was set)."""
    return getattr(obj, _GIVEN, None)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise invalid(key, value, "not a list", "expected a list, e.g. [1, 2]")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise invalid(key, value, "not a mapping", "expected a mapping, e.g. {a: 1}")
        return dict(value)
    if hint is Any:
        return value
    return _coerce_scalar(value, hint, key)


def _coerce_scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise invalid(key, value, "not a boolean", "expected true or false")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(key, value, "not an integer", "expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(key, value, "not a number", "expected a number")
        return float(value)
    if hint is str:
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted `no`/`off` as false; the strings our keys accept are
            # never booleans, so give the most common spelling back.
            return "yes" if value else "no"
        if not isinstance(value, (str, int, float)):
            raise invalid(key, value, "not a string", "expected a string")
        return str(value)
    raise TypeError(f"option type {hint!r} of {key} is not supported")  # a bug, not user error


def parse_yaml_value(raw: str, where: str) -> Any:
    """A `--set` value as YAML (`3`, `true`, `[1, 2]`); a YAML error is a ConfigError."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or first_line(err)
        raise invalid(where, raw, f"not valid YAML ({problem})",
                      "quote strings that start with [ { @ ` or contain ': '") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML (`3`, `true`, `[1, 2]`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise invalid("--set", item, "not of the form key=value",
                          "e.g. --set train.max_steps=100")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise invalid("--set", item, f"{part!r} is not a section", "name a key inside one")
            node = child
        node[parts[-1]] = parse_yaml_value(raw, f"--set {key.strip()}")
    return data


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping; every problem is one ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise invalid("config", str(path), "a folder, not a file", "expected a YAML file")
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise invalid("config", str(path), f"cannot be read ({first_line(err)})",
                      "expected a readable YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {first_line(err)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, train:, "
                          f"...), got a YAML {type(data).__name__}")
    return data


def flat_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys, e.g. for `--help` and error messages."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += flat_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


# --- dataclass <-> argparse -----------------------------------------------------------------
# A field becomes a flag from its name (`tile_overlap` -> `--tile-overlap`), its type, its
# default and its `help` metadata: `field(default=64, metadata={"help": "..."})`. Metadata may
# also carry "choices", "flag" (another spelling), "metavar" and "type" (an argparse parser).

def option(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:  # noqa: A002
    """A dataclass field with its command-line help (and optional choices/flag/metavar)."""
    kwargs = {"default_factory": default} if callable(default) else {"default": default}
    if default is dataclasses.MISSING:
        kwargs = {}
    return dataclasses.field(metadata={"help": help, **meta}, **kwargs)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type,
                            skip: tuple[str, ...] = ()) -> None:
    """One flag per field of `cls` (not in `skip`); values are checked by `cls.validate`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        meta, hint = f.metadata, hints[f.name]
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = meta["help"]
        if _base_type(hint) is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=text + " (default: %(default)s)")
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": text}
        if isinstance(default, (list, tuple)) and default:
            kwargs["help"] = text + f" (default: {','.join(str(v) for v in default)})"
        elif default not in (None, "", []):
            kwargs["help"] = text + " (default: %(default)s)"
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        base = _base_type(hint)
        if "type" in meta:  # a parser of its own (e.g. a number or a keyword)
            kwargs["type"] = meta["type"]
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base) or (str,)
            kwargs["type"] = list_parser(item)
        elif base in (int, float):
            kwargs["type"] = _number_parser(base)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if meta.get("positional"):  # also accepted as the command's first argument
            parser.add_argument(POSITIONAL_PREFIX + f.name, nargs="?", default=None,
                                metavar=f.name.upper(), help=f"the same as {flag}")
            kwargs["default"] = None  # dataclass_from_args checks that one of the two is given
        elif required:
            kwargs["required"] = True
            kwargs.pop("default")
        parser.add_argument(flag, **kwargs)


# The dest of a field's positional spelling (metadata "positional": True).
POSITIONAL_PREFIX = "positional_"


def dataclass_from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """Build `cls` from the parsed flags `add_dataclass_arguments` made (and `extra`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            values[f.name] = _one_of(f.name, values.get(f.name),
                                     getattr(args, POSITIONAL_PREFIX + f.name, None))
    return cls(**values, **extra)


def _one_of(name: str, flagged: Any, positional: Any) -> Any:
    """A field given as --name or as the first argument, once."""
    flag = "--" + name.replace("_", "-")
    if flagged is not None and positional is not None and flagged != positional:
        raise invalid(flag, flagged, f"the first argument says {positional!r}",
                      f"give {name.upper()} once, as the first argument or as {flag}")
    value = flagged if flagged is not None else positional
    if value is None:
        raise ConfigError(f"{flag}: missing: {name.upper()} is required, as the first argument "
                          f"or as {flag}")
    return value


def _base_type(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)][0]
    return hint


def _number_parser(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: not {noun}") from None
    parse.__name__ = kind.__name__
    return parse


def list_parser(item: type) -> Any:
    """argparse `type=` for comma-separated values of `item` ("256,512" -> [256, 512])."""
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: an empty item; expected "
                                             "comma-separated values, e.g. 256,512")
        try:
            return [item(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is invalid: expected comma-separated {item.__name__} values") from None
    parse.__name__ = "list"
    return parse

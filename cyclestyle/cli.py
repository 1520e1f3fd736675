"""The `cyclestyle` command: the root parser only; each capability adds its own subcommands.

Nothing heavy is imported to build the parser, so `--help` and `--version` answer at once.
Every user error (ConfigError and the other ValueErrors, a missing file) is printed on one
line with exit code 2, whatever the command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap

from cyclestyle import __version__

EPILOG = textwrap.dedent("""\
    Run `cyclestyle COMMAND --help` for each command's options.
    Quick start: `cyclestyle demo` trains a small photo -> cartoon translator on CPU (about
    10 minutes) from images bundled with scikit-image and writes an HTML report.
    """)


_CAPABILITIES = ("cyclestyle.train.cli", "cyclestyle.translate.cli", "cyclestyle.gatys.cli",
                 "cyclestyle.metrics.cli")


class OneLineErrors(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like every other error (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="cyclestyle", description="CycleGAN-style unpaired image-to-image translation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cyclestyle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _CAPABILITIES:  # each capability adds its own subcommands
        module = importlib.import_module(name)
        (getattr(module, "add_parsers", None) or module.add_parser)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        if args.verbose or os.environ.get("CYCLESTYLE_DEBUG"):
            raise
        print(f"cyclestyle {args.command}: error: {one_line(err)} (-v for the traceback)",
              file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's without its quotes)."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
        message = f"{err.filename}: {err.strerror or message}"
    return " ".join(message.split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())

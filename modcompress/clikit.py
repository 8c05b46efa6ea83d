"""The one CLI frame the four commands (compress, export, serve, bench) share.

Each subcommand lives in ``modcompress/commands/<tool>/<name>.py`` with ``register(subparsers)``, which
adds its parser and sets ``func`` to a handler that parses, builds a config, calls one library
function and prints a short result. ``main`` turns a UserError into one line and exit 2; so are
argparse's own usage errors (unknown option, missing argument, bad choice), which would otherwise
print the whole usage block.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from collections.abc import Sequence

from compress.errors import ConfigError, cli_errors, one_line


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one :class:`ConfigError` line (subparsers inherit it)."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {one_line(message)} (see `{self.prog} --help`)")


def intermix(parser: argparse.ArgumentParser) -> None:
    """Let ``key=value`` overrides come anywhere among options (``train --data D a=1 --no-tracking b=2``,
    ``distill T S --alpha 1 optim.lr=1e-3``).

    argparse fills a ``nargs="*"`` positional from the first run of positionals only and rejects any
    later ones (after an option, or after other positionals); intermixed parsing collects them all.
    Subparsers cannot use ``parse_intermixed_args`` directly (the top parser has subparsers), so
    the subparser's own ``parse_known_args``, which the top parser calls, is swapped for it.
    """
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        parser.parse_known_args = plain  # parse_known_intermixed_args calls it: no recursion
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse_known_args

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def build_parser(prog: str, description: str, package: str, commands: Sequence[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"{package}.{name}").register(sub)
    return parser


def make_main(prog: str, description: str, package: str, commands: Sequence[str]):
    """A ``main(argv=None) -> int`` for one of the console scripts."""

    @cli_errors
    def main(argv: Sequence[str] | None = None) -> int:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        parser = build_parser(prog, description, package, commands)
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)

    return main

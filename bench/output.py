"""The one output convention of every command that prints a report, and the small parsing helpers they share.

A report command builds a JSON report and its Markdown rendering, then :func:`write_outputs`:

* ``--json-out FILE`` / ``--md-out FILE`` write the JSON / Markdown there (directories created);
* ``--print {markdown,json,both}`` chooses what goes to stdout (each command has its default:
  Markdown for most, both where the JSON was always printed); ``both`` prints the JSON, a blank
  line, then the Markdown;
* the run is logged to MLflow (``--tracking-uri``, ``--no-tracking``) with both texts.

Old spellings (``compress distill-report``'s) stay as deprecated aliases, handled here and nowhere
else: ``--save PREFIX`` = ``--json-out PREFIX.json --md-out PREFIX.md`` (an explicit ``--json-out``
/ ``--md-out`` wins), ``--output X`` = ``--print X``. Each prints a one-line warning on stderr.

This module imports only the standard library and compress.errors at import time (the command modules use
it while building their parsers).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compress.errors import ConfigError

PRINTS = ("markdown", "json", "both")


def split_list(value: str, cast: Callable[[str], Any], name: str) -> list[Any]:
    """``"1,8,32"`` -> ``[1, 8, 32]``; a bad item is a one-line ConfigError naming the flag."""
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    try:
        out = [cast(v) for v in items]
    except ValueError:
        raise ConfigError(f"--{name}: expected a comma-separated list of {cast.__name__}, got {value!r}") from None
    if not out:
        raise ConfigError(f"--{name}: give at least one value")
    return out


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the result)."""
    print(message, file=sys.stderr, flush=True)


class _DeprecatedAlias(argparse.Action):
    """Stores the value like the option it stands for, with a one-line warning on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, instead: str = "", **kwargs: Any) -> None:
        self.instead = instead
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        progress(f"warning: {option_string} is deprecated; use {self.instead.format(values)}")
        setattr(namespace, self.dest, values)


def add_output_args(parser: argparse.ArgumentParser, prints: str = "markdown", old_spellings: bool = False) -> None:
    """``--json-out``, ``--md-out``, ``--print`` and the MLflow flags (``--tracking-uri``, ``--no-tracking``).

    Args:
        parser: the command's parser.
        prints: what the command prints by default (one of :data:`PRINTS`).
        old_spellings: also accept the deprecated ``--save PREFIX`` and ``--output X`` (commands that had them).
    """
    from compress.tracking import add_tracking_args

    parser.add_argument("--json-out", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--md-out", metavar="FILE", help="write the Markdown report here")
    parser.add_argument("--print", dest="prints", choices=PRINTS, default=prints,
                        help="what to print on stdout (default: %(default)s)")
    if old_spellings:
        parser.add_argument("--save", metavar="PREFIX", action=_DeprecatedAlias,
                            instead="--json-out {0}.json --md-out {0}.md",
                            help="deprecated: --json-out PREFIX.json --md-out PREFIX.md")
        parser.add_argument("--output", dest="prints", choices=PRINTS, action=_DeprecatedAlias,
                            default=argparse.SUPPRESS, instead="--print {0}", help="deprecated: --print")
    add_tracking_args(parser)


def output_paths(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(JSON path, Markdown path) asked for: ``--json-out`` / ``--md-out``, else from a deprecated ``--save``."""
    json_out, md_out = getattr(args, "json_out", None), getattr(args, "md_out", None)
    prefix = getattr(args, "save", None)
    if prefix:
        json_out = json_out or Path(prefix).with_suffix(".json")
        md_out = md_out or Path(prefix).with_suffix(".md")
    return (Path(json_out) if json_out else None), (Path(md_out) if md_out else None)


def write_outputs(args: argparse.Namespace, json_text: str, md_text: str, command: str | None = None) -> None:
    """Write the JSON/Markdown files asked for, log the run to MLflow, then print what ``--print`` asks.

    The MLflow run (unless ``--no-tracking``) holds the command's options as params, every number
    of the report as a metric and both texts as ``report.json`` / ``report.md``; ``command`` names
    it (default: ``bench <the report's kind>``).
    """
    from compress.tracking import log_command_run

    for path, text in zip(output_paths(args), (json_text, md_text), strict=True):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text if text.endswith("\n") else text + "\n")
    report = json.loads(json_text)
    kind = report.get("bench") if isinstance(report, dict) else None
    log_command_run(args, command or f"bench {kind or 'run'}", report if isinstance(report, dict) else {},
                    {"report.json": json_text, "report.md": md_text})
    prints = getattr(args, "prints", "markdown")
    if prints in ("json", "both"):
        print(json_text.rstrip("\n"))
    if prints == "both":
        print()
    if prints in ("markdown", "both"):
        print(md_text, end="" if md_text.endswith("\n") else "\n")

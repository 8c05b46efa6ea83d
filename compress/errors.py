"""User-facing errors.

Every failure a user can cause (bad path, bad columns, bad config value, wrong artifact kind,
...) raises :class:`UserError` with one line that names the problem and the fix. The CLIs catch
it, print ``error: <message>`` to stderr and exit with code 2, never with a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader went away

F = TypeVar("F", bound=Callable[..., int])


class UserError(Exception):
    """A problem with the user's input; the message is one line with the fix."""


class DataError(UserError, ValueError):
    """Input data is missing, malformed or inconsistent."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the field."""


class ArtifactError(UserError):
    """A directory is not an artifact, or not of the kind a stage needs."""


def one_line(text: object) -> str:
    """``str(text)`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def cli_errors(func: F) -> F:
    """Decorate a CLI ``main`` so a :class:`UserError` becomes one line on stderr and exit 2.

    Ctrl-C exits 130 with one line. A closed standard output (``... | head``) exits 141 with one
    line on stderr instead of a ``BrokenPipeError`` traceback; whatever the command was doing has
    already been cleaned up by its own ``finally`` blocks on the way out.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            # one line even when the message embeds a multi-line library error
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # Python would flush stdout again at exit and fail the same way: point it at /dev/null.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            print("error: standard output was closed before the command finished (broken pipe)", file=sys.stderr)
            return EXIT_BROKEN_PIPE

    return wrapper  # type: ignore[return-value]

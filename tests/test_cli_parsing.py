"""The CLI frame's parsing: ``key=value`` overrides may come anywhere among a command's options."""

from __future__ import annotations

import pytest

from compress.errors import ConfigError
from modcompress.cli import COMPRESS
from modcompress.clikit import build_parser


@pytest.fixture(scope="module")
def parser():
    return build_parser("compress", "", "modcompress.commands.compress", COMPRESS)


@pytest.mark.parametrize("argv, expected", [
    # overrides before, between and after options
    (["train", "a=1", "--data", "d.csv", "--no-tracking", "b=2", "--out", "o", "c=3"], ["a=1", "b=2", "c=3"]),
    (["train", "--no-tracking", "optim.epochs=4", "--model", "m", "head=conditional"],
     ["optim.epochs=4", "head=conditional"]),
    (["distill", "T", "S", "--alpha", "1", "optim.lr=1e-3", "--no-tracking", "x=1"], ["optim.lr=1e-3", "x=1"]),
    (["baseline", "tfidf", "--data", "d.csv", "a=1", "--no-tracking", "b=2"], ["a=1", "b=2"]),
    (["tune", "--data", "d.csv", "a=1", "--no-tracking", "b=2"], ["a=1", "b=2"]),
])
def test_overrides_are_collected_wherever_they_stand(parser, argv, expected):
    args = parser.parse_args(argv)
    assert args.overrides == expected
    assert args.no_tracking or "--no-tracking" not in argv


def test_positionals_keep_their_places_and_unknown_options_still_fail(parser):
    args = parser.parse_args(["distill", "--no-tracking", "T", "S", "a=1"])
    assert (args.teacher, args.student, args.overrides) == ("T", "S", ["a=1"])
    with pytest.raises(ConfigError, match="unrecognized arguments: --nope"):
        parser.parse_args(["train", "a=1", "--nope", "b=2"])

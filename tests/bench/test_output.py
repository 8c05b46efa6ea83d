"""bench output: the one output convention (--json-out, --md-out, --print) and its deprecated old spellings."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import output

REPORT = {"bench": "latency", "rows": [{"name": "a/torch", "p50_ms": 1.5}]}
JSON_TEXT = json.dumps(REPORT, indent=2)
MD_TEXT = "| row | p50 ms |\n|---|---:|\n| a/torch | 1.50 |\n"


def parse(argv: list[str], **kwargs) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cmd")
    output.add_output_args(parser, **kwargs)
    return parser.parse_args([*argv, "--no-tracking"])


def test_files_and_what_is_printed(tmp_path, capsys):
    args = parse(["--json-out", str(tmp_path / "a" / "r.json"), "--md-out", str(tmp_path / "b" / "r.md")])
    output.write_outputs(args, JSON_TEXT, MD_TEXT)
    assert capsys.readouterr().out == MD_TEXT  # the default of most commands: Markdown only
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == REPORT
    assert (tmp_path / "b" / "r.md").read_text() == MD_TEXT
    output.write_outputs(parse([], prints="both"), JSON_TEXT, MD_TEXT)
    assert capsys.readouterr().out == f"{JSON_TEXT}\n\n{MD_TEXT}"
    output.write_outputs(parse(["--print", "json"], prints="both"), JSON_TEXT, MD_TEXT)
    assert capsys.readouterr().out == f"{JSON_TEXT}\n"


def test_old_spellings_write_the_same_files_and_print_the_same_as_the_new_flags(tmp_path, capsys):
    old = parse(["--output", "json", "--save", str(tmp_path / "old" / "report")], prints="both", old_spellings=True)
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == ["warning: --output is deprecated; use --print json",
                        f"warning: --save is deprecated; use --json-out {tmp_path}/old/report.json "
                        f"--md-out {tmp_path}/old/report.md"]
    new = parse(["--print", "json", "--json-out", str(tmp_path / "new" / "report.json"), "--md-out",
                 str(tmp_path / "new" / "report.md")], prints="both", old_spellings=True)
    printed = []
    for args in (old, new):
        output.write_outputs(args, JSON_TEXT, MD_TEXT, command="compress distill-report")
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] == f"{JSON_TEXT}\n"
    for name in ("report.json", "report.md"):
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "new" / name).read_bytes()


def test_an_explicit_new_flag_wins_over_save_and_old_spellings_exist_only_where_asked(tmp_path, capsys):
    args = parse(["--save", str(tmp_path / "p"), "--md-out", str(tmp_path / "table.md")], old_spellings=True)
    assert output.output_paths(args) == (tmp_path / "p.json", tmp_path / "table.md")
    assert parse([], prints="both", old_spellings=True).prints == "both"
    with pytest.raises(SystemExit):
        parse(["--save", str(tmp_path / "p")])
    assert "unrecognized arguments: --save" in capsys.readouterr().err


def test_split_list_names_the_flag():
    from compress.errors import ConfigError

    assert output.split_list("1, 8,32", int, "batch-sizes") == [1, 8, 32]
    with pytest.raises(ConfigError, match="--batch-sizes: expected a comma-separated list of int"):
        output.split_list("1,x", int, "batch-sizes")
    with pytest.raises(ConfigError, match="--runtimes: give at least one value"):
        output.split_list(" , ", str, "runtimes")

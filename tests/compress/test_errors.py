"""cli_errors: every way a CLI can fail ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from compress.errors import ConfigError, cli_errors, one_line

REPO = Path(__file__).resolve().parents[2]


def test_user_error_is_one_line_and_exit_2(capsys):
    @cli_errors
    def main() -> int:
        raise ConfigError("threads: must be >= 1,\n  got 0")

    assert main() == 2
    assert capsys.readouterr().err == "error: threads: must be >= 1, got 0\n"


def test_one_line_collapses_whitespace():
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line(ValueError("x\ny")) == "x y"


def test_closed_stdout_is_one_line_and_exit_141_not_a_traceback():
    """`command | head -1`: the reader leaves, the next print fails with EPIPE."""
    script = (
        "import sys\n"
        "from compress.errors import cli_errors\n"
        "@cli_errors\n"
        "def main():\n"
        "    for i in range(100000):\n"
        "        print('line', i, flush=True)\n"
        "    return 0\n"
        "sys.exit(main())\n"
    )
    result = subprocess.run(f"set -o pipefail; {sys.executable} -c \"{script}\" | head -1", shell=True, capture_output=True,  # noqa: S602
                            text=True, cwd=REPO, timeout=60, executable="/bin/bash",
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.stdout == "line 0\n"
    assert result.returncode == 141  # the Python side's exit status (pipefail)
    assert result.stderr == "error: standard output was closed before the command finished (broken pipe)\n"

"""The `slow` marker: used, and still run by CI and the README's test command (nothing deselects it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_slow_marker_is_used_and_the_default_run_includes_it():
    pyproject = (REPO / "pyproject.toml").read_text()  # (no tomllib: Python 3.10 is supported)
    assert re.search(r'^\s*"slow: ', pyproject, re.M)
    found = re.search(r'^addopts\s*=\s*"([^"]*)"', pyproject, re.M)
    addopts = shlex.split(found.group(1)) if found else []
    assert "-m" not in addopts and not any(a.startswith("-m") for a in addopts), addopts

    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    for text in (ci, readme):
        assert "python -m pytest -q" in text
    # pytest's own options (after "pytest"): no -m marker expression
    ci_options = [line.split("pytest", 1)[1] for line in ci.splitlines()
                  if "pytest" in line and not line.lstrip().startswith("#")]
    assert ci_options and not any(re.search(r"(^|\s)-m|not slow", opts) for opts in ci_options), ci_options

    marked = [p for p in (REPO / "tests").rglob("test_*.py")
              if p != Path(__file__).resolve() and re.search(r"^\s*@pytest\.mark\.slow\b", p.read_text(), re.M)]
    assert marked, "no test carries @pytest.mark.slow"

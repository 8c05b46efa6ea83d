"""The import graph: every import runs leftwards (compress <- export <- serve <- bench <- modcompress)
and no two modules import each other.

Read from the source with ``ast`` (function-level imports included, so a lazy import cannot hide
an upward one). ``__main__.py`` files are entry points the interpreter runs, never imported by a
library module, so they may reach the command layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("compress", "export", "serve", "bench", "modcompress")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules a file imports (``from pkg import mod`` counts as ``pkg.mod`` when that is a module)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known)
    return {name for name in found if name.split(".")[0] in LAYERS}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> project modules it imports, for every ``.py`` under the layer packages of ``root``."""
    files = {module_name(p, root): p for layer in LAYERS if (root / layer).is_dir()
             for p in sorted((root / layer).rglob("*.py"))}
    known = set(files)
    return {name: imported_modules(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
            for name, path in files.items()}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Upward imports and pairs of modules that import each other, one line each."""
    problems = []
    for module, targets in sorted(graph.items()):
        if module.endswith("__main__"):
            continue
        layer = LAYERS.index(module.split(".")[0])
        for target in sorted(targets):
            if LAYERS.index(target.split(".")[0]) > layer:
                problems.append(f"{module} imports {target}, a layer to its right")
            if target != module and module in graph.get(target, ()) and module < target:
                problems.append(f"{module} and {target} import each other")
    return problems


def test_every_import_runs_leftwards_and_no_two_modules_import_each_other():
    graph = import_graph(ROOT)
    assert len(graph) > 60, "the check found too few modules; did the layout move?"
    assert violations(graph) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(("files", "expected"), [
    ({"compress/__init__.py": "", "compress/a.py": "def f():\n    from export.b import g\n",
      "export/__init__.py": "", "export/b.py": "def g(): ...\n"},
     ["compress.a imports export.b, a layer to its right"]),
    ({"compress/__init__.py": "", "compress/a.py": "from compress import b\n", "compress/b.py": "import compress.a\n"},
     ["compress.a and compress.b import each other"]),
    ({"export/__init__.py": "", "export/x.py": "from .y import z\n", "export/y.py": "from export import x\n"},
     ["export.x and export.y import each other"]),
    ({"compress/__init__.py": "", "compress/__main__.py": "from modcompress.cli import main\n",
      "modcompress/__init__.py": "", "modcompress/cli.py": "from compress import a\n", "compress/a.py": ""}, []),
])
def test_the_check_finds_upward_and_mutual_imports(tmp_path, files, expected):
    _write(tmp_path, files)
    assert violations(import_graph(tmp_path)) == expected

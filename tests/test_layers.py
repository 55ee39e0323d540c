"""Architecture: gui above node above discovery, and the headless core never imports Qt.

The import-linter contracts live in pyproject.toml ([tool.importlinter]). A canary runs the same
contracts on a copy of the packages with bad imports added, so a check that can no longer fail
(a contract deleted, a config that matches nothing) shows up as a failure here too.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("node", "discovery", "gui")
HEADLESS = ("node", "discovery")
FORBIDDEN_IN_HEADLESS = ("PySide6", "shiboken6", "gui")
CONTRACT_NAMES = ("Layers: gui above node above discovery", "The headless core never imports Qt")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run(
        [*cmd, "--no-cache", "--no-logo", str(cwd / "pyproject.toml")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.real
def test_import_contracts_are_kept() -> None:
    result = _lint_imports(REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in CONTRACT_NAMES:
        assert f"{name} KEPT" in output, output


@pytest.mark.real
def test_import_contracts_can_fail(tmp_path: Path) -> None:
    """The same contracts on a copy with a layer violation and a Qt import must both break."""
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "node" / "_canary_layer.py").write_text("import gui  # node must not import gui\n")
    (tmp_path / "discovery" / "_canary_qt.py").write_text("from PySide6 import QtCore\n")

    result = _lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for name in CONTRACT_NAMES:
        assert f"{name} BROKEN" in output, output
    assert "node._canary_layer -> gui" in output, output
    assert "discovery._canary_qt -> PySide6" in output, output


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (relative imports resolved), with
    ``importlib.import_module("...")`` / ``__import__("...")`` calls on literals included."""
    module, is_package = _module_name(path, root)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module])))
                else:  # from . import x: each x may be a module
                    found += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
    return found


def forbidden_imports(root: Path) -> list[str]:
    bad = []
    for package in HEADLESS:
        for path in sorted((root / package).rglob("*.py")):
            for lineno, name in imported_modules(path, root):
                if name.split(".")[0] in FORBIDDEN_IN_HEADLESS:
                    bad.append(f"{path.relative_to(root)}:{lineno}: imports {name}")
    return bad


def test_headless_core_never_imports_qt_or_gui() -> None:
    assert forbidden_imports(REPO) == []


@pytest.mark.parametrize(
    ("relpath", "source"),
    [
        ("node/x.py", "import PySide6.QtWidgets\n"),
        ("node/x.py", "from gui.window import Window\n"),
        ("discovery/sub/x.py", "def f():\n    from PySide6 import QtCore\n"),
        ("node/x.py", "import importlib\nqt = importlib.import_module('PySide6.QtCore')\n"),
        ("node/sub/x.py", "from .. import compat\nimport gui\n"),
    ],
)
def test_scan_catches_bad_imports(tmp_path: Path, relpath: str, source: str) -> None:
    for package in HEADLESS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    target = tmp_path / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source)
    assert len(forbidden_imports(tmp_path)) == 1


def test_scan_allows_clean_imports(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    (tmp_path / "discovery").mkdir()
    (tmp_path / "node" / "__init__.py").write_text("from . import gui\nfrom .guix import y\n")
    (tmp_path / "node" / "sub").mkdir()
    (tmp_path / "node" / "sub" / "__init__.py").write_text("from ..gui import z  # node.gui\n")
    (tmp_path / "node" / "x.py").write_text("import guidance\nfrom discovery import gui_free\n")
    assert forbidden_imports(tmp_path) == []

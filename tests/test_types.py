"""Static checks in `make test`: mypy on the headless core (node, discovery), with the settings
in pyproject.toml ([tool.mypy]: its packages, the third-party modules without types).

A canary runs the same configuration on a copy of the package layout holding one obvious type
error, so a check that can no longer fail (the packages emptied, errors switched off) fails
here too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real  # every test here starts real processes

REPO = Path(__file__).resolve().parents[1]


def _mypy(cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """mypy as `make test` installs it, on the packages pyproject.toml names (no paths given:
    the configuration's ``packages`` are what is checked); its cache kept out of the tree."""
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml",
                           "--cache-dir", str(cache), "--no-color-output", "--no-error-summary"],
                          cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_the_core_passes_mypy(tmp_path: Path) -> None:
    result = _mypy(REPO, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_can_fail(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    for package in ("node", "discovery"):
        (tree / package).mkdir()
        (tree / package / "__init__.py").write_text("")
    (tree / "node" / "canary.py").write_text('x: int = "a"\n')
    result = _mypy(tree, tmp_path / "cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "node/canary.py:1: error:" in result.stdout, result.stdout
    assert "[assignment]" in result.stdout, result.stdout

"""Static checks in `make test`: ruff, with the rules pyproject.toml selects ([tool.ruff.lint]).

A canary runs the same configuration on a file with an unused import and an unsorted import
block, so a check that can no longer fail (the rules emptied, the paths matching nothing) fails
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
CHECKED = ("node", "gui", "discovery", "tests")


def _ruff(cwd: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("ruff")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise", *paths],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_code_passes_ruff() -> None:
    result = _ruff(REPO, *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_can_fail(tmp_path: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "canary.py").write_text("import sys\nimport os\n\nprint(os.sep)\n")
    result = _ruff(tmp_path, "node")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "F401" in result.stdout and "I001" in result.stdout, result.stdout

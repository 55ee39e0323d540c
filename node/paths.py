"""Where a node keeps its data: the one module that knows.

Order of precedence: the ``--data-dir`` flag, then ``PARLEY_DATA_DIR``, then the platform's user
data directory (platformdirs), e.g. ``~/.local/share/parley`` on Linux.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_DATA_DIR = "PARLEY_DATA_DIR"


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The node's data directory, created with owner-only permissions if missing."""
    if override:
        path = Path(override)
    elif os.environ.get(ENV_DATA_DIR):
        path = Path(os.environ[ENV_DATA_DIR])
    else:
        path = Path(platformdirs.user_data_dir("parley", appauthor=False))
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path

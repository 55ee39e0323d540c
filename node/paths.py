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


LOCK_FILE = "node.lock"


def lock_data_dir(path: Path) -> int:
    """Hold ``path``'s lock for the life of this process: one node per data dir. Returns the
    lock's file descriptor (closing it releases the lock); NodeBusy if another node holds it."""
    import fcntl

    from node.errors import NodeBusy

    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeBusy(f"another node already runs on {path}; stop it first, or give this one "
                       f"another --data-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def node_running(path: Path) -> bool:
    """Whether a node holds ``path``'s lock now: a node.json left by a crash is not trusted."""
    import fcntl

    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

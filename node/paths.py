"""Where a node keeps its data: the one module that knows.

Order of precedence: the ``--data-dir`` flag, then ``PARLEY_DATA_DIR``, then the platform's user
data directory (platformdirs), e.g. ``~/.local/share/parley`` on Linux.

Everything in it is its owner's alone (revealed results, the audit log, the identity key, the
peer book): a running node creates folders 0700 and files 0600 (umask 077), and tightens what
an older version or a copy left readable by others when it starts.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import platformdirs

__all__ = ["ENV_DATA_DIR", "LOCK_FILE", "PRIVATE_UMASK", "data_dir", "lock_data_dir",
           "make_private", "node_running"]

logger = logging.getLogger(__name__)

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


PRIVATE_UMASK = 0o077


def lock_data_dir(path: Path) -> int:
    """Hold ``path``'s lock for the life of this process: one node per data dir. Returns the
    lock's file descriptor (closing it releases the lock); NodeBusy if another node holds it.

    From here on this process creates nothing that others can read (umask 077: the store's
    files, SQLite's -wal and -shm, party logs, keys), and what is there already is tightened
    (``make_private``)."""
    import fcntl

    from node.errors import NodeBusy

    os.umask(PRIVATE_UMASK)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeBusy(f"another node already runs on {path}; stop it first, or give this one "
                       f"another --data-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    tightened = make_private(path)
    if tightened:
        logger.warning("%d file(s) and folder(s) in %s could be read by other users; they are "
                       "now the owner's alone", tightened, path)
    return fd


def make_private(path: Path) -> int:
    """Take the group's and others' permissions off ``path`` and everything under it; returns
    how many entries changed. Symbolic links are not followed (their targets are not ours to
    change); an entry that cannot be changed is logged and left."""
    changed = 0
    for entry in [path, *_walk(path)]:
        try:
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode) or not mode & 0o077:
                continue
            os.chmod(entry, stat.S_IMODE(mode) & 0o700)
            changed += 1
        except OSError as exc:
            logger.warning("could not make %s private: %s", entry, exc.strerror)
    return changed


def _walk(path: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(path, followlinks=False):
        found += [Path(root) / name for name in (*dirs, *files)]
    return found


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

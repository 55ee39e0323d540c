"""SQLite the way every node table uses it: one file per concern, WAL, autocommit.

``connect`` is the one way a node opens a database: the jobs, events and peers books, the
audit log, the asset store and the nonce cache of signed requests.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["connect"]


def connect(path: Path | None, schema: str = "", *, durable: bool = True,
            timeout: float = 5.0, foreign_keys: bool = False) -> sqlite3.Connection:
    """A connection shared across threads (callers hold their own lock), in autocommit mode
    (a caller that needs a transaction says BEGIN), with ``schema`` made.

    ``path`` None: in memory. ``durable``: every commit reaches the disk before it returns
    (``synchronous=FULL``: the audit log, the store, the job books); otherwise a commit
    survives the process crashing but maybe not the power failing (``NORMAL``: the nonce cache,
    which only has to outlive a restart). A new database file is made 0600 whatever the umask;
    SQLite gives its -wal and -shm files the database file's permissions."""
    if path is not None:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(":memory:" if path is None else path, timeout=timeout,
                         check_same_thread=False, isolation_level=None)
    if path is not None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    if foreign_keys:
        db.execute("PRAGMA foreign_keys=ON")
    if schema:
        db.executescript(schema)
    return db

"""SQLite the way every node table uses it: one file per concern, WAL, autocommit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection shared across threads (callers hold their own lock) with ``schema`` made.

    A new database file is made 0600 whatever the umask; SQLite gives its -wal and -shm files
    the database file's permissions."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db

"""SQLite the way every node table uses it: one file per concern, WAL, autocommit.

``connect`` is the one way a node opens a database: the jobs, events and peers books, the
audit log, the asset store and the nonce cache of signed requests.

Their methods block: on a lock shared with writers, and on a write's sync to disk. The node's
event loop serves every peer, party and the app, so it calls them through a thread;
``off_loop`` marks such a method, and the tests (``PARLEY_LOOP_CHECK=1``) log each call that
the loop makes anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

__all__ = ["LOOP_CHECK", "connect", "off_loop"]

logger = logging.getLogger(__name__)
LOOP_CHECK = os.environ.get("PARLEY_LOOP_CHECK") == "1"
F = TypeVar("F", bound=Callable[..., Any])


def off_loop(method: F) -> F:
    """A storage method the event loop must not call. Unchanged unless ``PARLEY_LOOP_CHECK=1``
    was in the environment at import; then a call from a thread running an event loop logs
    "storage on the event loop" with the method and its caller (a test reads the log)."""
    if not LOOP_CHECK:
        return method

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return method(*args, **kwargs)
        caller = sys._getframe(1)
        logger.warning("storage on the event loop: %s, called from %s:%d (%s)",
                       method.__qualname__, caller.f_code.co_filename, caller.f_lineno,
                       caller.f_code.co_name)
        return method(*args, **kwargs)

    return cast(F, checked)


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

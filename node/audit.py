"""The node's audit log: what was proposed, decided, run and revealed, in a hash chain.

Each entry's hash covers its sequence number, time, kind, fields and the previous entry's hash
(canonical JSON, sha256), so changing, deleting or reordering any entry breaks the chain at
that entry. Deleting entries from the *end* leaves a shorter chain that is still consistent;
to catch that, every append also writes the newest ``{"seq", "hash"}`` to ``audit.head``
beside the database, and ``verify`` compares the two. This detects accidents and clumsy
edits; someone who can rewrite both files and recompute every hash is beyond it (signing the
head with the node key would not help either: the key lives in the same directory).

The log holds facts about jobs, never their data: field values are short strings, integers,
booleans or None. Floats, lists and dicts are refused so that a revealed result cannot slip in
by accident. Kinds in use: ``KINDS`` (others are allowed, named the same way).

If the node stops between committing an entry and writing the head, the head is one entry
behind; that is not tampering, and opening the log brings the head up to date.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any

from node.errors import AuditError
from node.wire import canonical

logger = logging.getLogger(__name__)

DB_FILE = "audit.sqlite"
HEAD_FILE = "audit.head"
GENESIS_HASH = "0" * 64
KINDS = frozenset({"pairing", "proposal", "decision", "run", "reveal", "refusal"})
MAX_FIELD_CHARS = 1000

_KIND_RE = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
_FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")



@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""


def entry_hash(seq: int, time: str, kind: str, fields: dict[str, Any], prev_hash: str) -> str:
    """The hash an entry must carry; public so that an exported log can be checked elsewhere."""
    return hashlib.sha256(canonical({"seq": seq, "time": time, "kind": kind, "fields": fields,
                                     "prev_hash": prev_hash})).hexdigest()


class AuditLog:
    """Append-only, hash-chained log in ``<data dir>/audit.sqlite``; safe to share by threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.data_dir / DB_FILE
        self.head_path = self.data_dir / HEAD_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, "
            "kind TEXT NOT NULL, fields TEXT NOT NULL, prev_hash TEXT NOT NULL, "
            "hash TEXT NOT NULL)")
        self._catch_up_head()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Record one event; returns the entry as stored (seq, time, kind, fields, hashes)."""
        _check_entry(kind, fields)
        fields_json = canonical(fields).decode("utf-8")
        time = _now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # read-last-then-insert is one step
            try:
                last = self._db.execute(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                digest = entry_hash(seq, time, kind, fields, prev_hash)
                self._db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                                 (seq, time, kind, fields_json, prev_hash, digest))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            _write_head(self.head_path, seq, digest)
        return {"seq": seq, "time": time, "kind": kind, "fields": dict(fields),
                "prev_hash": prev_hash, "hash": digest}

    def entries(self, after: int = 0, kind: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
        """Entries with seq > ``after`` in order, optionally of one kind."""
        sql = "SELECT seq, time, kind, fields, prev_hash, hash FROM audit WHERE seq > ?"
        args: list[Any] = [after]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [{"seq": seq, "time": time, "kind": k, "fields": json.loads(fields),
                 "prev_hash": prev, "hash": digest}
                for seq, time, k, fields, prev, digest in rows]

    def verify(self) -> VerifyReport:
        """Check the whole chain and the head; the first entry that is wrong, and why."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, time, kind, fields, prev_hash, hash FROM audit ORDER BY seq"
            ).fetchall()
        count = len(rows)
        expected_seq, prev_hash = 1, GENESIS_HASH
        for seq, time, kind, fields_json, stored_prev, stored_hash in rows:
            if seq != expected_seq:
                return VerifyReport(False, count, expected_seq,
                                    f"entry {expected_seq} is missing (the next one is {seq})")
            if stored_prev != prev_hash:
                return VerifyReport(False, count, seq,
                                    f"entry {seq} does not follow entry {seq - 1}: its "
                                    "prev_hash differs from that entry's hash (an entry was "
                                    "changed, replaced or moved)")
            try:
                fields = json.loads(fields_json)
            except ValueError:
                return VerifyReport(False, count, seq, f"entry {seq}'s fields are not JSON")
            if entry_hash(seq, time, kind, fields, stored_prev) != stored_hash:
                return VerifyReport(False, count, seq,
                                    f"entry {seq} was changed after it was written: its "
                                    "content does not match its hash")
            expected_seq, prev_hash = seq + 1, stored_hash
        last_seq = expected_seq - 1
        head = _read_head(self.head_path)
        if head is None:
            if count:
                return VerifyReport(False, count, None,
                                    f"{self.head_path.name} is missing or unreadable, so "
                                    "entries removed from the end could not be detected")
            return VerifyReport(True, 0)
        head_seq, head_hash = head
        if head_seq > last_seq:
            return VerifyReport(False, count, last_seq + 1,
                                f"entries {last_seq + 1} to {head_seq} were removed from the "
                                f"end of the log ({self.head_path.name} records {head_seq})")
        if head_seq < 1 or rows[head_seq - 1][5] != head_hash:
            return VerifyReport(False, count, head_seq if head_seq >= 1 else None,
                                f"{self.head_path.name} does not match entry {head_seq}: the "
                                "log was rewritten from that entry on")
        # head_seq < last_seq with a matching hash: stopped between commit and head write
        return VerifyReport(True, count)

    def _catch_up_head(self) -> None:
        """Bring a lagging head (a stop between commit and head write) up to date."""
        with self._lock:
            last = self._db.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            head = _read_head(self.head_path)
            if last is None or head is None or head[0] >= last[0]:
                return
            row = self._db.execute("SELECT hash FROM audit WHERE seq = ?",
                                   (head[0],)).fetchone()
            if row is not None and row[0] == head[1]:
                logger.info("audit head was behind (entry %d of %d); brought up to date",
                            head[0], last[0])
                _write_head(self.head_path, last[0], last[1])


def _check_entry(kind: str, fields: dict[str, Any]) -> None:
    if not _KIND_RE.fullmatch(kind):
        raise AuditError(f"audit kind {kind[:40]!r} must be a short lowercase name "
                         f"(in use: {', '.join(sorted(KINDS))})")
    for name, value in fields.items():
        if not _FIELD_RE.fullmatch(name):
            raise AuditError(f"audit field name {name[:40]!r} must be a short lowercase name")
        if value is None or isinstance(value, (bool, int)):
            continue
        if isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                raise AuditError(f"audit field {name!r} is {len(value)} characters; the log "
                                 f"keeps at most {MAX_FIELD_CHARS}: record a hash or an id "
                                 "instead of the content")
            continue
        raise AuditError(f"audit field {name!r} is a {type(value).__name__}: the log records "
                         "facts (ids, hashes, names, counts) as strings or integers, never "
                         "data values")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _read_head(path: Path) -> tuple[int, str] | None:
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
        seq, digest = head["seq"], head["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(seq, int) or not isinstance(digest, str):
        return None
    return seq, digest


def _write_head(path: Path, seq: int, digest: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, canonical({"seq": seq, "hash": digest}))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)

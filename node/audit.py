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

Refusals are counted, not written one by one, when they repeat: anyone who can reach the peer
port can send thousands of unsigned requests a second, and each used to add an entry (2,000
requests grew the log by 3.7 MB). The first refusal from a source (its remote address, or the
sender for a refusal without one) for a reason is written at once in every minute; the rest of
that minute's refusals from it for that reason are counted, and one ``refusal`` entry with
``summary``, ``count`` and ``minute`` fields records them when the minute is over (on the next
append or read after it, on ``flush``, or when the log closes). Past ``MAX_REFUSAL_SOURCES``
sources and reasons in a minute, the others share one summary. So a flood adds a few entries a
minute however fast it comes, and the chain holds every refusal, written or counted. Counts
not yet written are lost if the process is killed before the minute ends.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Self

from node.db import connect, off_loop
from node.errors import AuditError
from node.files import write_atomic
from node.wire import canonical

__all__ = ["AuditLog", "DB_FILE", "GENESIS_HASH", "HEAD_FILE", "KINDS", "MAX_FIELD_CHARS",
           "MAX_REFUSAL_SOURCES", "VerifyReport", "entry_hash"]

logger = logging.getLogger(__name__)

DB_FILE = "audit.sqlite"
HEAD_FILE = "audit.head"
GENESIS_HASH = "0" * 64
KINDS = frozenset({"pairing", "proposal", "decision", "run", "reveal", "refusal", "claim",
                   "policy"})
MAX_FIELD_CHARS = 1000
MAX_REFUSAL_SOURCES = 32  # sources and reasons written one by one per minute; the rest share one

_KIND_RE = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
_FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_OTHERS = ("", "")  # the key of the refusals past MAX_REFUSAL_SOURCES in a minute


@dataclasses.dataclass
class _Tally:
    """Refusals of one minute from one source for one reason, not written one by one."""

    source_field: str  # "remote" or "sender": what the source is
    source: str
    reason: str
    count: int = 0
    first_seq: int | None = None  # the entry written at once, if there was one
    paths: set[str] = dataclasses.field(default_factory=set)


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
        self._db = connect(self.path, (
            "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, "
            "kind TEXT NOT NULL, fields TEXT NOT NULL, prev_hash TEXT NOT NULL, "
            "hash TEXT NOT NULL)"))
        self._minute = ""  # the minute the refusal tallies below belong to
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._catch_up_head()

    def close(self) -> None:
        with self._lock:
            self._write_tallies()
            self._db.close()

    def flush(self) -> None:
        """Write the counts of refusals of minutes that are over (the node calls this now and
        then, so that a quiet log does not hold them back)."""
        with self._lock:
            self._roll(_minute_of(_now()))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @off_loop
    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Record one event; returns the entry as stored (seq, time, kind, fields, hashes).

        A refusal that repeats within a minute is only counted (see the module docstring);
        then the entry returned has ``seq`` None and ``counted`` True."""
        _check_entry(kind, fields)
        with self._lock:
            time = _now()
            self._roll(_minute_of(time))
            if kind == "refusal":
                tally = self._tally_of(fields)
                if tally.first_seq is not None or tally.count or tally.source_field == "":
                    tally.count += 1
                    if isinstance(fields.get("path"), str) and len(tally.paths) < 5:
                        tally.paths.add(fields["path"])
                    return {"seq": None, "time": time, "kind": kind, "fields": dict(fields),
                            "counted": True}
                entry = self._insert(time, kind, fields)
                tally.first_seq = entry["seq"]
                return entry
            return self._insert(time, kind, fields)

    def _insert(self, time: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Write one entry at the end of the chain; call with the lock held."""
        fields_json = canonical(fields).decode("utf-8")
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

    def _tally_of(self, fields: dict[str, Any]) -> _Tally:
        """This refusal's tally in the current minute (new ones past the cap share one)."""
        remote, sender = str(fields.get("remote") or ""), str(fields.get("sender") or "")
        # the remote address first: a sender header is whatever an unsigned request claims
        source_field, source = ("remote", remote) if remote else ("sender", sender)
        reason = str(fields.get("reason") or fields.get("what") or "")
        key = (f"{source_field}={source}", reason)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= MAX_REFUSAL_SOURCES:
                key = _OTHERS
                tally = self._tallies.get(key)
                if tally is None:
                    tally = self._tallies[key] = _Tally("", "", "")
                return tally
            tally = self._tallies[key] = _Tally(source_field, source, reason)
        return tally

    def _roll(self, minute: str) -> None:
        """Write the tallies of a minute that is over; call with the lock held."""
        if minute != self._minute:
            self._write_tallies()
            self._minute = minute

    def _write_tallies(self) -> None:
        tallies, self._tallies = self._tallies, {}
        for tally in tallies.values():
            if not tally.count:
                continue
            if tally.source_field:
                fields: dict[str, Any] = {
                    tally.source_field: tally.source, "reason": tally.reason[:MAX_FIELD_CHARS],
                    "summary": f"{tally.count} more refusal(s) from this {tally.source_field} "
                               f"for this reason in the minute {self._minute} UTC",
                    "first_seq": tally.first_seq}
            else:
                fields = {"summary": f"{tally.count} refusal(s) from other sources or for "
                                     f"other reasons in the minute {self._minute} UTC, past the "
                                     f"{MAX_REFUSAL_SOURCES} written one by one"}
            fields.update(count=tally.count, minute=self._minute)
            if tally.paths:
                fields["paths"] = ", ".join(sorted(tally.paths))[:MAX_FIELD_CHARS]
            try:
                self._insert(_now(), "refusal", fields)
            except (sqlite3.Error, OSError):
                logger.exception("could not write the count of %d refusals", tally.count)

    @off_loop
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
            self._roll(_minute_of(_now()))
            rows = self._db.execute(sql, args).fetchall()
        return [{"seq": seq, "time": time, "kind": k, "fields": json.loads(fields),
                 "prev_hash": prev, "hash": digest}
                for seq, time, k, fields, prev, digest in rows]

    @off_loop
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
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _minute_of(time: str) -> str:
    """``2026-12-03T10:42`` of an entry time (UTC, ISO 8601)."""
    return time[:16]


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
    write_atomic(path, canonical({"seq": seq, "hash": digest}), sync_folder=False)

"""The node-wide event log: every change an owner cares about, numbered, persisted, waited on.

Clients (the GUI, ``parley ... --wait``, other nodes' orchestrators through the peer API)
long-poll ``events(after=cursor)``: they get what happened after their cursor, or wait until
something does. The log is SQLite in the data dir, so a client that was away (or a node that
restarted) catches up from its cursor. Kinds and the typed values inside them (job states,
roles, failure kinds) are enums whose values are the stable strings of the API.

``append`` may be called from any thread (storage work runs off the event loop); waiters on
the loop are woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from node import db

__all__ = ["EventKind", "EventLog", "FailureKind", "JobState", "Role", "TrustState"]


class EventKind(StrEnum):
    PEER_FOUND = "peer.found"
    PEER_LOST = "peer.lost"
    PEER_TRUST_CHANGED = "peer.trust_changed"
    PAIRING_REQUESTED = "pairing.requested"
    PAIRING_CONFIRMED = "pairing.confirmed"
    PAIRING_REJECTED = "pairing.rejected"
    PAIRING_EXPIRED = "pairing.expired"
    ASSET_PUBLISHED = "asset.published"
    ASSET_CHANGED = "asset.changed"
    ASSET_REMOVED = "asset.removed"
    ASSET_IMPORT_PROGRESS = "asset.import_progress"
    PROPOSAL_ARRIVED = "proposal.arrived"
    DECISION_TAKEN = "decision.taken"
    JOB_STATE = "job.state"
    JOB_PROGRESS = "job.progress"
    POLICY_ADDED = "policy.added"
    POLICY_REMOVED = "policy.removed"


class JobState(StrEnum):
    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    QUEUED = "queued"  # approved and started, waiting for room on a party's node
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Role(StrEnum):
    PARTY = "party"
    ORCHESTRATOR = "orchestrator"


class FailureKind(StrEnum):
    """Why a party ended without a result (``detail.failure_kind`` of a party job)."""

    NONE = ""
    JAIL_REJECTED = "jail_rejected"
    JAIL_VIOLATION = "jail_violation"
    JOB_ERROR = "job_error"
    LIMIT = "limit"
    PEER_LOST = "peer_lost"
    PEER_TIMEOUT = "peer_timeout"
    STOPPED = "stopped"
    CRASHED = "crashed"
    REFUSED = "refused"

    @property
    def secondary(self) -> bool:
        """The party ended because of another party (or was stopped for one): not a cause."""
        return self in (FailureKind.PEER_LOST, FailureKind.PEER_TIMEOUT, FailureKind.STOPPED)


class TrustState(StrEnum):
    SEEN = "seen"
    PAIRED = "paired"
    REVOKED = "revoked"
    KEY_CHANGED = "key_changed"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, kind TEXT NOT NULL,
    job_id TEXT, role TEXT, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""
MAX_BATCH = 500


class EventLog:
    """Numbered events in ``<data dir>/events.sqlite``; thread-safe; long-pollable."""

    def __init__(self, data_dir: Path) -> None:
        self._db = db.connect(data_dir / "events.sqlite", _SCHEMA)
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @db.off_loop
    def append(self, kind: EventKind, data: dict[str, Any] | None = None, *,
               job_id: str | None = None, role: str | None = None) -> int:
        """Record one event and wake every waiter; returns its seq."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events (t, kind, job_id, role, data) VALUES (?,?,?,?,?)",
                (time.time(), str(kind), job_id, None if role is None else str(role),
                 json.dumps(data or {})))
            seq = int(cur.lastrowid or 0)
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                self._waiters.discard((loop, event))
        return seq

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    @db.off_loop
    def since(self, after: int = 0, job_id: str | None = None, role: str | None = None,
              limit: int = MAX_BATCH) -> list[dict[str, Any]]:
        query = "SELECT seq, t, kind, job_id, role, data FROM events WHERE seq > ?"
        args: list[Any] = [after]
        if job_id:
            query += " AND job_id = ?"
            args.append(job_id)
        if role:
            query += " AND role = ?"
            args.append(role)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq LIMIT ?", [*args, limit]).fetchall()
        return [{"seq": r[0], "t": r[1], "kind": r[2], "job_id": r[3], "role": r[4],
                 "data": json.loads(r[5])} for r in rows]

    async def wait(self, after: int, timeout: float, job_id: str | None = None,
                   role: str | None = None) -> list[dict[str, Any]]:
        """Events after ``after``, waiting up to ``timeout`` seconds for the first one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter = (loop, asyncio.Event())
            self._waiters.add(waiter)
            try:
                found = await asyncio.to_thread(self.since, after, job_id, role)
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return found
                try:
                    await asyncio.wait_for(waiter[1].wait(), remaining)
                except TimeoutError:
                    pass
            finally:
                self._waiters.discard(waiter)

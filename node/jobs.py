"""Job records and their state machine, persisted in SQLite so they survive a restart.

Two kinds of record live here:

* a **party job**: a proposal this node received, in which it plays one rank;
* an **orchestration**: a job this node sent out and drives (it may also be a party of it).

Party job states (shared/ARCHITECTURE.md)::

    proposed -> awaiting_approval -> approved -> starting -> running -> succeeded
                       |                |           |           +-> failed (reason)
                       +-> rejected     +-> cancelled (any live state) / failed

Every change appends an event to the node's event log (node/events.py). A node that
starts and finds a job ``starting`` or ``running`` marks it failed: its party process died
with the node.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import db
from node.errors import JobStateError, UnknownJob
from node.events import EventKind, EventLog, JobState
from node.proposal import code_kind

__all__ = ["JobBook", "JobRecord", "OWNER_ONLY", "S", "TERMINAL", "TRANSITIONS"]

S = JobState
OWNER_ONLY = frozenset({"output", "review", "names", "signature"})
TERMINAL = frozenset({S.REJECTED, S.SUCCEEDED, S.FAILED, S.CANCELLED})
TRANSITIONS: dict[str, frozenset[str]] = {
    S.PROPOSED: frozenset({S.AWAITING_APPROVAL, S.APPROVED, S.REJECTED, S.CANCELLED, S.FAILED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED, S.FAILED}),
    S.APPROVED: frozenset({S.QUEUED, S.STARTING, S.CANCELLED, S.FAILED}),
    # a party's node queues a job until it has room; an orchestrator shows a job as queued
    # while any of its parties is
    S.QUEUED: frozenset({S.STARTING, S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.STARTING: frozenset({S.QUEUED, S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    proposal TEXT NOT NULL, proposal_hash TEXT NOT NULL, rank INTEGER,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    result TEXT, detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, role)
);
CREATE TABLE IF NOT EXISTS standing_approvals (
    node_id TEXT NOT NULL, kind TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (node_id, kind)
);
"""


@dataclass
class JobRecord:
    id: str
    role: str  # "party" | "orchestrator"
    state: str
    reason: str
    proposal: dict[str, Any]
    proposal_hash: str
    rank: int | None
    created_at: float
    updated_at: float
    result: Any
    detail: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def party_rank(self) -> int:
        """The rank this node plays in a party job; a job it orchestrates has none."""
        if self.rank is None:
            raise JobStateError(f"job {self.id} is a {self.role} job here: it has no party rank")
        return self.rank

    @property
    def orchestrator_name(self) -> str:
        """For a received proposal, the name this node's peer book gives the key that signed
        it (``detail.names``); the proposal's own words only for jobs this node composed."""
        names = self.detail.get("names")
        if names:
            return str(names["orchestrator"])
        return str(self.proposal.get("orchestrator", {}).get("name", ""))

    def for_orchestrator(self) -> dict[str, Any]:
        """A party job as its orchestrator may see it: state, timings, stats, progress; never
        what stays with this owner (the job's printed output, the review, names)."""
        out = self.public()
        out["detail"] = {k: v for k, v in out["detail"].items() if k not in OWNER_ONLY}
        return out

    def public(self, with_result: bool = False) -> dict[str, Any]:
        """The job for the admin API; a list leaves out the review (it carries the source)."""
        detail = self.detail if with_result else {k: v for k, v in self.detail.items()
                                                  if k != "review"}
        out = {
            "id": self.id, "role": self.role, "state": self.state, "reason": self.reason,
            "proposal_hash": self.proposal_hash, "rank": self.rank,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "title": self.proposal.get("title", ""), "detail": detail,
            "orchestrator": self.orchestrator_name,
            "orchestrator_id": self.proposal.get("orchestrator", {}).get("node_id", ""),
            "kind": code_kind(self.proposal),
        }
        if with_result:
            out["result"] = self.result
            out["proposal"] = self.proposal
        return out


class JobBook:
    """All job records of one node. Thread-safe; callers run it off the event loop."""

    def __init__(self, data_dir: Path, events: EventLog) -> None:
        self._db = db.connect(data_dir / "jobs.sqlite", _SCHEMA)
        self._lock = threading.RLock()
        self.events = events

    @contextmanager
    def as_one_change(self) -> Iterator[None]:
        """Readers of the book wait while the caller makes several changes that must show as
        one: a proposal and its approval by a policy, which no listing may catch between
        the two (the owner would see it waiting, and be told of it)."""
        with self._lock:
            yield

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- records -------------------------------------------------------------------------
    @db.off_loop
    def create(self, job_id: str, role: str, state: str, proposal: dict[str, Any],
               proposal_hash: str, rank: int | None, detail: dict[str, Any] | None = None,
               reason: str = "") -> JobRecord:
        now = time.time()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, role, state, reason, proposal, proposal_hash, rank,"
                    " created_at, updated_at, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (job_id, role, state, reason, json.dumps(proposal), proposal_hash, rank,
                     now, now, json.dumps(detail or {})),
                )
            except sqlite3.IntegrityError:
                raise JobStateError(f"job {job_id} already exists on this node "
                                    f"(a replayed or duplicate proposal)") from None
            self._event(job_id, role, "state", {"state": state, "reason": reason})
        return self.get(job_id, role)

    @db.off_loop
    def get(self, job_id: str, role: str | None = None) -> JobRecord:
        query = "SELECT * FROM jobs WHERE id = ?" + (" AND role = ?" if role else "")
        args: tuple[Any, ...] = (job_id, role) if role else (job_id,)
        with self._lock:
            row = self._db.execute(query, args).fetchone()
        if row is None:
            raise UnknownJob(f"no job {job_id} on this node; `parley jobs` lists them")
        return _record(row)

    @db.off_loop
    def list(self, role: str | None = None, states: Iterable[str] = ()) -> list[JobRecord]:
        query, args = "SELECT * FROM jobs", []
        clauses = []
        if role:
            clauses.append("role = ?")
            args.append(role)
        states = list(states)
        if states:
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC", args).fetchall()
        return [_record(r) for r in rows]

    @db.off_loop
    def transition(self, job_id: str, role: str, new_state: str, reason: str = "",
                   expect: Iterable[str] | None = None) -> JobRecord:
        """Move a job to ``new_state`` if its machine allows it; JobStateError otherwise."""
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE id = ? AND role = ?",
                                   (job_id, role)).fetchone()
            if row is None:
                raise UnknownJob(f"no job {job_id} on this node; `parley jobs` lists them")
            current = row[0]
            allowed = TRANSITIONS.get(current, frozenset())
            if new_state not in allowed or (expect is not None and current not in set(expect)):
                raise JobStateError(f"job {job_id} is {current}; it cannot become {new_state}")
            self._db.execute("UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE id = ?"
                             " AND role = ?", (new_state, reason, time.time(), job_id, role))
            self._event(job_id, role, "state", {"state": new_state, "reason": reason})
        return self.get(job_id, role)

    @db.off_loop
    def update(self, job_id: str, role: str, *, result: Any = None,
               detail: dict[str, Any] | None = None) -> None:
        """Store a result and/or merge keys into the job's detail (timings, parties, ...)."""
        with self._lock:
            if result is not None:
                self._db.execute("UPDATE jobs SET result = ? WHERE id = ? AND role = ?",
                                 (json.dumps(result), job_id, role))
            if detail:
                row = self._db.execute("SELECT detail FROM jobs WHERE id = ? AND role = ?",
                                       (job_id, role)).fetchone()
                merged = {**json.loads(row[0]), **detail} if row else detail
                self._db.execute("UPDATE jobs SET detail = ?, updated_at = ? WHERE id = ? AND "
                                 "role = ?", (json.dumps(merged), time.time(), job_id, role))
                self.add_event(job_id, role, "detail", detail)

    @db.off_loop
    def update_entry(self, job_id: str, role: str, key: str, entry: str,
                     fields: dict[str, Any]) -> None:
        """Merge ``fields`` into ``detail[key][entry]`` as one change (the orchestrator records
        each party's state from several tasks at once, and a read, merge and write apart lost
        one party's end to another's); nothing is written, and no event sent, if no field
        changes."""
        with self._lock:
            table = self.get(job_id, role).detail.get(key, {})
            old = table.get(entry, {})
            if all(old.get(k) == v for k, v in fields.items()):
                return
            table[entry] = {**old, **fields}
            self.update(job_id, role, detail={key: table})

    def fail_interrupted(self) -> builtins.list[str]:
        """At start: a party that was live when the node stopped died with it. (A job this
        node orchestrated is picked up again: Orchestrator.resume_interrupted.)"""
        live = [r for r in self.list(role="party")
                if r.state in ("queued", "starting", "running")]
        for rec in live:
            reason = f"the node stopped while the job was {rec.state}; run it again"
            with self._lock:
                self._db.execute("UPDATE jobs SET state='failed', reason=?, updated_at=? WHERE "
                                 "id=? AND role=?", (reason, time.time(), rec.id, rec.role))
            self._event(rec.id, rec.role, "state", {"state": "failed", "reason": reason})
        return [r.id for r in live]

    @db.off_loop
    def last_approved_source(self, orchestrator_id: str, title: str, before: str
                             ) -> str | None:
        """The code of the newest job with this orchestrator (by node id) and title that the
        owner approved, other than ``before``: what a new proposal is diffed against."""
        for rec in self.list(role="party"):
            if (rec.id != before and rec.detail.get("approved")
                    and rec.proposal["orchestrator"].get("node_id") == orchestrator_id
                    and rec.proposal.get("title", "") == title):
                return rec.detail.get("review", {}).get("source")
        return None

    # -- policies: what the owner approves without being asked ----------------------------
    # A policy names the orchestrator by node id (its key): a peer cannot earn another's
    # standing approval by writing that peer's name into a proposal.
    @db.off_loop
    def add_policy(self, node_id: str, kind: str) -> bool:
        """True when the policy is new."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO standing_approvals VALUES (?,?,?)",
                                   (node_id, kind, time.time()))
        if cur.rowcount > 0:
            self.events.append(EventKind.POLICY_ADDED, {"node_id": node_id, "kind": kind})
        return cur.rowcount > 0

    @db.off_loop
    def remove_policy(self, node_id: str, kind: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM standing_approvals WHERE node_id=? AND kind=?",
                                   (node_id, kind))
        if cur.rowcount > 0:
            self.events.append(EventKind.POLICY_REMOVED, {"node_id": node_id, "kind": kind})
        return cur.rowcount > 0

    @db.off_loop
    def policies(self) -> builtins.list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT node_id, kind, created_at FROM standing_approvals "
                                    "ORDER BY created_at").fetchall()
        return [{"node_id": o, "kind": k, "created_at": t} for o, k, t in rows]

    @db.off_loop
    def policy_allows(self, node_id: str, kind: str) -> str | None:
        """The kind of the policy that approves a ``kind`` job from ``node_id``: ``kind``
        itself, or "any"; None when no policy does."""
        with self._lock:
            row = self._db.execute("SELECT kind FROM standing_approvals WHERE node_id=? AND "
                                   "kind IN (?, 'any') ORDER BY kind = 'any'",
                                   (node_id, kind)).fetchone()
        return row[0] if row else None

    def take_name_policies(self) -> builtins.list[tuple[str, str]]:
        """Policies of an older version, keyed by a name: handed over once, then dropped."""
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                      "name='policies'").fetchone()
            if not exists:
                return []
            rows = self._db.execute("SELECT orchestrator, kind FROM policies").fetchall()
            self._db.execute("DROP TABLE policies")
        return [(o, k) for o, k in rows]

    # -- events --------------------------------------------------------------------------
    @db.off_loop
    def add_event(self, job_id: str, role: str, phase: str, data: dict[str, Any]) -> None:
        """Progress of a job: a party's phase (joined, locked, reveal, ...) or new detail."""
        self.events.append(EventKind.JOB_PROGRESS, {"job_id": job_id, "role": role,
                                                     "phase": phase, **data},
                           job_id=job_id, role=role)

    def _event(self, job_id: str, role: str, kind: str, data: dict[str, Any]) -> None:
        self.events.append(EventKind.JOB_STATE, {"job_id": job_id, "role": role, **data},
                           job_id=job_id, role=role)


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, role, state, reason, proposal, phash, rank, created, updated, result, detail) = row
    return JobRecord(job_id, role, state, reason, json.loads(proposal), phash, rank, created,
                     updated, json.loads(result) if result else None, json.loads(detail))

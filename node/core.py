"""The node: one data owner's store, inbox and party runs, independent of how it is reached.

``Node`` holds the logic; node/api.py puts it behind the peer and admin HTTP surfaces (which
authenticate the caller and pass on who it is) and node/orchestrator.py drives jobs this node
sends out. Every change an owner cares about goes into the node's event log (node/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import __version__, plans, review
from node import proposal as proposals
from node.address import format_address, looks_like_address, parse_address
from node.audit import AuditLog
from node.errors import (
    BudgetSpent,
    Forbidden,
    ImportCancelled,
    JobStateError,
    ParleyError,
    ProposalError,
    UnknownPeer,
)
from node.events import EventKind, EventLog, FailureKind, JobState, Role
from node.files import write_atomic
from node.identity import NodeIdentity
from node.jail import ALL_LAYERS, lockdown, static
from node.jobs import JobBook, JobRecord
from node.peers import PeerBook
from node.privacy import DEFAULT_MIN_ROWS, RevealLedger, check_min_rows, split_key
from node.privacy import settings_of as privacy_settings
from node.runner import (
    MIN_FREE_MEMORY,
    PartyLauncher,
    PartyProcess,
    available_memory,
    interface_of,
    parties_on_host,
    party_threads,
)
from node.store import Asset, Store
from node.tls import PinnedSessions
from node.trust import Trust

__all__ = ["DEFAULT_WARM_WORKERS", "LoopProbe", "MAX_OUTPUT_LINES", "Node", "PARTY",
           "default_max_parties"]

MAX_OUTPUT_LINES = 200  # of a job's print() kept with the job (the party's log has up to 64 kB)
logger = logging.getLogger(__name__)
PARTY = Role.PARTY
DEFAULT_WARM_WORKERS = 2


def default_max_parties() -> int:
    """Party processes a node runs at once unless told: one per core, and at least two."""
    return max(2, os.cpu_count() or 1)


def _preload() -> None:
    """Import now what the node needs later for models and mock data: importing onnx builds
    protobuf descriptors while holding the GIL, which stalled the loop for 1.1 s when the
    first job's proposal was checked. Done once, as the node starts."""
    import numpy  # noqa: F401
    import onnx  # noqa: F401

    _freeze_imports()


def _freeze_imports() -> None:
    """Take every object alive now out of the garbage collector's sight: the modules just
    imported (numpy and onnx at start, torch and CrypTen with the first model) are never
    garbage, and a full collection of a node that imported them walks some 200,000 objects,
    60-100 ms of CPU on whichever thread triggers it. On the event loop's thread that was a
    stall of 84 ms in a logistic-regression job. ``gc.freeze`` itself costs nothing."""
    gc.freeze()


class LoopProbe:
    """How late the node's event loop wakes a timer: anything that blocks the loop (a slow
    handler, storage work not moved to a thread, a C extension holding the GIL) shows as a
    stall, and stalls delay every peer, the GUI and the parties' events.

    Each stall also records the CPU time that the loop's own thread and the whole node process
    used in it, which tells the causes apart: the loop running code (its thread busy), the
    node's other threads holding the GIL (the process busy, the loop's thread not), or the
    node not getting a core at all (neither busy)."""

    PERIOD_S = 0.02
    RECORD_S = 0.02
    KEEP = 50  # the latest stalls over RECORD_S, with when they happened

    def __init__(self) -> None:
        self.longest_s = 0.0
        # (wall-clock time, stall, the loop thread's CPU, the node process's CPU), in seconds
        self.stalls: list[tuple[float, float, float, float]] = []

    async def run(self) -> None:
        while True:
            before, thread, process = time.monotonic(), time.thread_time(), time.process_time()
            await asyncio.sleep(self.PERIOD_S)
            stall = time.monotonic() - before - self.PERIOD_S
            self.longest_s = max(self.longest_s, stall)
            if stall > self.RECORD_S:
                self.stalls = [*self.stalls[-(self.KEEP - 1):],
                               (time.time(), stall, time.thread_time() - thread,
                                time.process_time() - process)]
                if stall > 0.2:
                    logger.warning("the event loop stalled for %.0f ms", stall * 1e3)

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {"longest_stall_ms": round(self.longest_s * 1e3, 1),
                "last_stall_ms": round(max((s[1] for s in self.stalls if now - s[0] < 60),
                                           default=0.0) * 1e3, 1),
                # [time, stall ms, the loop thread's CPU ms, the node's CPU ms], each over
                # the stall and the 20 ms timer it delayed
                "stalls": [[round(t, 3), round(x * 1e3, 1), round(loop * 1e3, 1),
                            round(node * 1e3, 1)] for t, x, loop, node in self.stalls]}


@dataclass
class _QueuedStart:
    """What it takes to launch one party of an approved job (now, or when there is room)."""

    spec: dict[str, Any]
    blobs: list[bytes]
    limit_s: float
    server: Any  # rank 0's rendezvous server, or None
    same_host: int  # parties of this job on this machine
    relay: Any = None  # the job's party links over TLS (node/links.py), or None

    async def close(self) -> None:
        """The rendezvous and the links of a party that ended (or never started)."""
        if self.server is not None:
            await self.server.close()
        if self.relay is not None:
            await asyncio.to_thread(self.relay.close)


class Node:
    def __init__(self, data_dir: Path, name: str, host: str = "127.0.0.1",
                 launcher: Any = None,
                 accept_reduced_isolation: bool = False,
                 warm_workers: int = DEFAULT_WARM_WORKERS, max_parties: int | None = None,
                 tls_links: bool | None = None, min_rows: int | None = None) -> None:
        self.data_dir = data_dir
        self.name = name
        self.host = host
        self.confinement = lockdown.available()
        self.accept_reduced_isolation = accept_reduced_isolation
        self.events = EventLog(data_dir)
        # the node's parts: API handlers call the node's methods, the node calls its parts
        identity = NodeIdentity.load_or_create(data_dir)
        self.peer_book = PeerBook(data_dir, self.events)
        self.audit = AuditLog(data_dir)
        self.sessions = PinnedSessions(identity)  # HTTP client sessions to other nodes
        self.trust = Trust(data_dir, name, self.events, identity=identity, peers=self.peer_book,
                           audit=self.audit, sessions=self.sessions)
        self.node_id = self.trust.node_id
        self.store = Store(data_dir)
        self.jobs = JobBook(data_dir, self.events)
        self.reveals = RevealLedger(data_dir)
        # what a dataset published here without its own minimum gets (node/privacy.py)
        self.default_min_rows = check_min_rows(min_rows if min_rows is not None
                                               else DEFAULT_MIN_ROWS)
        self.launcher = launcher or PartyLauncher(data_dir / "party-logs", warm=warm_workers)
        self.max_parties = max(1, max_parties or default_max_parties())
        # the parties' store and gloo links inside pinned TLS between nodes (node/links.py);
        # PARLEY_TLS_LINKS=0 only for measuring what it costs (parley bench)
        self.tls_links = (os.environ.get("PARLEY_TLS_LINKS", "1") != "0" if tls_links is None
                          else tls_links)
        self.peer_url = ""
        self._runs: dict[str, PartyProcess] = {}
        self._starting: set[str] = set()  # taking a party process now
        self._queue: dict[str, _QueuedStart] = {}  # approved, started, waiting for room
        self.loop_probe = LoopProbe()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._imports: dict[str, Any] = {}
        self._migrate_name_policies()

    # -- lifecycle ----------------------------------------------------------------------
    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        """On the running loop: fail the party jobs that were live when the node last stopped,
        fill the pool of warm party workers, and watch the loop."""
        interrupted = await asyncio.to_thread(self.jobs.fail_interrupted)
        if interrupted:
            logger.warning("marked %d interrupted job(s) failed: %s", len(interrupted),
                           ", ".join(interrupted))
        self.launcher.start()
        self.spawn(self.loop_probe.run())
        self.spawn(asyncio.to_thread(_preload))

    async def close(self) -> None:
        for job_id, start in list(self._queue.items()):
            await start.close()
            self._queue.pop(job_id, None)
        for run in list(self._runs.values()):
            run.kill("the node is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.launcher.close()
        await self.trust.close()
        await self.sessions.close()
        self.peer_book.close()
        self.audit.close()
        self.store.close()
        self.jobs.close()
        self.reveals.close()
        self.events.close()

    def identity(self) -> dict[str, Any]:
        return {"id": self.node_id, "name": self.name, "url": self.peer_url,
                "cert_sha256": self.trust.identity.cert_der_sha256}

    # -- assets -------------------------------------------------------------------------
    async def publish(self, path: str, *, name: str | None = None, tags: Sequence[str] = (),
                      description: str = "", label_column: str | None = None,
                      import_id: str | None = None, privacy: dict[str, Any] | None = None
                      ) -> Asset:
        """Import a file; with ``import_id`` a CSV import reports progress as events and can
        be cancelled (``cancel_import``), leaving nothing behind. ``privacy``: a dataset's
        ``min_rows`` and ``dp`` (node/privacy.py; the defaults when not given)."""
        privacy = dict(privacy or {})
        if Path(path).suffix.lower() != ".onnx":
            privacy.setdefault("min_rows", self.default_min_rows)
        suffix = Path(path).suffix.lower()
        progress = self._import_progress(import_id) if import_id else None
        if suffix == ".csv":
            call = lambda: self.store.import_csv(path, name=name, tags=tags,  # noqa: E731
                                                 description=description,
                                                 label_column=label_column, progress=progress,
                                                 **privacy)
        elif suffix == ".npy":
            call = lambda: self.store.import_npy(path, name=name, tags=tags,  # noqa: E731
                                                 description=description, **privacy)
        elif suffix == ".onnx":
            if privacy:
                raise ProposalError("min_rows and dp are settings of a dataset, not of a model")
            call = lambda: self.store.import_onnx(path, name=name, tags=tags,  # noqa: E731
                                                  description=description)
        else:
            raise ProposalError(f"{Path(path).name}: Parley imports .csv and .npy datasets and "
                                f".onnx models; export a PyTorch model with `parley publish` "
                                f"from Python (Store.import_torch)")
        try:
            asset = await asyncio.to_thread(call)
        finally:
            if import_id is not None:
                self._imports.pop(import_id, None)
        if asset.kind == "model":  # checking it imported torch and CrypTen
            _freeze_imports()
        await asyncio.to_thread(self._asset_event, EventKind.ASSET_PUBLISHED, asset)
        return asset

    def tag_warnings(self, asset: Asset) -> list[str]:
        """A tag now on several assets makes every job that names it fail: say so at once."""
        out = []
        for tag in asset.tags:
            others = [a.id for a in self.store.list([tag]) if a.id != asset.id]
            if others:
                out.append(f"the tag '{tag}' is also on {', '.join(others)}; a job that names "
                           f"'{tag}' fails while {len(others) + 1} assets carry it: remove "
                           f"the old one (`parley unpublish {others[0]}`) or give this one "
                           f"another tag")
        return out

    def _import_progress(self, import_id: str) -> Any:
        cancelled = threading.Event()
        self._imports[import_id] = cancelled
        last = [0.0]

        def progress(done: int, total: int) -> None:  # on the import's thread
            if cancelled.is_set():
                raise ImportCancelled("the import was cancelled; nothing was stored")
            if time.monotonic() - last[0] >= 0.2:
                last[0] = time.monotonic()
                self.events.append(EventKind.ASSET_IMPORT_PROGRESS,
                                   {"import_id": import_id, "done": done, "total": total})

        return progress

    def cancel_import(self, import_id: str) -> bool:
        cancelled = self._imports.get(import_id)
        if cancelled is not None:
            cancelled.set()
        return cancelled is not None

    def _holds(self, tag: str) -> bool:
        try:
            return bool(self.store.list([tag]))
        except ParleyError:
            return False  # not even a valid tag

    def _asset_event(self, kind: EventKind, asset: Asset) -> None:
        self.events.append(kind, {"asset_id": asset.id, "name": asset.name, "kind": asset.kind,
                                  "tags": list(asset.tags)})

    def update_asset(self, asset_id: str, **changes: Any) -> Asset:
        asset = self.store.update(asset_id, **changes)
        self._asset_event(EventKind.ASSET_CHANGED, asset)
        return asset

    def remove_asset(self, asset_id: str) -> None:
        self.store.remove(asset_id)
        self.events.append(EventKind.ASSET_REMOVED, {"asset_id": asset_id})

    # -- what the API reads: the node's parts stay behind these -------------------------------
    def assets(self, tags: list[str] | tuple[str, ...] = (), kind: str | None = None
               ) -> list[Asset]:
        return self.store.list(tags, kind)

    def preview(self, asset_id: str) -> dict[str, Any]:
        return self.store.preview(asset_id)

    def catalog_version(self) -> int:
        return self.store.catalog_version()

    def job(self, job_id: str, role: str | None = None) -> JobRecord:
        """``UnknownJob`` if this node has no such job (in that role)."""
        return self.jobs.get(job_id, role)

    def job_for_orchestrator(self, job_id: str, sender: str | None) -> dict[str, Any]:
        """A party job's record as its orchestrator sees it; Forbidden for any other node."""
        return self._orchestrators_job(job_id, sender).for_orchestrator()

    def _orchestrators_job(self, job_id: str, sender: str | None) -> JobRecord:
        """A party job, for its orchestrator (``sender``; None: this node's owner) only: job
        control and results belong to the node that orchestrated the job."""
        job = self.jobs.get(job_id, PARTY)
        if sender is not None and sender != job.proposal["orchestrator"].get("node_id"):
            self.audit.append("refusal", job=job.id, sender=sender,
                              reason="not the job's orchestrator")
            raise Forbidden(f"only the node that orchestrated {job.id} may do that")
        return job

    def job_list(self, role: str | None = None, states: list[str] | tuple[str, ...] = ()
                 ) -> list[JobRecord]:
        return self.jobs.list(role, states)

    async def wait_events(self, after: int, timeout: float, job_id: str | None = None,
                          role: str | None = None) -> list[dict[str, Any]]:
        return await self.events.wait(after, timeout, job_id, role)

    def peers(self) -> list[dict[str, Any]]:
        """The peer book as the owner sees it, each with its name clash if any."""
        book = self.peer_book
        return [p.public(book.name_clash(p)) for p in book.list()]

    def find_peer(self, name_or_id: str) -> Any:
        return self.peer_book.find(name_or_id)

    def add_manual_peer(self, address: str) -> None:
        self.peer_book.add_manual(address)

    # -- pairing and proof of who sent a request (node/trust.py does the work) -------------
    @property
    def peer_port(self) -> int:
        return self.trust.peer_port

    async def authenticate(self, request: Any) -> str:
        """The node id that signed a peer request (AuthError if none paired did)."""
        return await self.trust.authenticate(request)

    async def pair(self, target: str) -> Any:
        """Ask a node to pair: at ``HOST:PORT``, or the peer seen under a name (then the node
        at that address must prove it holds the key it was seen with)."""
        if looks_like_address(target):
            return await self.trust.start_pairing(*parse_address(target))
        peer = self.find_peer(target)
        return await self.trust.start_pairing(peer.host, peer.port, expect=peer.node_id)

    def pairings(self) -> list[dict[str, Any]]:
        return self.trust.list_pairings()

    async def decide_pairing(self, pairing_id: str, confirm: bool) -> Any:
        if confirm:
            return await self.trust.confirm(pairing_id)
        return await asyncio.to_thread(self.trust.reject, pairing_id)

    def unpair(self, peer: str) -> Any:
        return self.trust.unpair(peer)

    def pairing_hello(self, body: Any, remote: str) -> dict[str, Any]:
        return self.trust.hello(body, remote)

    def pairing_reveal(self, pairing_id: str, body: Any) -> None:
        self.trust.reveal(pairing_id, body)

    async def pairing_confirmed_by_peer(self, pairing_id: str, request: Any) -> None:
        await self.trust.remote_confirm(pairing_id, request)

    async def unpaired_by_peer(self, request: Any) -> Any:
        return await self.trust.unpaired_by_peer(request)

    def audit_report(self, after: int = 0, kind: str | None = None, peer: str | None = None,
                     job: str | None = None) -> dict[str, Any]:
        """The audit log's entries after ``after`` (of one kind, naming one peer or one job),
        with the check of its hash chain."""
        report = self.audit.verify()
        entries = self.audit.entries(after, kind)
        if peer:
            entries = [e for e in entries if peer in (
                e["fields"].get("peer"), e["fields"].get("sender"),
                e["fields"].get("orchestrator"), e["fields"].get("name"),
                e["fields"].get("remote"))]
        if job:
            entries = [e for e in entries if e["fields"].get("job") == job]
        return {"entries": entries, "verify": {
            "ok": report.ok, "entries": report.entries, "first_bad_seq": report.first_bad_seq,
            "problem": report.problem}}

    def status(self) -> dict[str, Any]:
        """What the owner's status bar shows; cheap enough to ask on every event."""
        running = self.jobs.list(states=[JobState.STARTING, JobState.RUNNING])
        queued = self.jobs.list(role=PARTY, states=[JobState.QUEUED])
        pending = self.jobs.list(role=PARTY, states=[JobState.AWAITING_APPROVAL])
        return {
            **self.identity(), "host": self.host, "port": self.trust.peer_port,
            "confinement": self.confinement,
            "accept_reduced_isolation": self.accept_reduced_isolation,
            "data_dir": str(self.data_dir), "catalog_version": self.store.catalog_version(),
            "event_seq": self.events.last_seq(), "version": __version__,
            "parties": {"running": len(self._runs), "max": self.max_parties,
                        "queued": len(self._queue)},
            "warm_workers": self.launcher.status(),
            "loop": self.loop_probe.status(),
            "counts": {
                "paired_peers": len(self.peer_book.paired()),
                "running_jobs": len({j.id for j in running}),
                "queued_jobs": len(queued),
                "pending_proposals": len(pending),
                "pending_pairings": sum(1 for p in self.trust.list_pairings()
                                        if p["state"] == "pending" and p["direction"] == "in"
                                        and not p["local_confirmed"]),
            },
        }

    def catalog(self, tags: Sequence[str] = ()) -> dict[str, Any]:
        return {"node": self.identity(), "catalog_version": self.store.catalog_version(),
                "assets": [a.public() for a in self.store.list(tags)]}

    # -- proposals received (party role) ------------------------------------------------
    async def receive_proposal(self, body: Any, sender: str | None = None) -> JobRecord:
        """A proposal from ``sender`` (the authenticated node id; None in unit tests)."""
        try:
            return await self._receive_proposal(body, sender)
        except ParleyError as exc:
            await asyncio.to_thread(
                self.audit.append, "refusal", what="proposal", sender=sender or "",
                job=str(body.get("proposal", {}).get("job_id", ""))[:40]
                if isinstance(body, dict) and isinstance(body.get("proposal"), dict) else "",
                reason=exc.message[:300])
            raise

    async def _receive_proposal(self, body: Any, sender: str | None) -> JobRecord:
        if not isinstance(body, dict) or "proposal" not in body:
            raise ProposalError("expected {\"proposal\": {...}, \"rank\": n}")
        p = proposals.validate(body["proposal"])
        rank = body.get("rank")
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < len(
                p["parties"]):
            raise ProposalError("rank: must be one of the proposal's party ranks")
        if sender is not None:
            if sender != p["orchestrator"].get("node_id"):
                raise Forbidden("the proposal names another node as its orchestrator")
            if proposals.party_of(p, rank).get("node_id") != self.node_id:
                raise ProposalError(f"rank {rank} of this proposal is another node, not this one")
            if not self.trust.check_signature(sender, proposals.proposal_hash(p),
                                              str(body.get("signature", ""))):
                raise Forbidden("the proposal is not signed by its orchestrator")
        kind = proposals.code_kind(p)
        if kind == "source" and not self.os_confined and not self.accept_reduced_isolation:
            raise ProposalError("this node cannot confine job code on this system (no seccomp "
                                "or Landlock), so it accepts plans only; its owner can start it "
                                "with --accept-reduced-isolation to allow source jobs")
        await asyncio.to_thread(proposals.check_against_store, p, rank, self.store)
        budgets = await asyncio.to_thread(self._budgets, p, rank)
        names, claims = await asyncio.to_thread(self._names_of, p, sender)
        last = await asyncio.to_thread(self.jobs.last_approved_source,
                                       p["orchestrator"]["node_id"],
                                       p.get("title", ""), p["job_id"])
        material = await asyncio.to_thread(review.build, p, rank, self.store, last, names,
                                           claims, [text for *_, text in budgets])
        # storage (fsynced commits, the audit log) runs off the event loop
        return await asyncio.to_thread(self._record_proposal, p, rank, body, sender, kind,
                                       material, names, claims)

    def _record_proposal(self, p: dict[str, Any], rank: int, body: dict[str, Any],
                         sender: str | None, kind: str, material: dict[str, Any],
                         names: dict[str, Any], claims: list[dict[str, Any]]) -> JobRecord:
        """Keep a checked proposal, audit it, approve it where a policy says so, announce it."""
        orchestrator = names["orchestrator"]
        orchestrator_id = p["orchestrator"]["node_id"]
        policy = self.jobs.policy_allows(orchestrator_id, kind)
        # a proposal that a policy approves is never listed as waiting, not even for the
        # moment between its record and its approval
        with self.jobs.as_one_change() if policy is not None else contextlib.nullcontext():
            job = self.jobs.create(p["job_id"], PARTY, "awaiting_approval", p,
                                   proposals.proposal_hash(p), rank,
                                   detail={"review": material, "names": names,
                                           "signature": body.get("signature")})
            self.audit.append("proposal", job=job.id, hash=job.proposal_hash,
                              orchestrator=orchestrator_id, sender=sender or "", code=kind)
            for claim in claims:
                self.audit.append("claim", job=job.id, sender=sender or "", **claim)
            logger.info("job %s proposed by %s (rank %d, %s)", p["job_id"], orchestrator_id,
                        rank, kind)
            if policy is not None:
                what = "every job" if policy == "any" else f"{kind} jobs"
                job = self._approved(job.id, f"approved by the owner's policy: {what} from "
                                             f"{orchestrator} ({orchestrator_id})")
        # announced once decided: a proposal a policy approved never shows as waiting
        self.events.append(EventKind.PROPOSAL_ARRIVED, {
            "job_id": job.id, "orchestrator": orchestrator, "orchestrator_id": orchestrator_id,
            "title": p.get("title", ""), "kind": job.public()["kind"], "rank": rank,
            "state": job.state}, job_id=job.id, role=PARTY)
        return job

    def name_of(self, node_id: str) -> str:
        """What this node calls a node: its own name, a peer's paired name, or a mark that
        the key is not paired here. Never a name a sender wrote."""
        if node_id == self.node_id:
            return self.name
        try:
            peer = self.peer_book.get(node_id)
        except UnknownPeer:
            return f"unknown node {node_id[:14]}"
        return peer.name if peer.paired else f"unpaired node {node_id[:14]}"

    def _names_of(self, p: dict[str, Any], sender: str | None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Names for every node a proposal mentions, from this node's peer book, and the
        claims that differ from it (each audited, and shown to the owner as a warning)."""
        if sender is None:  # unit tests without a network: the proposal's words
            return ({"orchestrator": p["orchestrator"]["name"],
                     "parties": {str(q["rank"]): q["name"] for q in p["parties"]}}, [])
        claims = []

        def verified(field: str, entry: dict[str, Any]) -> str:
            name = self.name_of(entry["node_id"])
            if entry["name"] != name:
                claims.append({"field": field, "node": entry["node_id"],
                               "claimed": entry["name"][:80], "known_as": name})
            return name

        names = {"orchestrator": verified("the orchestrator", p["orchestrator"]),
                 "parties": {str(q["rank"]): verified(f"rank {q['rank']}", q)
                             for q in p["parties"]}}
        return names, claims

    @property
    def os_confined(self) -> bool:
        return bool(self.confinement.get("seccomp") is True or
                    isinstance(self.confinement.get("landlock"), int))

    def _budgets(self, p: dict[str, Any], rank: int
                 ) -> list[tuple[Asset, float, float, str]]:
        """This node's datasets with differential privacy that ``p`` binds: (asset, the epsilon
        it spends, the dataset's whole budget, words for the review). A job may bind one only
        as a statistics plan with ``dp``, with enough budget left, or to reveal to this node
        alone (ProposalError, BudgetSpent)."""
        out = []
        for b in p["bindings"]:
            if b["rank"] != rank or b["kind"] != "dataset":
                continue
            asset = self.store.by_tag(b["tag"])
            dp = privacy_settings(asset.schema)["dp"]
            if dp is None:
                continue
            code = p["code"]
            eps = plans.epsilon_of(code["plan"]) if code["kind"] == "plan" else None
            if eps is None:
                reveal = p["reveal"]
                if reveal["everyone"] or set(reveal["to"]) - {rank} or \
                        set(reveal["result_to"]) - {rank}:
                    raise ProposalError(
                        f"'{b['tag']}' here has differential privacy on: it takes part only "
                        f"in statistics plans with dp (noise and a privacy budget), or in "
                        f"jobs that reveal to this node alone")
                continue
            total = float(dp["epsilon"])
            left = total - self.reveals.spent(asset.id)
            if eps > left + 1e-9:
                raise BudgetSpent(f"'{b['tag']}' here: its privacy budget has epsilon "
                                  f"{max(left, 0):g} of {total:g} left, and this job would "
                                  f"spend {eps:g}; its owner can give it more (`parley "
                                  f"privacy`) or the job can ask for less")
            out.append((asset, eps, total,
                        f"differential privacy on '{b['tag']}': this job adds noise and "
                        f"spends epsilon {eps:g} of its budget; {left:g} of {total:g} left "
                        f"before it"))
        return out

    def _approved(self, job_id: str, reason: str) -> JobRecord:
        record = self.jobs.get(job_id, PARTY)
        for asset, eps, total, _ in self._budgets(record.proposal, record.rank or 0):
            left = self.reveals.spend(asset.id, job_id, eps, total)
            self.audit.append("privacy", job=job_id, asset=asset.id, event="budget spent",
                              epsilon=f"{eps:g}", left=f"{left:g}", total=f"{total:g}")
        job = self.jobs.transition(job_id, PARTY, "approved", reason,
                                   expect=["awaiting_approval"])
        self.jobs.update(job_id, PARTY, detail={"approved": True, "approved_by": reason})
        self.audit.append("decision", job=job_id, hash=job.proposal_hash, decision="approved",
                          by=reason)
        self.events.append(EventKind.DECISION_TAKEN, {"job_id": job_id, "decision": "approved",
                                                      "by": reason, "reason": ""},
                           job_id=job_id, role=PARTY)
        return self.jobs.get(job_id, PARTY)

    def approve(self, job_id: str, proposal_hash: str, always: bool = False) -> JobRecord:
        """The owner approves exactly the proposal they reviewed (its hash, or the first 8 or
        more characters of it, as `parley show` prints); with ``always``, also every later
        proposal of this plan kind from this orchestrator's key (a policy)."""
        job = self.jobs.get(job_id, PARTY)
        given = str(proposal_hash or "").strip().lower()
        if len(given) < 8:
            raise ProposalError(f"approving {job_id} needs the proposal hash you reviewed (at "
                                f"least its first 8 characters); `parley show {job_id}` "
                                f"prints it")
        if not job.proposal_hash.startswith(given):
            raise JobStateError(f"job {job_id} is not the proposal you reviewed (hash differs); "
                                f"review it again with `parley show {job_id}`")
        job = self._approved(job_id, "approved by the owner")
        if always:
            self.add_policy(job.proposal["orchestrator"]["node_id"],
                            proposals.code_kind(job.proposal))
        return job

    # -- standing approvals (policies), bound to a paired node's key ------------------------
    def add_policy(self, peer: str, kind: str) -> dict[str, Any]:
        """Approve every later ``kind`` proposal from a paired node (by name or node id)."""
        if peer in (self.name, self.node_id):  # jobs this node sends itself
            node_id, name = self.node_id, self.name
        else:
            target = self.peer_book.find(peer)
            if not target.paired:
                raise UnknownPeer(f"'{peer}' is not paired with this node; a standing approval "
                                  f"is only for a paired peer (`parley pair {peer}` first)")
            node_id, name = target.node_id, target.name
        if self.jobs.add_policy(node_id, kind):
            self.audit.append("policy", event="added", peer=node_id, name=name, job_kind=kind)
        return {"orchestrator": name, "node_id": node_id, "kind": kind}

    def remove_policy(self, peer: str, kind: str) -> dict[str, Any]:
        node_id = peer
        if peer == self.name:
            node_id = self.node_id
        elif not any(p["node_id"] == peer for p in self.jobs.policies()):
            node_id = self.peer_book.find(peer).node_id
        if not self.jobs.remove_policy(node_id, kind):
            raise ProposalError(f"no policy approves {kind} jobs from {peer}; `parley policy "
                                f"list` shows them")
        self.audit.append("policy", event="removed", peer=node_id, job_kind=kind)
        return {"orchestrator": self.name_of(node_id), "node_id": node_id, "kind": kind}

    def policies(self) -> list[dict[str, Any]]:
        return [{**p, "orchestrator": self.name_of(p["node_id"])} for p in self.jobs.policies()]

    def _migrate_name_policies(self) -> None:
        """Policies an older version keyed by name become policies of that paired key."""
        for name, kind in self.jobs.take_name_policies():
            try:
                self.add_policy(name, kind)
            except ParleyError:
                logger.warning("dropped the standing approval of %s jobs from %r: no paired "
                               "node has that name", kind, name)

    def reject(self, job_id: str, reason: str) -> JobRecord:
        reason = reason.strip() or "no reason given"
        job = self.jobs.transition(job_id, PARTY, "rejected", f"rejected by the owner: {reason}",
                                   expect=["awaiting_approval"])
        self.audit.append("decision", job=job_id, hash=job.proposal_hash, decision="rejected",
                          by="owner", reason=reason[:300])
        self.events.append(EventKind.DECISION_TAKEN, {"job_id": job_id, "decision": "rejected",
                                                      "by": "owner", "reason": reason},
                           job_id=job_id, role=PARTY)
        return job

    async def start_party(self, job_id: str, rendezvous: str | None,
                          sender: str | None = None) -> dict[str, Any]:
        """Start this node's party of an approved job now, or queue it until this node has
        room (``max_parties`` party processes at once, and ``MIN_FREE_MEMORY`` to spare)."""
        job = await asyncio.to_thread(self._orchestrators_job, job_id, sender)
        if job.state != "approved":
            raise JobStateError(f"job {job_id} is {job.state}; only an approved job can start")
        p = job.proposal
        if job.rank != 0 and not rendezvous:
            raise ProposalError("rendezvous: the address of rank 0 is needed to start")
        assets, blob_index, blobs = await self._assets_for(p, job.party_rank)
        limits = proposals.limits(p)
        world = len(p["parties"])
        server = relay = None
        party_rendezvous = rendezvous
        if self.tls_links and world > 1:
            relay = await self._start_relay(job_id, job.party_rank, p)
        try:
            if job.rank == 0:  # the parties' store, for the job's key only
                from node.rendezvous import RendezvousServer, rendezvous_url

                # with links, on the party-local address: the others reach it through the
                # relays only
                server = await RendezvousServer(world).start(
                    relay.low if relay is not None else self.host)
                rendezvous = party_rendezvous = server.url  # with its key: never logged
                if relay is not None:
                    relay.store_target = (server.host, server.port)
                    rendezvous = rendezvous_url(server.key, self.host, relay.tls_port)
            elif relay is not None:  # our party's store connection goes through our relay
                from node.rendezvous import parse_rendezvous, rendezvous_url

                host, port, key = parse_rendezvous(str(rendezvous))
                local = await asyncio.to_thread(relay.add_store_forwarder, host, port)
                party_rendezvous = rendezvous_url(key, relay.low, local)
        except BaseException:
            if relay is not None:
                await asyncio.to_thread(relay.close)
            if server is not None:
                await server.close()
            raise
        reveal = p["reveal"]
        source, entry = proposals.job_code(p)
        spec = {
            "job_id": job_id, "rank": job.rank, "world_size": world,
            "rendezvous": party_rendezvous,
            "source": source, "entry": entry, "assets": assets,
            "blobs": blob_index, "result_to": reveal["result_to"],
            "reveal": {"to": reveal["to"], "everyone": reveal["everyone"],
                       "budget": reveal["budget"]},
            "gloo_ifname": interface_of(self.host),
            "precision_bits": p.get("crypten", {}).get("precision_bits", 16),
            "timeouts": {"rendezvous": limits["rendezvous_timeout_s"],
                         "op": limits["op_timeout_s"]},
            "limits": {"cpu_s": limits["time_s"] * 2, "memory_bytes": int(limits["memory_mb"])
                       << 20, "log_bytes": 1 << 20},
        }
        if relay is not None:
            spec["links"] = {"local": relay.local, "control": [relay.low, relay.control_port],
                             "token": relay.token,
                             "relay": format_address(self.host, relay.tls_port)}
            await asyncio.to_thread(self.jobs.update, job_id, PARTY, detail={"links": {
                "tls": True, "relay_port": relay.tls_port, "party_local": relay.local}})
        start = _QueuedStart(spec, blobs, limits["time_s"], server, self._same_host(p), relay)
        if self._room():
            await self._launch(job_id, start)
            return {"rendezvous": rendezvous, "state": "starting"}
        busy = len(self._runs)
        await asyncio.to_thread(self._record_queued, job_id, job.party_rank, busy)
        self._queue[job_id] = start  # in the order starts arrive (see Orchestrator._start)
        self._start_queued()  # room may have freed while the record was written
        return {"rendezvous": rendezvous, "state": "queued"}

    def _record_queued(self, job_id: str, rank: int, busy: int) -> None:
        self.jobs.transition(job_id, PARTY, JobState.QUEUED,
                             f"waiting for room: this node runs {busy} "
                             f"part{'y' if busy == 1 else 'ies'} at once at most")
        self.audit.append("run", job=job_id, event="queued", rank=rank)

    async def _start_relay(self, job_id: str, rank: int, p: dict[str, Any]) -> Any:
        """This job's link relay, pinned to the nodes of its other parties."""
        from node.identity import cert_sha256
        from node.links import LinkRelay, job_peers

        me = self.trust.identity
        mine = (me.cert_der_sha256, me.cert_path.read_text())

        def peer_cert(node_id: str) -> tuple[str, str]:
            peer = self.peer_book.get(node_id)
            return cert_sha256(peer.cert_pem), peer.cert_pem

        peers = job_peers(p["parties"], rank, self.node_id, mine, peer_cert)
        relay = LinkRelay(me, job_id, rank, peers, self.host)
        return await asyncio.to_thread(relay.start)

    def _room(self) -> bool:
        """Room for one more party process now: fewer than ``max_parties`` run, and the
        machine has ``MIN_FREE_MEMORY`` available."""
        busy = len(self._runs) + len(self._starting)
        if busy >= self.max_parties:
            return False
        free = available_memory()
        return free is None or free >= MIN_FREE_MEMORY or not busy

    def _same_host(self, p: dict[str, Any]) -> int:
        """How many parties of ``p`` run on this machine, this one included."""
        def host_of(node_id: str) -> str:
            try:
                return self.peer_book.get(node_id).host
            except ParleyError:
                return ""

        return parties_on_host(p["parties"], self.node_id, self.host, host_of)

    async def _launch(self, job_id: str, start: _QueuedStart) -> None:
        self._starting.add(job_id)  # before any wait: this job holds its room
        spec = start.spec
        # the cores of this machine, shared by this job's parties here and the other jobs
        # running here now
        spec["threads"] = party_threads(start.same_host + len(self._runs))

        async def close_rendezvous() -> None:
            await start.close()
            await asyncio.to_thread(record_links)

        def record_links() -> None:  # storage: on a thread
            relay, server = start.relay, start.server
            if relay is not None:  # what crossed to other nodes, before TLS
                links = {**self.jobs.get(job_id, PARTY).detail.get("links", {}),
                         "bytes_sent": relay.bytes_sent, "bytes_received": relay.bytes_received,
                         "wire_sent": relay.wire_sent, "wire_received": relay.wire_received}
                self.jobs.update(job_id, PARTY, detail={"links": links})
                if relay.refused:
                    self.audit.append("refusal", job=job_id, connections=relay.refused,
                                      reason="a connection to the job's link relay was not from "
                                             "a party of the job")
            if server is not None and server.refused:
                self.audit.append("refusal", job=job_id, connections=server.refused,
                                  reason="a connection to the job's rendezvous did not prove "
                                         "the job's key")

        async def supervise(run: PartyProcess, started: asyncio.Task[Any]) -> None:
            try:
                await self._supervise(job_id, run, spec, start.blobs, start.limit_s, started)
            finally:
                await close_rendezvous()
                self._start_queued()

        def record_starting() -> None:
            self.jobs.transition(job_id, PARTY, "starting", "")
            self.jobs.update(job_id, PARTY, detail={"threads": spec["threads"]})

        try:
            await asyncio.to_thread(record_starting)
            run = await self.launcher.launch(job_id, spec["threads"])
        except BaseException as exc:
            self._starting.discard(job_id)
            await close_rendezvous()
            if isinstance(exc, OSError):
                await asyncio.to_thread(self.jobs.transition, job_id, PARTY, "failed",
                                        f"could not start a party process: {exc}")
            raise
        self._starting.discard(job_id)
        self._runs[job_id] = run
        # audited beside the party's start, not before it: the outcome waits for this entry
        started = self.spawn(asyncio.to_thread(
            self.audit.append, "run", job=job_id, event="started", rank=spec["rank"],
            threads=spec["threads"], warm=run.warm))
        self.spawn(supervise(run, started))

    def _start_queued(self) -> None:
        """A party ended: start the queued jobs that now have room, oldest first."""
        while self._queue and self._room():
            job_id, start = next(iter(self._queue.items()))
            del self._queue[job_id]
            self._starting.add(job_id)  # holds its room from now on
            self.spawn(self._launch_logged(job_id, start))

    async def _launch_logged(self, job_id: str, start: _QueuedStart) -> None:
        try:
            await self._launch(job_id, start)
        except Exception:  # noqa: BLE001 - the job is failed already where it could tell
            logger.exception("queued job %s could not start", job_id)

    async def _assets_for(self, p: dict[str, Any], rank: int
                          ) -> tuple[dict[str, Any], list[dict[str, Any]], list[bytes]]:
        """What the party of ``rank`` gets: bindings, and the bytes of its own assets."""
        assets = await asyncio.to_thread(proposals.check_against_store, p, rank, self.store)
        blobs: list[bytes] = []
        blob_index: list[dict[str, Any]] = []
        for tag, holders in assets.items():
            for holder, entry in holders.items():
                if "asset_id" not in entry:
                    continue
                asset = await asyncio.to_thread(self.store.get, entry.pop("asset_id"))
                if asset.kind == "dataset":  # what reveals of it to others covered before
                    entry["rows"] = int(asset.schema["shape"][0])
                    entry["dp"] = privacy_settings(asset.schema)["dp"]  # bounds: this node's
                    entry["history"] = await asyncio.to_thread(self.reveals.history, asset.id)
                parts = ["model"] if asset.kind == "model" else (
                    ["features", "labels"] if asset.schema.get("label") else ["features"])
                for part in parts:
                    data = await asyncio.to_thread(self._blob, asset, part)
                    blobs.append(data)
                    blob_index.append({"tag": tag, "rank": int(holder), "part": part,
                                       "size": len(data)})
        return assets, blob_index, blobs

    def _blob(self, asset: Asset, part: str) -> bytes:
        return self.store.content_path(asset, part).read_bytes()

    async def _supervise(self, job_id: str, run: PartyProcess, spec: dict[str, Any],
                         blobs: list[bytes], limit_s: float, started: asyncio.Task[Any]
                         ) -> None:
        def record(name: str, data: dict[str, Any]) -> None:  # storage: on a thread
            if name == "joined" and self.jobs.get(job_id, PARTY).state == JobState.STARTING:
                self.jobs.transition(job_id, PARTY, JobState.RUNNING, "")
            if name == "locked":
                self.jobs.update(job_id, PARTY, detail={"confinement": data.get("confinement")})
            if name == "reveal":
                dst = data.get("dst")
                covered = data.pop("rows", None) or {}
                if not isinstance(covered, dict):
                    covered = {}
                self.audit.append("reveal", job=job_id, to="every party" if dst is None
                                  else f"rank {dst}", elements=int(data.get("elements", 0)),
                                  rows=", ".join(f"{split_key(k)[0]}: {int(v.get('count', 0))}"
                                                 for k, v in sorted(covered.items())))
                self._record_reveal(job_id, covered)
            if name == "progress":  # rounds and bytes so far, about once a second
                self.jobs.update(job_id, PARTY, detail={"progress": {
                    "phase": "computing", "rounds": int(data.get("rounds", 0)),
                    "bytes": int(data.get("bytes", 0)),
                    "elapsed_s": float(data.get("elapsed_s", 0))}})
                return  # the detail update is the event
            if name == "output":  # the job's print(), kept here: it never leaves this node
                lines = self.jobs.get(job_id, PARTY).detail.get("output", [])
                self.jobs.update(job_id, PARTY, detail={
                    "output": (lines + [str(data.get("line", ""))])[-MAX_OUTPUT_LINES:]})
                return
            self.jobs.add_event(job_id, PARTY, name, {"rank": spec["rank"], **data})

        async def on_event(name: str, data: dict[str, Any]) -> None:
            await asyncio.to_thread(record, name, data)

        try:
            outcome = await run.supervise(spec, blobs, limit_s, on_event)
        finally:
            self._runs.pop(job_id, None)
            # the audit log says "started" before it says how the party ended
            await asyncio.wait([started])
        await asyncio.to_thread(self._record_outcome, job_id, outcome)

    def _record_reveal(self, job_id: str, covered: dict[str, Any]) -> None:
        """Keep the rows of this node's datasets that a reveal to others covered."""
        for key, entry in covered.items():
            tag = split_key(key)[0]
            try:
                asset = self.store.by_tag(tag)
                self.reveals.record(asset.id, job_id, int(entry.get("line", 0)),
                                    str(entry["rows"]), int(entry.get("count", 0)))
            except (ParleyError, KeyError, ValueError, TypeError):
                logger.warning("job %s: could not record the rows a reveal of %s covered",
                               job_id, tag)

    def _record_outcome(self, job_id: str, outcome: Any) -> None:
        if outcome.state == JobState.SUCCEEDED and outcome.released:
            self.jobs.update(job_id, PARTY, result={"value": outcome.result})
        threads = self.jobs.get(job_id, PARTY).detail.get("threads")
        self.jobs.update(job_id, PARTY, detail={"timings": outcome.timings,
                                                "stats": {**outcome.stats, "threads": threads},
                                                "failure_kind": FailureKind(outcome.kind or "")})
        try:
            self.jobs.transition(job_id, PARTY, outcome.state, outcome.reason)
        except JobStateError:
            pass  # already ended (e.g. cancelled while reporting)
        self.audit.append("run", job=job_id, event=outcome.state, reason=outcome.reason[:300])
        logger.info("job %s: party ended %s %s", job_id, outcome.state, outcome.reason)

    async def cancel_party(self, job_id: str, reason: str, sender: str | None = None
                           ) -> JobRecord:
        job = await asyncio.to_thread(self._orchestrators_job, job_id, sender)
        reason = f"cancelled: {reason.strip() or 'by the orchestrator'}"
        run = self._runs.get(job_id)
        if run is not None:
            run.kill(reason)
            return job
        queued = self._queue.pop(job_id, None)
        if queued is not None:
            await queued.close()
        if not job.terminal:
            job = await asyncio.to_thread(self.jobs.transition, job_id, PARTY, "cancelled",
                                          reason)
        return job

    async def dry_run(self, source: str, entry: str, layers: dict[str, bool] | None = None,
                      bindings: dict[str, str] | None = None,
                      reveal: dict[str, Any] | None = None, time_s: float = 180,
                      schemas: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run job source as a single party, through the same layers as a real job
        (``layers`` exists for tests that take one away). A tag this node holds is read from
        its store; any other tag the source names gets mock data, shaped like ``schemas``
        says (the catalogs of paired peers) or, if no one said, a small stand-in. ``src``
        ranks all mean this party. The reveal map allows every rank unless ``reveal`` says
        otherwise (auditors pass a real one).
        """
        layers = {**ALL_LAYERS, **(layers or {})}
        if bindings is not None:
            tags = bindings
        else:
            try:
                info = await asyncio.to_thread(static.check, source, entry)
                tags = {ld.tag: ld.kind for ld in info.loads if not static.is_dynamic(ld.tag)}
            except static.JailRejected as exc:
                if layers["static"]:
                    return _dry_run_refused("jail_rejected",
                                            f"the static check refused the job: {exc}")
                # a test build without the static layer: every asset is in reach
                tags = {a.tags[0]: a.kind for a in self.store.list() if a.tags}
        here = {t: k for t, k in tags.items() if await asyncio.to_thread(self._holds, t)}

        def binding(tag: str, kind: str) -> dict[str, Any]:  # stating the dataset's own minimum
            if kind != "dataset":
                return {"tag": tag, "rank": 0, "kind": kind}
            schema = self.store.by_tag(tag).schema
            return {"tag": tag, "rank": 0, "kind": kind,
                    "expect": {"min_rows": privacy_settings(schema)["min_rows"]}}

        p = {"bindings": [await asyncio.to_thread(binding, t, k) for t, k in here.items()],
             "parties": [{"rank": 0}]}
        try:
            assets, blob_index, blobs = await self._assets_for(p, 0)
        except ParleyError as exc:
            return _dry_run_refused("refused", exc.message)
        mocked = []
        for seed, (tag, kind) in enumerate(sorted(set(tags.items()) - set(here.items()))):
            schema = (schemas or {}).get(tag)
            parts = await asyncio.to_thread(_mock_parts, kind, schema, seed)
            assets[tag] = {"0": {"rank": 0, "kind": kind, **_mock_minimum(kind, schema)}}
            for part, data in parts.items():
                blobs.append(data)
                blob_index.append({"tag": tag, "rank": 0, "part": part, "size": len(data)})
            mocked.append({"tag": tag, "kind": kind, "shaped_like": "a paired peer's "
                           "catalog" if schema else "nothing known: a small stand-in"})
        out = await self._dry_run_spec(
            source, entry, assets, blob_index, blobs,
            reveal or {"to": list(range(16)), "everyone": True,
                       "budget": proposals.DEFAULT_BUDGET}, time_s, 8 << 30, layers)
        return {**out, "mocked": mocked}

    async def _dry_run_spec(self, source: str, entry: str, assets: dict[str, Any],
                            blob_index: list[dict[str, Any]], blobs: list[bytes],
                            reveal: dict[str, Any], time_s: float, memory_bytes: int,
                            layers: dict[str, bool]) -> dict[str, Any]:
        spec = {
            "job_id": "dry-run", "rank": 0, "world_size": 1, "dry_run": True,
            "rendezvous": "in-process",  # a world of one meets no one (node/party.py)
            "source": source, "entry": entry, "assets": assets, "blobs": blob_index,
            "result_to": [0], "reveal": reveal,
            "threads": 1, "timeouts": {"rendezvous": 30, "op": 10},
            "limits": {"cpu_s": int(time_s), "memory_bytes": memory_bytes,
                       "log_bytes": 1 << 20},
            "layers": layers,
        }
        run = await self.launcher.launch("dry-run", 1)
        events: list[dict[str, Any]] = []

        async def record(name: str, data: dict[str, Any]) -> None:
            events.append({"event": name, **data})

        outcome = await run.supervise(spec, blobs, time_s, record)
        confinement = next((e.get("confinement") for e in events if e["event"] == "locked"),
                           None)
        return {"state": outcome.state, "reason": outcome.reason, "kind": outcome.kind,
                "result": outcome.result, "confinement": confinement,
                "timings": outcome.timings, "stats": outcome.stats,
                "output": [str(e.get("line", "")) for e in events
                           if e["event"] == "output"][-MAX_OUTPUT_LINES:]}

    async def dry_run_proposal(self, job_id: str, schemas_elsewhere: dict[str, dict[str, Any]]
                               ) -> dict[str, Any]:
        """Run a received proposal's code as one party on mock data shaped like the real
        assets (``schemas_elsewhere``: the catalog schemas of tags other parties hold), with
        the proposal's own reveal map and limits."""
        from node.mockdata import mock_dataset, mock_model

        job = await asyncio.to_thread(self.jobs.get, job_id, PARTY)
        p = job.proposal
        assets: dict[str, Any] = {}
        blob_index: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for seed, b in enumerate(p["bindings"]):
            if b["tag"] in assets:
                continue  # a tag bound at several ranks: one stand-in plays them all
            if b["rank"] == job.rank:
                asset = await asyncio.to_thread(self.store.by_tag, b["tag"])
                schema = asset.schema
            else:
                elsewhere = schemas_elsewhere.get(b["tag"])
                if elsewhere is None:
                    holder = proposals.party_of(p, b["rank"])["name"]
                    return _dry_run_refused(
                        "refused", f"the shape of '{b['tag']}' held by {holder} is unknown: its "
                        f"node did not say (it must be paired and online); try again later")
                schema = elsewhere
            if b["kind"] == "model":
                parts = {"model": await asyncio.to_thread(mock_model, schema, seed)}
            else:
                parts = mock_dataset(schema, seed)
            assets[b["tag"]] = {"0": {"rank": 0, "kind": b["kind"],
                                      "min_rows": proposals.min_rows_of(b)}}
            for part, data in parts.items():
                blobs.append(data)
                blob_index.append({"tag": b["tag"], "rank": 0, "part": part, "size": len(data)})
        source, entry = proposals.job_code(p)
        limits = proposals.limits(p)
        reveal = p["reveal"]
        return await self._dry_run_spec(source, entry, assets, blob_index, blobs,
                                        {"to": reveal["to"], "everyone": reveal["everyone"],
                                         "budget": reveal["budget"]},
                                        limits["time_s"], int(limits["memory_mb"]) << 20,
                                        ALL_LAYERS)

    def released_result(self, job_id: str, sender: str | None = None) -> dict[str, Any]:
        """The value this party releases to the job's orchestrator, signed by this node."""
        job = self._orchestrators_job(job_id, sender)
        if job.state != "succeeded":
            raise JobStateError(f"job {job_id} is {job.state}; it has no result")
        if job.result is None:
            raise JobStateError(f"job {job_id} releases no result from rank {job.rank}")
        value = job.result["value"]
        self.audit.append("release", job=job_id, to=sender or "orchestrator", rank=job.rank)
        return {"value": value, "signature": self.trust.sign_result(job_id, job.party_rank, value)}

    def write_runtime_file(self, admin_url: str, token: str) -> Path:
        """Where the CLI and the GUI find this node: admin URL and token (owner-only file)."""
        path = self.data_dir / "node.json"
        write_atomic(path, json.dumps({
            "name": self.name, "id": self.node_id, "admin_url": admin_url,
            "peer_url": self.peer_url, "token": token, "pid": os.getpid()}).encode())
        return path


def _mock_minimum(kind: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    """A mock dataset's minimum of rows per reveal: its real owner's, where its catalog says."""
    if kind != "dataset" or not schema:
        return {}
    return {"min_rows": privacy_settings(schema)["min_rows"]}


def _mock_parts(kind: str, schema: dict[str, Any] | None, seed: int) -> dict[str, bytes]:
    """Mock data for a tag a dry run reads but this node does not hold. Without a schema a
    dataset is 16 rows of 8 columns and a model takes 8 inputs to 2 outputs, so the two
    stand-ins fit each other."""
    from node.mockdata import mock_dataset, mock_model

    if kind == "model":
        return {"model": mock_model(schema or {"inputs": [{"shape": [None, 8]}],
                                               "outputs": [{"shape": [None, 2]}]}, seed)}
    return mock_dataset(schema or {"shape": [16, 8]}, seed)


def _dry_run_refused(kind: str, reason: str) -> dict[str, Any]:
    """A dry run refused before any party process started."""
    return {"state": "failed", "kind": kind, "reason": reason, "result": None,
            "confinement": None, "timings": {}, "stats": {}}

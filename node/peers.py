"""The peers a node knows, in SQLite: seen on the network, added by address, paired, revoked.

A peer's identity is its key: ``node_id`` is the fingerprint of its public key. Names and
addresses come from mDNS TXT records or the owner, and prove nothing; a peer is trusted only
once both owners confirmed a pairing, and then by its key and certificate alone. A node that
shows up under a paired peer's name with another key is a different, unpaired node, and the
book says so (``name_clash``).

A paired peer's name is the one it had at pairing, and its address the last one it proved:
a sighting (mDNS, a manual probe) can neither rename it nor move it. A sighting at another
address is a hint, handed to ``on_move_hint``; the trust layer checks it over TLS pinned to the
peer's certificate and only then calls ``move``.

Peers never paired are forgotten once nobody has seen them for ``FORGET_AFTER_S`` (``sweep``):
mDNS peers that left (goodbye or expiry), peers added by address that stopped answering the
probe (offline after ``MANUAL_OFFLINE_AFTER_S``), and senders of pairing requests that went
nowhere. Paired peers stay, shown offline, and so do revoked ones: the owner's decision stays
visible (there are only as many as the owner unpaired).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from node import db
from node.address import format_address
from node.errors import UnknownPeer
from node.events import EventKind, EventLog, TrustState

__all__ = ["FORGET_AFTER_S", "MANUAL_OFFLINE_AFTER_S", "MAX_NAME_CHARS", "Peer", "PeerBook"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    node_id TEXT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,
    state TEXT NOT NULL, source TEXT NOT NULL, public_key TEXT NOT NULL DEFAULT '',
    cert_pem TEXT NOT NULL DEFAULT '', cert_sha256 TEXT NOT NULL DEFAULT '',
    catalog_version INTEGER NOT NULL DEFAULT 0, last_seen REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 1, paired_at REAL
);
CREATE TABLE IF NOT EXISTS manual (address TEXT PRIMARY KEY, added_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pairings (id TEXT PRIMARY KEY, data TEXT NOT NULL);
"""
MAX_NAME_CHARS = 63
# An unpaired peer not seen for this long leaves the list (10 minutes: long enough to ride out
# a laptop's suspend or a node's restart, short enough that a node seen once at a cafe does
# not stay forever). For mDNS peers the clock starts when they went offline.
FORGET_AFTER_S = 600.0
# A peer added by address is probed every 30 s; missing two answers makes it offline.
MANUAL_OFFLINE_AFTER_S = 75.0

Address = tuple[str, int]
# a row of the peers table as _rows reads it: Peer's fields up to online (an INTEGER), paired_at
_PeerRow = tuple[str, str, str, int, str, str, str, str, str, int, float, int, float | None]


@dataclass
class Peer:
    node_id: str
    name: str
    host: str
    port: int
    state: str  # seen | paired | revoked
    source: str  # mdns | manual | pairing
    public_key: str
    cert_pem: str
    cert_sha256: str
    catalog_version: int
    last_seen: float  # the latest sighting, or when it went offline
    online: bool
    paired_at: float | None
    # Set only on the answer to an unpairing: whether the peer took the notice, and why not.
    told: bool | None = None
    told_detail: str = ""

    @property
    def url(self) -> str:
        return f"https://{format_address(self.host, self.port)}"

    @property
    def paired(self) -> bool:
        return self.state == "paired"

    def public(self, clash: str | None = None) -> dict[str, Any]:
        out = asdict(self)
        out.pop("cert_pem")
        told, detail = out.pop("told"), out.pop("told_detail")
        if told is not None:
            out["peer_told"], out["peer_told_detail"] = told, detail
        out["url"] = self.url
        out["name_clash"] = clash
        return out

    def at(self, candidates: Iterable[Address]) -> bool:
        """True when its known address is among ``candidates``."""
        return (self.host, self.port) in set(candidates)


class PeerBook:
    """Every change of a peer's presence or trust is also an event (``peer.*``)."""

    def __init__(self, data_dir: Path, events: EventLog) -> None:
        self._db = db.connect(data_dir / "peers.sqlite", _SCHEMA)
        self._lock = threading.Lock()
        # Reads have a connection of their own: in WAL mode they see the last change committed
        # and never wait for a write's sync to disk. Every signed request reads the paired
        # keys on the event loop, while mDNS sightings are written on another thread.
        self._reader = db.connect(data_dir / "peers.sqlite")
        self._read_lock = threading.Lock()
        self.events = events
        # Called (from any thread) with a paired peer's node id and the addresses a sighting
        # put it at, when its known address is not among them. Trust verifies them.
        self.on_move_hint: Callable[[str, list[Address]], None] | None = None
        self._on_mdns: set[str] = set()  # node ids mDNS says are present now

    def _announce(self, kind: EventKind, peer: Peer, trust: str | None = None,
                  **extra: Any) -> None:
        self.events.append(kind, {"node_id": peer.node_id, "name": peer.name,
                                  "address": f"{peer.host}:{peer.port}",
                                  "trust": trust or peer.state, "online": peer.online, **extra})

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._read_lock:
            self._reader.close()

    def _rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[Peer]:
        with self._read_lock:
            rows: list[_PeerRow] = self._reader.execute(
                f"SELECT node_id, name, host, port, state, source, public_key, cert_pem, "
                f"cert_sha256, catalog_version, last_seen, online, paired_at FROM peers {where} "
                f"ORDER BY name, node_id", args).fetchall()
        return [Peer(*r[:11], bool(r[11]), r[12]) for r in rows]

    def list(self) -> list[Peer]:
        return self._rows()

    def paired(self) -> builtins.list[Peer]:
        return self._rows("WHERE state = 'paired'")

    def get(self, node_id: str) -> Peer:
        found = self._rows("WHERE node_id = ?", (node_id,))
        if not found:
            raise UnknownPeer(f"no peer {node_id}; `parley peers` lists the ones this node knows")
        return found[0]

    def find(self, name_or_id: str) -> Peer:
        """A peer by node id, or by name (a paired one first; ambiguity is an error)."""
        by_id = self._rows("WHERE node_id = ?", (name_or_id,))
        if by_id:
            return by_id[0]
        named = self._rows("WHERE name = ?", (name_or_id,))
        paired = [p for p in named if p.paired]
        if len(paired) == 1:
            return paired[0]
        if len(named) == 1:
            return named[0]
        if not named:
            raise UnknownPeer(f"no peer named '{name_or_id}'; `parley peers` lists them, "
                              f"`parley add-peer HOST:PORT` adds one multicast cannot reach")
        ids = ", ".join(p.node_id for p in named)
        raise UnknownPeer(f"several peers are named '{name_or_id}' ({ids}); use the node id")

    def name_clash(self, peer: Peer) -> str | None:
        """A warning when another key uses a paired peer's name (a possible impostor)."""
        for other in self._rows("WHERE name = ? AND node_id != ?", (peer.name, peer.node_id)):
            if other.paired and not peer.paired:
                return (f"the name '{peer.name}' belongs to paired node {other.node_id}; this "
                        f"is a different key: not the peer you paired with")
        return None

    @db.off_loop
    def seen(self, node_id: str, name: str, host: str, port: int, source: str,
             catalog_version: int = 0, addresses: Iterable[str] = ()) -> Peer:
        """Record a sighting (mDNS, a manual address, a pairing request). Never changes trust.

        ``addresses``: every address the sighting gave (mDNS announces several); ``host`` is
        the one to use for a peer not paired yet. A paired peer keeps its paired name, and its
        address unless the sighting names it; otherwise the sighting is only a hint
        (``on_move_hint``) and changes nothing here.
        """
        now = time.time()
        name = name[:MAX_NAME_CHARS]
        before = self._rows("WHERE node_id = ?", (node_id,))
        if source == "mdns":
            self._on_mdns.add(node_id)
        if before and before[0].paired:
            candidates = [(a, port) for a in dict.fromkeys([host, *addresses])]
            return self._seen_paired(before[0], candidates, catalog_version, now)
        with self._lock:
            # A pairing request is the weakest source (it says nothing about presence later):
            # a later sighting by mDNS or the probe takes over.
            self._db.execute(
                "INSERT INTO peers (node_id, name, host, port, state, source, catalog_version, "
                "last_seen, online) VALUES (?,?,?,?, 'seen', ?, ?, ?, 1) ON CONFLICT(node_id) DO "
                "UPDATE SET name=excluded.name, host=excluded.host, port=excluded.port, "
                "catalog_version=excluded.catalog_version, last_seen=excluded.last_seen, "
                "online=1, source=CASE WHEN peers.source = 'pairing' THEN excluded.source "
                "ELSE peers.source END",
                (node_id, name, host, port, source, catalog_version, now))
        peer = self.get(node_id)
        if not before or not before[0].online:
            self._announce(EventKind.PEER_FOUND, peer)
            if self.name_clash(peer):
                self._announce(EventKind.PEER_TRUST_CHANGED, peer, TrustState.KEY_CHANGED)
        elif (before[0].host, before[0].port, before[0].name) != (host, port, name):
            self._announce(EventKind.PEER_FOUND, peer)  # moved or renamed
        return peer

    def _seen_paired(self, peer: Peer, candidates: builtins.list[Address], catalog_version: int,
                     now: float) -> Peer:
        if not peer.at(candidates):
            if self.on_move_hint is not None:
                self.on_move_hint(peer.node_id, candidates)
            return peer
        with self._lock:
            self._db.execute("UPDATE peers SET last_seen=?, online=1, catalog_version=? "
                             "WHERE node_id=?", (now, catalog_version, peer.node_id))
        after = self.get(peer.node_id)
        if not peer.online:
            self._announce(EventKind.PEER_FOUND, after)
        return after

    @db.off_loop
    def move(self, node_id: str, host: str, port: int) -> Peer | None:
        """A paired peer proved it is at ``host:port`` now (see Trust); None if not paired."""
        with self._lock:
            cur = self._db.execute("UPDATE peers SET host=?, port=?, online=1, last_seen=? "
                                   "WHERE node_id=? AND state='paired'",
                                   (host, port, time.time(), node_id))
        if not cur.rowcount:
            return None
        peer = self.get(node_id)
        self._announce(EventKind.PEER_FOUND, peer)
        return peer

    @db.off_loop
    def offline(self, node_id: str, addresses: Iterable[str] | None = None,
                port: int | None = None) -> None:
        """mDNS says a peer left. For a paired peer, only if it left from its known address
        (``addresses`` and ``port``, when given): a record elsewhere was never believed."""
        self._on_mdns.discard(node_id)
        if addresses is not None and port is not None:
            found = self._rows("WHERE node_id = ?", (node_id,))
            if found and found[0].paired and not found[0].at((a, port) for a in addresses):
                return
        with self._lock:
            cur = self._db.execute("UPDATE peers SET online = 0, last_seen = ? "
                                   "WHERE node_id = ? AND online = 1", (time.time(), node_id))
        if cur.rowcount:
            self._announce(EventKind.PEER_LOST, self.get(node_id))

    @db.off_loop
    def pair(self, node_id: str, name: str, host: str, port: int, public_key_b64: str,
             cert_pem: str, cert_sha256: str) -> Peer:
        """Trust this key. ``name`` and ``host:port`` come from the pairing (whose address the
        confirmation reached over TLS pinned to ``cert_pem``): they are the peer's from now on."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO peers (node_id, name, host, port, state, source, public_key, "
                "cert_pem, cert_sha256, last_seen, online, paired_at) "
                "VALUES (?,?,?,?, 'paired', 'pairing', ?,?,?,?, 1, ?) ON CONFLICT(node_id) DO "
                "UPDATE SET name=excluded.name, host=excluded.host, port=excluded.port, "
                "state='paired', public_key=excluded.public_key, cert_pem=excluded.cert_pem, "
                "cert_sha256=excluded.cert_sha256, last_seen=excluded.last_seen, online=1, "
                "paired_at=excluded.paired_at",
                (node_id, name[:MAX_NAME_CHARS], host, port, public_key_b64, cert_pem,
                 cert_sha256, now, now))
        peer = self.get(node_id)
        self._announce(EventKind.PEER_TRUST_CHANGED, peer, TrustState.PAIRED)
        return peer

    @db.off_loop
    def revoke(self, node_id: str) -> Peer:
        self.get(node_id)
        with self._lock:
            self._db.execute("UPDATE peers SET state='revoked' WHERE node_id=?", (node_id,))
        peer = self.get(node_id)
        self._announce(EventKind.PEER_TRUST_CHANGED, peer, TrustState.REVOKED)
        return peer

    # -- pairing requests waiting for an owner (kept across restarts) --------------------
    @db.off_loop
    def store_pairing(self, pairing_id: str, data: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO pairings VALUES (?, ?)", (pairing_id, data))

    def stored_pairings(self) -> builtins.list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT data FROM pairings")]

    @db.off_loop
    def delete_pairings(self, pairing_ids: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM pairings WHERE id = ?",
                                 [(i,) for i in pairing_ids])

    # -- forgetting peers nobody sees any more ------------------------------------------
    @db.off_loop
    def sweep(self, keep: Iterable[str] = (), now: float | None = None) -> builtins.list[Peer]:
        """Mark silent manual peers offline and forget never-paired peers unseen for
        ``FORGET_AFTER_S``; ``keep``: node ids with a pairing request pending. Returns the
        forgotten ones (each also a ``peer.lost`` event with ``forgotten: true``)."""
        now = time.time() if now is None else now
        live = set(self._on_mdns)
        for peer in self._rows("WHERE source = 'manual' AND online = 1 AND last_seen < ?",
                               (now - MANUAL_OFFLINE_AFTER_S,)):
            if peer.node_id not in live:
                with self._lock:
                    self._db.execute("UPDATE peers SET online = 0 WHERE node_id = ?",
                                     (peer.node_id,))
                self._announce(EventKind.PEER_LOST, self.get(peer.node_id))
        spare = live | set(keep)
        stale = [p for p in self._rows(
            "WHERE state = 'seen' AND last_seen < ? AND (online = 0 OR source = 'pairing')",
            (now - FORGET_AFTER_S,)) if p.node_id not in spare]
        for peer in stale:
            with self._lock:
                self._db.execute("DELETE FROM peers WHERE node_id = ? AND state = 'seen'",
                                 (peer.node_id,))
            peer.online = False
            self._announce(EventKind.PEER_LOST, peer, forgotten=True)
        return stale

    # -- addresses multicast does not reach ---------------------------------------------
    @db.off_loop
    def add_manual(self, address: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO manual VALUES (?, ?)", (address, time.time()))

    def manual(self) -> builtins.list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT address FROM manual ORDER BY added_at")]

"""The peers a node knows, in SQLite: seen on the network, added by address, paired, revoked.

A peer's identity is its key: ``node_id`` is the fingerprint of its public key. Names and
addresses come from mDNS TXT records or the owner, and prove nothing; a peer is trusted only
once both owners confirmed a pairing, and then by its key and certificate alone. A node that
shows up under a paired peer's name with another key is a different, unpaired node, and the
book says so (``name_clash``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from node import db
from node.errors import UnknownPeer
from node.events import EventKind, EventLog, TrustState

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
    last_seen: float
    online: bool
    paired_at: float | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def paired(self) -> bool:
        return self.state == "paired"

    def public(self, clash: str | None = None) -> dict[str, Any]:
        out = asdict(self)
        out.pop("cert_pem")
        out["url"] = self.url
        out["name_clash"] = clash
        return out


class PeerBook:
    """Every change of a peer's presence or trust is also an event (``peer.*``)."""

    def __init__(self, data_dir: Path, events: EventLog) -> None:
        self._db = db.connect(data_dir / "peers.sqlite", _SCHEMA)
        self._lock = threading.Lock()
        self.events = events

    def _announce(self, kind: EventKind, peer: Peer, trust: str | None = None) -> None:
        self.events.append(kind, {"node_id": peer.node_id, "name": peer.name,
                                  "address": f"{peer.host}:{peer.port}",
                                  "trust": trust or peer.state, "online": peer.online})

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[Peer]:
        with self._lock:
            rows = self._db.execute(f"SELECT node_id, name, host, port, state, source, "
                                    f"public_key, cert_pem, cert_sha256, catalog_version, "
                                    f"last_seen, online, paired_at FROM peers {where} "
                                    f"ORDER BY name, node_id", args).fetchall()
        return [Peer(*r[:11], bool(r[11]), r[12]) for r in rows]

    def list(self) -> list[Peer]:
        return self._rows()

    def paired(self) -> list[Peer]:
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

    def seen(self, node_id: str, name: str, host: str, port: int, source: str,
             catalog_version: int = 0) -> Peer:
        """Record a sighting (mDNS, a manual address, a pairing request). Never changes trust."""
        now = time.time()
        before = self._rows("WHERE node_id = ?", (node_id,))
        with self._lock:
            self._db.execute(
                "INSERT INTO peers (node_id, name, host, port, state, source, catalog_version, "
                "last_seen, online) VALUES (?,?,?,?, 'seen', ?, ?, ?, 1) ON CONFLICT(node_id) DO "
                "UPDATE SET name=excluded.name, host=excluded.host, port=excluded.port, "
                "catalog_version=excluded.catalog_version, last_seen=excluded.last_seen, "
                "online=1", (node_id, name[:63], host, port, source, catalog_version, now))
        peer = self.get(node_id)
        if not before or not before[0].online:
            self._announce(EventKind.PEER_FOUND, peer)
            if self.name_clash(peer):
                self._announce(EventKind.PEER_TRUST_CHANGED, peer, TrustState.KEY_CHANGED)
        elif (before[0].host, before[0].port, before[0].name) != (host, port, name[:63]):
            self._announce(EventKind.PEER_FOUND, peer)  # moved or renamed
        return peer

    def offline(self, node_id: str) -> None:
        with self._lock:
            cur = self._db.execute("UPDATE peers SET online = 0 WHERE node_id = ? AND online = 1",
                                   (node_id,))
        if cur.rowcount:
            self._announce(EventKind.PEER_LOST, self.get(node_id))

    def pair(self, node_id: str, public_key_b64: str, cert_pem: str, cert_sha256: str) -> Peer:
        with self._lock:
            self._db.execute("UPDATE peers SET state='paired', public_key=?, cert_pem=?, "
                             "cert_sha256=?, paired_at=? WHERE node_id=?",
                             (public_key_b64, cert_pem, cert_sha256, time.time(), node_id))
        peer = self.get(node_id)
        self._announce(EventKind.PEER_TRUST_CHANGED, peer, TrustState.PAIRED)
        return peer

    def revoke(self, node_id: str) -> Peer:
        self.get(node_id)
        with self._lock:
            self._db.execute("UPDATE peers SET state='revoked' WHERE node_id=?", (node_id,))
        peer = self.get(node_id)
        self._announce(EventKind.PEER_TRUST_CHANGED, peer, TrustState.REVOKED)
        return peer

    # -- pairing requests waiting for an owner (kept across restarts) --------------------
    def store_pairing(self, pairing_id: str, data: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO pairings VALUES (?, ?)", (pairing_id, data))

    def stored_pairings(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT data FROM pairings")]

    # -- addresses multicast does not reach ---------------------------------------------
    def add_manual(self, address: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO manual VALUES (?, ?)", (address, time.time()))

    def manual(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT address FROM manual ORDER BY added_at")]

"""Who a node trusts and how it proves who it is: keys, pairing, TLS pins, signed requests.

Pairing (like Bluetooth's numeric comparison), between initiator A and responder B:

1. A -> B ``hello``: A's id, name, public key, certificate and a *commitment* to a fresh nonce;
   B answers with its own id, key, certificate and nonce. A checks that the certificate B
   showed in the TLS handshake is the one B claims.
2. A -> B ``reveal``: A's nonce; B checks it against the commitment. Both now compute the same
   6-digit code from both keys and both nonces; a man in the middle cannot make the two codes
   agree except by a 1-in-a-million guess, because A committed before seeing B's nonce.
3. Each owner compares the code on both screens and confirms (``parley pair --confirm``). A
   confirmation is sent to the other side signed with the node's key. Once a side has both its
   owner's and the peer's confirmation, the peer is paired: its key authenticates requests
   and its certificate is pinned, both ways.

A pairing request waits for its owner for ``PAIRING_TTL_S`` and then expires. Requests are
kept in the peer book's database, so a node restart keeps the ones still pending, and every
change of one is an event (``pairing.*``) that the GUI's inbox follows.

Requests come from anyone, so they are bounded: at most ``MAX_PENDING_PER_ADDRESS`` from one
address and ``MAX_PENDING_IN`` in all wait at once. A new request makes room by dropping the
oldest one its owner has not confirmed (a hello never followed by its reveal first); requests
this node's owner started (direction ``out``) are not counted and never dropped. A hello left
without its reveal is dropped after ``UNREVEALED_TTL_S``, and finished requests are forgotten
after ``FINISHED_KEEP_S``.

After pairing, what mDNS or a probe says about a paired node is a hint: the node's paired name
stays, and a new address replaces the known one only once a connection pinned to the peer's
certificate reached it there (``verify_address``). Unpairing tells the peer with a signed
``POST /peer/v1/unpair``, and the peer revokes its side too; if it cannot be reached, the
unpairing holds here all the same and says the peer was not told.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.address import format_address
from node.audit import AuditLog
from node.errors import AuthError, AuthReason, PairingError, ParleyError
from node.events import EventKind, EventLog
from node.identity import (
    NodeIdentity,
    cert_public_key_raw,
    cert_sha256,
    fingerprint_of,
    pairing_code,
    pairing_commitment,
    verify_signature,
)
from node.peers import MAX_NAME_CHARS, Address, Peer, PeerBook
from node.signing import RequestVerifier, sign_request
from node.tls import PinnedSessions, add_trusted_cert, client_ssl_context, server_ssl_context
from node.wire import canonical

__all__ = ["FINISHED_KEEP_S", "MAX_FINISHED_KEPT", "MAX_PENDING_IN", "MAX_PENDING_PER_ADDRESS",
           "PAIRING_TTL_S", "Pairing", "SWEEP_EVERY_S", "Trust", "UNPAIR_NOTICE_TIMEOUT_S",
           "UNREVEALED_TTL_S", "VERIFY_RETRY_S", "VERIFY_TIMEOUT_S"]

logger = logging.getLogger(__name__)

PAIRING_TTL_S = 120.0
MAX_PENDING_IN = 32
MAX_PENDING_PER_ADDRESS = 4
UNREVEALED_TTL_S = 15.0  # the reveal follows its hello at once in an honest exchange
FINISHED_KEEP_S = 3600.0
MAX_FINISHED_KEPT = 200
VERIFY_TIMEOUT_S = 5.0
VERIFY_RETRY_S = 60.0  # an address that failed verification is not tried again sooner
UNPAIR_NOTICE_TIMEOUT_S = 5.0
SWEEP_EVERY_S = 30.0
_PAIRING_ID_RE = re.compile(r"p-[0-9a-f]{16}")
_COMMITMENT_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class Pairing:
    id: str
    direction: str  # "out" (we asked) | "in" (they asked)
    node_id: str
    name: str
    host: str
    port: int
    public_key: bytes
    cert_pem: str
    created: float = field(default_factory=time.time)
    code: str = ""
    commitment: str = ""
    my_nonce: bytes = b""
    local_confirmed: bool = False
    remote_confirmed: bool = False
    state: str = "pending"  # pending | paired | rejected | expired

    @property
    def expires(self) -> float:
        return self.created + PAIRING_TTL_S

    def public(self, my_node_id: str = "") -> dict[str, Any]:
        return {"id": self.id, "direction": self.direction, "node_id": self.node_id,
                "name": self.name, "address": format_address(self.host, self.port),
                "code": self.code,
                "peer_fingerprint": self.node_id, "my_fingerprint": my_node_id,
                "local_confirmed": self.local_confirmed,
                "remote_confirmed": self.remote_confirmed, "state": self.state,
                "created": self.created,
                "expires_in_s": max(0, round(self.expires - time.time()))}

    def stored(self) -> str:
        """This request as the peer book keeps it (nonce and key in hex)."""
        fields = {k: (v.hex() if isinstance(v, bytes) else v)
                  for k, v in self.__dict__.items()}
        return json.dumps(fields)

    @classmethod
    def from_stored(cls, text: str) -> Pairing:
        fields = json.loads(text)
        for key in ("public_key", "my_nonce"):
            fields[key] = bytes.fromhex(fields[key])
        return cls(**fields)


async def _certificate_at(host: str, port: int) -> bytes:
    """The certificate a TLS endpoint presents (no client certificate sent)."""
    _, writer = await asyncio.wait_for(asyncio.open_connection(
        host, port, ssl=client_ssl_context(None), server_hostname=None), timeout=10)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    if not der:
        raise ValueError("no certificate")
    return bytes(der)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class Trust:
    """Who is who, for one node: pairing, and the proof that a request came from a paired
    node (signatures and their replay guard, pinned TLS, moves of paired peers verified).

    The node owns the parts it works with (its identity, the peer book, the audit log, the
    HTTP sessions and the event log) and hands them in; a Trust made without them, as unit
    tests do, makes its own from ``data_dir`` and closes them with itself."""

    def __init__(self, data_dir: Path, name: str, events: EventLog | None = None, *,
                 identity: NodeIdentity | None = None, peers: PeerBook | None = None,
                 audit: AuditLog | None = None, sessions: PinnedSessions | None = None) -> None:
        self.name = name
        self.identity = identity or NodeIdentity.load_or_create(data_dir)
        self.node_id = self.identity.node_id
        self._owned: list[Any] = []  # the parts it made itself, closed with it
        self.events = events if events is not None else self._own(EventLog(data_dir))
        self.peers = peers if peers is not None else self._own(PeerBook(data_dir, self.events))
        self.audit = audit if audit is not None else self._own(AuditLog(data_dir))
        self.sessions = (sessions if sessions is not None
                         else self._own(PinnedSessions(self.identity)))
        self.verifier = RequestVerifier(node_id=self.node_id, nonce_db=data_dir / "nonces.sqlite")
        self.server_ctx = server_ssl_context(
            self.identity, [self.identity.cert_pem] + [p.cert_pem for p in self.peers.paired()])
        self.pairings: dict[str, Pairing] = {
            p.id: p for p in map(Pairing.from_stored, self.peers.stored_pairings())}
        self.peer_port = 0
        # The loop this node runs on, if it was made on one: hints about paired peers' moves
        # arrive from worker threads and are verified there.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._lock = threading.RLock()  # pairing requests: hello and expiry run in threads
        self._move_candidates: dict[str, list[Address]] = {}
        self._verifiers: dict[str, asyncio.Task[None]] = {}
        self._failed_moves: dict[tuple[str, str, int], float] = {}
        self._last_sweep = 0.0
        self.peers.on_move_hint = self._on_move_hint

    def _own(self, part: Any) -> Any:
        self._owned.append(part)
        return part

    async def close(self) -> None:
        self.peers.on_move_hint = None
        for task in list(self._verifiers.values()):
            task.cancel()
        await asyncio.gather(*self._verifiers.values(), return_exceptions=True)
        self.verifier.close()
        for part in reversed(self._owned):
            closed = part.close()
            if asyncio.iscoroutine(closed):
                await closed

    # -- who is who -----------------------------------------------------------------------
    def known_keys(self) -> dict[str, bytes]:
        keys = {p.node_id: base64.b64decode(p.public_key) for p in self.peers.paired()}
        keys[self.node_id] = self.identity.public_key_bytes
        return keys

    def pin_of(self, node_id: str) -> str:
        if node_id == self.node_id:
            return self.identity.cert_der_sha256
        peer = self.peers.get(node_id)
        if not peer.paired:
            raise AuthError(f"{peer.name} ({node_id}) is not paired with this node; pair first "
                            f"with `parley pair {peer.name}`", AuthReason.UNKNOWN_NODE)
        return peer.cert_sha256

    # -- where paired peers are ------------------------------------------------------------
    def _on_move_hint(self, node_id: str, candidates: list[Address]) -> None:
        """The peer book saw a paired peer elsewhere (any thread): verify it on the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._verify_soon, node_id, candidates)
        except RuntimeError:  # the loop closed meanwhile: the node is stopping
            pass

    def _verify_soon(self, node_id: str, candidates: list[Address]) -> None:
        now = time.monotonic()
        for key, when in list(self._failed_moves.items()):
            if now - when > VERIFY_RETRY_S:
                del self._failed_moves[key]
        fresh = [c for c in candidates if (node_id, *c) not in self._failed_moves]
        if not fresh:
            return
        self._move_candidates[node_id] = fresh
        if node_id not in self._verifiers:  # one check per peer at a time; it takes the latest
            self._start_verifier(node_id)

    def _start_verifier(self, node_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._verify_moves(node_id),
                                                      name="peer-move-check")
        self._verifiers[node_id] = task

        def done(_task: asyncio.Task[None]) -> None:
            self._verifiers.pop(node_id, None)
            if node_id in self._move_candidates and not _task.cancelled():
                self._start_verifier(node_id)  # a hint that came as it was finishing

        task.add_done_callback(done)

    async def _verify_moves(self, node_id: str) -> None:
        while node_id in self._move_candidates:
            candidates = self._move_candidates.pop(node_id)
            try:
                peer = await asyncio.to_thread(self.peers.get, node_id)
            except ParleyError:  # forgotten meanwhile: nothing to move
                return
            if not peer.paired or peer.at(candidates):
                continue
            for host, port in candidates:
                ok, why = await self.verify_address(node_id, host, port)
                if ok:
                    moved = await asyncio.to_thread(self.peers.move, node_id, host, port)
                    if moved is not None:
                        logger.info("paired peer %s proved it moved from %s:%d to %s:%d",
                                    node_id[:14], peer.host, peer.port, host, port)
                        await asyncio.to_thread(
                            self.audit.append, "pairing", event="moved", peer=node_id,
                            address=f"{host}:{port}"[:200], before=f"{peer.host}:{peer.port}")
                    break
                if len(self._failed_moves) >= 4096:  # a flood of bogus hints: forget the oldest
                    self._failed_moves.pop(next(iter(self._failed_moves)))
                self._failed_moves[(node_id, host, port)] = time.monotonic()
                logger.info("a sighting put paired peer %s at %s:%d, but nothing there proved "
                            "to be it (%s); keeping %s:%d", node_id[:14], ascii(host)[1:-1][:64],
                            port, why, peer.host, peer.port)

    async def verify_address(self, node_id: str, host: str, port: int) -> tuple[bool, str]:
        """(True, "") if the paired peer ``node_id`` answers at ``host:port`` over TLS pinned
        to its certificate; else (False, why). The handshake proves the key: a node that does
        not hold the peer's private key cannot complete it with the peer's certificate."""
        try:
            session = self.sessions.get(node_id, self.pin_of(node_id))
        except ParleyError as exc:  # not paired (any more)
            return False, exc.message
        try:
            async with asyncio.timeout(VERIFY_TIMEOUT_S):
                async with session.get(f"https://{format_address(host, port)}/peer/v1/whoami"
                                       ) as resp:
                    info = await resp.json(content_type=None)
        except aiohttp.ClientConnectorCertificateError:
            return False, "another certificate than the paired one"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return False, f"no answer ({type(exc).__name__})"
        if not isinstance(info, dict) or info.get("node_id") != node_id:
            return False, "it answered with another node id"
        return True, ""

    def signed_headers(self, method: str, url: str, body: bytes, to: str) -> dict[str, str]:
        from yarl import URL

        headers = sign_request(self.identity, method, URL(url).raw_path_qs, body, to=to)
        headers["Content-Type"] = "application/json"
        return headers

    async def authenticate(self, request: web.Request, extra_keys: dict[str, bytes] | None = None
                           ) -> str:
        """The node id of a request's signer, or AuthError (audited) for anyone else."""
        keys = {**self.known_keys(), **(extra_keys or {})}
        try:
            return await self.verifier.verify_request(request, known_keys=keys)
        except AuthError as exc:
            await asyncio.to_thread(self.audit.append, "refusal", path=request.path,
                                    reason=str(exc.reason),
                                    sender=request.headers.get("X-Parley-Node", "")[:64],
                                    remote=request.remote or "")
            raise

    def sign_proposal(self, proposal_hash: str) -> str:
        return _b64(self.identity.sign(canonical({"proposal": proposal_hash})))

    def check_signature(self, node_id: str, proposal_hash: str, signature: str) -> bool:
        key = self.known_keys().get(node_id)
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            return False
        return key is not None and verify_signature(
            key, canonical({"proposal": proposal_hash}), raw)

    def sign_result(self, job_id: str, rank: int, value: Any) -> str:
        return _b64(self.identity.sign(canonical({"job": job_id, "rank": rank, "value": value})))

    def check_result(self, node_id: str, job_id: str, rank: int, value: Any, signature: str
                     ) -> bool:
        key = self.known_keys().get(node_id)
        return key is not None and verify_signature(
            key, canonical({"job": job_id, "rank": rank, "value": value}),
            base64.b64decode(signature or ""))

    # -- pairing: initiator -------------------------------------------------------------
    async def start_pairing(self, host: str, port: int, expect: str | None = None) -> Pairing:
        """Ask the node at ``host:port`` to pair. ``expect``: the node id the owner chose (by
        name, from the peer list); another node answering there is refused before any code."""
        pairing_id = "p-" + secrets.token_hex(8)
        nonce = secrets.token_bytes(16)
        me = {"id": pairing_id, "node_id": self.node_id, "name": self.name,
              "public_key": _b64(self.identity.public_key_bytes),
              "cert_pem": self.identity.cert_pem, "port": self.peer_port,
              "commitment": pairing_commitment(self.identity.public_key_bytes, nonce)}
        base = f"https://{format_address(host, port)}/peer/v1/pairing"
        try:
            shown = await _certificate_at(host, port)
            # pinned to the certificate just seen, so the hello reaches that same endpoint
            session = self.sessions.get(None, cert_sha256(shown), with_cert=False)
            async with session.post(f"{base}/hello", json=me) as resp:
                answer = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise PairingError(f"{host}:{port} refused to pair: "
                                       f"{answer.get('detail', resp.status)}")
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise PairingError(f"could not reach {host}:{port} to pair ({type(exc).__name__}); "
                               f"check the address and that its node is running") from None
        pairing = self._peer_from(answer, host, port, pairing_id, "out")
        if expect is not None and pairing.node_id != expect:
            raise PairingError(f"another node ({pairing.node_id}) answered at {host}:{port}, "
                               f"not {expect}; it may have moved: check `parley peers`, or pair "
                               f"by address")
        if cert_sha256(shown) != cert_sha256(pairing.cert_pem):
            raise PairingError("the peer's TLS certificate is not the one it claims; not pairing")
        pairing.my_nonce = nonce
        reveal = self.sessions.get(pairing.node_id, cert_sha256(pairing.cert_pem), with_cert=False)
        async with reveal.post(f"{base}/{pairing_id}/reveal", json={"nonce": nonce.hex()}) as resp:
            if resp.status >= 400:
                raise PairingError(f"{pairing.name} refused the pairing: "
                                   f"{(await resp.json(content_type=None)).get('detail')}")
        pairing.code = pairing_code(self.identity.public_key_bytes, pairing.public_key,
                                    nonce_a=nonce, nonce_b=bytes.fromhex(answer["nonce"]))
        await asyncio.to_thread(self._requested, pairing, host, port)
        return pairing

    def _requested(self, pairing: Pairing, host: str, port: int) -> None:
        """Storage of a request this node sent (on a thread: the peer book and the audit log
        sync to disk)."""
        self.peers.seen(pairing.node_id, pairing.name, host, port, "pairing")
        self._changed(pairing, EventKind.PAIRING_REQUESTED, code=pairing.code)
        self.audit.append("pairing", event="requested", peer=pairing.node_id, name=pairing.name)

    def _peer_from(self, info: Any, host: str, port: int, pairing_id: str, direction: str
                   ) -> Pairing:
        try:
            public_key = base64.b64decode(info["public_key"], validate=True)
            if len(public_key) != 32 or fingerprint_of(public_key) != info["node_id"]:
                raise ValueError("node id is not the key's fingerprint")
            if cert_public_key_raw(info["cert_pem"]) != public_key:
                raise ValueError("certificate is not for that key")
            name = str(info["name"])[:MAX_NAME_CHARS]
        except (KeyError, TypeError, ValueError) as exc:
            raise PairingError(f"malformed pairing message: {exc}") from None
        if info["node_id"] == self.node_id:
            raise PairingError("a node cannot pair with itself")
        return Pairing(pairing_id, direction, info["node_id"], name, host, port, public_key,
                       info["cert_pem"])

    # -- pairing: responder -------------------------------------------------------------
    def hello(self, body: Any, remote: str) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or \
                not _PAIRING_ID_RE.fullmatch(body["id"]):
            raise PairingError("malformed pairing request")
        port = body.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise PairingError("a pairing request needs the sender's peer API port")
        commitment = body.get("commitment")
        if not isinstance(commitment, str) or not _COMMITMENT_RE.fullmatch(commitment):
            raise PairingError("a pairing request needs a commitment to its nonce (64 hex digits)")
        pairing = self._peer_from(body, remote, port, body["id"], "in")
        pairing.commitment = commitment
        pairing.my_nonce = secrets.token_bytes(16)
        with self._lock:
            if pairing.id in self.pairings:
                raise PairingError(f"pairing request {pairing.id} exists already; ask again")
            self._expire()
            self._make_room(remote)
            self._changed(pairing, None)  # shown once it has a code (after the reveal)
        return {"node_id": self.node_id, "name": self.name,
                "public_key": _b64(self.identity.public_key_bytes),
                "cert_pem": self.identity.cert_pem, "nonce": pairing.my_nonce.hex()}

    def _make_room(self, remote: str) -> None:
        """Room for one more request from ``remote``: drop the oldest unconfirmed ones (hellos
        without a reveal first) beyond the per-address and the overall limit."""
        waiting = sorted((p for p in self.pairings.values()
                          if p.state == "pending" and p.direction == "in"),
                         key=lambda p: (bool(p.code), p.created))
        for limit, group in ((MAX_PENDING_PER_ADDRESS, [p for p in waiting if p.host == remote]),
                             (MAX_PENDING_IN, waiting)):
            while len(group) >= limit:
                victim = next((p for p in group if not p.local_confirmed), None)
                if victim is None:
                    raise PairingError("too many pairing requests are waiting for this node's "
                                       "owner; try again once they have answered")
                self._drop(victim, "crowded out by newer requests")
                group.remove(victim)
                if victim in waiting:
                    waiting.remove(victim)

    def _drop(self, pairing: Pairing, reason: str) -> None:
        """Forget a request for good; one the owner was shown ends with an expired event."""
        pairing.state = "expired"
        if pairing.code:
            self._changed(pairing, EventKind.PAIRING_EXPIRED, reason=reason)
        self.pairings.pop(pairing.id, None)
        self.peers.delete_pairings([pairing.id])

    def reveal(self, pairing_id: str, body: Any) -> None:
        with self._lock:
            pairing = self._pending(pairing_id)
            if pairing.code:
                raise PairingError(f"pairing request {pairing_id} was revealed already")
            try:
                nonce = bytes.fromhex(body["nonce"])
            except (KeyError, TypeError, ValueError):
                raise PairingError("malformed reveal") from None
            if pairing_commitment(pairing.public_key, nonce) != pairing.commitment:
                pairing.state = "rejected"
                self._changed(pairing, EventKind.PAIRING_REJECTED, by="check")
                raise PairingError("the nonce does not match its commitment; pairing refused")
            pairing.code = pairing_code(self.identity.public_key_bytes, pairing.public_key,
                                        nonce_a=pairing.my_nonce, nonce_b=nonce)
            # Not in the peer book yet: anyone can ask, and the inbox lists the request. The
            # sender becomes a peer when this node's owner confirms it.
            self._changed(pairing, EventKind.PAIRING_REQUESTED, code=pairing.code)
        self.audit.append("pairing", event="requested", peer=pairing.node_id, name=pairing.name)

    # -- both sides ---------------------------------------------------------------------
    def _changed(self, pairing: Pairing, kind: EventKind | None, **data: Any) -> None:
        """Keep the request in the peer book and tell whoever follows the events."""
        self.pairings[pairing.id] = pairing
        self.peers.store_pairing(pairing.id, pairing.stored())
        if kind is not None:
            self.events.append(kind, {"pairing_id": pairing.id, "node_id": pairing.node_id,
                                      "name": pairing.name, "direction": pairing.direction,
                                      "state": pairing.state, **data})

    def _expire(self) -> None:
        now = time.time()
        with self._lock:
            finished = []
            for p in list(self.pairings.values()):
                if p.state == "pending" and not p.code and p.direction == "in" and \
                        now > p.created + UNREVEALED_TTL_S:
                    self._drop(p, "no reveal followed the hello")
                elif p.state == "pending" and now > p.expires:
                    p.state = "expired"
                    self._changed(p, EventKind.PAIRING_EXPIRED)
                elif p.state != "pending":
                    finished.append(p)
            finished.sort(key=lambda p: p.created, reverse=True)
            gone = [p for i, p in enumerate(finished)
                    if i >= MAX_FINISHED_KEPT or now > p.created + FINISHED_KEEP_S]
            for p in gone:
                del self.pairings[p.id]
            if gone:
                self.peers.delete_pairings(p.id for p in gone)

    def expire(self) -> None:
        """Mark requests past their time expired, and forget peers nobody has seen for a while
        (the node calls this every few seconds, in a worker thread)."""
        self._expire()
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = now
            self.sweep_peers()

    def sweep_peers(self) -> list[Peer]:
        """``PeerBook.sweep``, keeping the senders of requests still pending."""
        with self._lock:
            keep = {p.node_id for p in self.pairings.values() if p.state == "pending"}
        return self.peers.sweep(keep)

    def _pending(self, pairing_id: str) -> Pairing:
        self._expire()
        pairing = self.pairings.get(pairing_id)
        if pairing is None:
            raise PairingError(f"no pairing request {pairing_id}")
        if pairing.state != "pending":
            raise PairingError(f"pairing request {pairing_id} is {pairing.state}"
                               + ("; ask again with `parley pair`" if pairing.state == "expired"
                                  else ""))
        return pairing

    def list_pairings(self) -> list[dict[str, Any]]:
        self._expire()
        with self._lock:
            shown = sorted((p for p in self.pairings.values() if p.code), key=lambda p: p.created)
        return [p.public(self.node_id) for p in shown]

    async def confirm(self, pairing_id: str) -> Pairing:
        """The owner compared the codes: confirm locally and tell the peer, signed."""
        pairing = await asyncio.to_thread(self._pending, pairing_id)
        if not pairing.code:
            raise PairingError("this pairing has no code yet")
        url = (f"https://{format_address(pairing.host, pairing.port)}/peer/v1/pairing/"
               f"{pairing.id}/confirm")
        body = json.dumps({"code": pairing.code}).encode()
        session = self.sessions.get(pairing.node_id, cert_sha256(pairing.cert_pem), with_cert=False)
        try:
            async with session.post(url, data=body, headers=self.signed_headers(
                    "POST", url, body, pairing.node_id)) as resp:
                if resp.status >= 400:
                    detail = (await resp.json(content_type=None)).get("detail")
                    raise PairingError(f"{pairing.name} did not take the confirmation: {detail}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PairingError(f"could not reach {pairing.name} to confirm "
                               f"({type(exc).__name__})") from None
        await asyncio.to_thread(self._confirmed, pairing, "owner")
        return pairing

    async def remote_confirm(self, pairing_id: str, request: web.Request) -> None:
        pairing = await asyncio.to_thread(self._pending, pairing_id)
        sender = await self.authenticate(request, {pairing.node_id: pairing.public_key})
        if sender != pairing.node_id:
            raise PairingError("the confirmation is not from the node being paired")
        body = await request.json()
        if not isinstance(body, dict) or body.get("code") != pairing.code:
            pairing.state = "rejected"
            await asyncio.to_thread(self._changed, pairing, EventKind.PAIRING_REJECTED,
                                    by="check")
            raise PairingError("the peer computed another code: someone is in between; "
                               "pairing refused")
        await asyncio.to_thread(self._confirmed, pairing, "peer")

    def _confirmed(self, pairing: Pairing, by: str) -> None:
        """Storage of a confirmation, by this node's owner or by the peer (on a thread; the
        lock keeps the owner's and the peer's from interleaving: one of them pairs, once)."""
        with self._lock:
            if by == "owner":
                pairing.local_confirmed = True
                if pairing.direction == "in" and not pairing.remote_confirmed:
                    # the owner accepted the request, and the sender answered at its address
                    # over TLS pinned to its certificate: a peer now (paired once both
                    # confirmed)
                    self.peers.seen(pairing.node_id, pairing.name, pairing.host, pairing.port,
                                    "pairing")
            else:
                pairing.remote_confirmed = True
            self.audit.append("pairing", event="confirmed", peer=pairing.node_id, by=by)
            self._maybe_paired(pairing)
            self._changed(pairing, EventKind.PAIRING_CONFIRMED, by=by)

    def reject(self, pairing_id: str) -> Pairing:
        pairing = self._pending(pairing_id)
        pairing.state = "rejected"
        self.audit.append("pairing", event="rejected", peer=pairing.node_id, by="owner")
        self._changed(pairing, EventKind.PAIRING_REJECTED, by="owner")
        return pairing

    def _maybe_paired(self, pairing: Pairing) -> None:
        if not (pairing.local_confirmed and pairing.remote_confirmed):
            return
        # The name and address are the pairing's: the name was shown with the code, and this
        # node's confirmation reached that address over TLS pinned to the peer's certificate.
        self.peers.pair(pairing.node_id, pairing.name, pairing.host, pairing.port,
                        _b64(pairing.public_key), pairing.cert_pem,
                        cert_sha256(pairing.cert_pem))
        add_trusted_cert(self.server_ctx, pairing.cert_pem)
        pairing.state = "paired"
        self.audit.append("pairing", event="paired", peer=pairing.node_id, name=pairing.name)

    # -- unpairing: both sides ------------------------------------------------------------
    def unpair(self, name_or_id: str) -> Peer:
        """Revoke a peer here, then tell it (signed) so that it revokes this node too.

        Blocking: the admin API calls it in a worker thread, and the notice goes out on the
        node's loop. The revocation holds whether or not the peer is told; the answer's
        ``told`` and ``told_detail`` say which (a peer that was offline still lists this node
        as paired, and its requests are refused here)."""
        peer = self.peers.find(name_or_id)
        revoked = self.peers.revoke(peer.node_id)
        if peer.paired:
            told, detail = self._on_loop(self._tell_unpaired(peer),
                                         UNPAIR_NOTICE_TIMEOUT_S + 30)
        else:
            told, detail = False, "it was not paired"
        self.audit.append("pairing", event="revoked", peer=peer.node_id, by="owner",
                          peer_told=told)
        if not told:
            logger.info("unpaired %s; it was not told: %s", peer.node_id[:14], detail)
        revoked.told, revoked.told_detail = told, detail
        return revoked

    def _on_loop(self, coro: Any, timeout: float) -> Any:
        """Run ``coro`` on the node's loop from a worker thread and wait for its answer (or,
        where no loop runs, as in a script, on a loop of its own)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError("this call blocks; call it in a worker thread "
                               "(asyncio.to_thread), not on the event loop")
        loop = self._loop
        if loop is not None and loop.is_running():
            return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
        return asyncio.run(coro)

    async def _tell_unpaired(self, peer: Peer) -> tuple[bool, str]:
        """POST /peer/v1/unpair to the peer, signed, over TLS pinned to its certificate."""
        url = f"{peer.url}/peer/v1/unpair"
        body = b"{}"
        ctx = client_ssl_context(self.identity, expected_cert_sha256=peer.cert_sha256)
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=UNPAIR_NOTICE_TIMEOUT_S),
                    connector=aiohttp.TCPConnector(ssl=ctx)) as session, session.post(
                    url, data=body, headers=self.signed_headers(
                        "POST", url, body, peer.node_id)) as resp:
                if resp.status < 400:
                    return True, ""
                answer = await resp.json(content_type=None)
                detail = answer.get("detail") if isinstance(answer, dict) else None
                return False, f"it refused: {str(detail or resp.status)[:200]}"
        except aiohttp.ClientConnectorCertificateError:
            return False, "another certificate than the paired one answered at its address"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return False, f"it did not answer at {peer.host}:{peer.port} ({type(exc).__name__})"

    async def unpaired_by_peer(self, request: web.Request) -> Peer:
        """A paired peer unpaired this node and says so (signed): revoke it here too."""
        sender = await self.authenticate(request)
        return await asyncio.to_thread(self._revoke_for_peer, sender)

    def _revoke_for_peer(self, node_id: str) -> Peer:
        peer = self.peers.revoke(node_id)
        self.audit.append("pairing", event="revoked", peer=node_id, by="peer")
        return peer

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
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.audit import AuditLog
from node.errors import PairingError
from node.events import EventKind, EventLog
from node.identity import (
    AuthError,
    AuthReason,
    NodeIdentity,
    RequestVerifier,
    add_trusted_cert,
    cert_public_key_raw,
    cert_sha256,
    client_ssl_context,
    fingerprint_of,
    pairing_code,
    pairing_commitment,
    server_ssl_context,
    sign_request,
    verify_signature,
)
from node.peers import Peer, PeerBook
from node.wire import canonical

PAIRING_TTL_S = 120.0



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
                "name": self.name, "address": f"{self.host}:{self.port}", "code": self.code,
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
    """One node's identity, its peers and everything that proves a request came from one."""

    def __init__(self, data_dir: Path, name: str, events: EventLog | None = None) -> None:
        self.name = name
        self.identity = NodeIdentity.load_or_create(data_dir)
        self.node_id = self.identity.node_id
        self.events = events or EventLog(data_dir)
        self.peers = PeerBook(data_dir, self.events)
        self.audit = AuditLog(data_dir)
        self.verifier = RequestVerifier(node_id=self.node_id, nonce_db=data_dir / "nonces.sqlite")
        self.server_ctx = server_ssl_context(
            self.identity, [self.identity.cert_pem] + [p.cert_pem for p in self.peers.paired()])
        self.pairings: dict[str, Pairing] = {
            p.id: p for p in map(Pairing.from_stored, self.peers.stored_pairings())}
        self.peer_port = 0
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self.peers.close()
        self.audit.close()
        self.verifier.close()

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

    def session(self, node_id: str | None, pin: str | None, with_cert: bool = True
                ) -> aiohttp.ClientSession:
        """One client session per pinned peer (aiohttp pools connections by TLS context)."""
        key = f"{node_id}:{pin}:{with_cert}"
        if key not in self._sessions:
            ctx = client_ssl_context(self.identity if with_cert else None,
                                     expected_cert_sha256=pin)
            self._sessions[key] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15),
                connector=aiohttp.TCPConnector(ssl=ctx))
        return self._sessions[key]

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
            self.audit.append("refusal", path=request.path, reason=str(exc.reason),
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
    async def start_pairing(self, host: str, port: int) -> Pairing:
        pairing_id = "p-" + secrets.token_hex(8)
        nonce = secrets.token_bytes(16)
        me = {"id": pairing_id, "node_id": self.node_id, "name": self.name,
              "public_key": _b64(self.identity.public_key_bytes),
              "cert_pem": self.identity.cert_pem, "port": self.peer_port,
              "commitment": pairing_commitment(self.identity.public_key_bytes, nonce)}
        base = f"https://{host}:{port}/peer/v1/pairing"
        try:
            shown = await _certificate_at(host, port)
            # pinned to the certificate just seen, so the hello reaches that same endpoint
            session = self.session(None, cert_sha256(shown), with_cert=False)
            async with session.post(f"{base}/hello", json=me) as resp:
                answer = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise PairingError(f"{host}:{port} refused to pair: "
                                       f"{answer.get('detail', resp.status)}")
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise PairingError(f"could not reach {host}:{port} to pair ({type(exc).__name__}); "
                               f"check the address and that its node is running") from None
        pairing = self._peer_from(answer, host, port, pairing_id, "out")
        if cert_sha256(shown) != cert_sha256(pairing.cert_pem):
            raise PairingError("the peer's TLS certificate is not the one it claims; not pairing")
        pairing.my_nonce = nonce
        reveal = self.session(pairing.node_id, cert_sha256(pairing.cert_pem), with_cert=False)
        async with reveal.post(f"{base}/{pairing_id}/reveal", json={"nonce": nonce.hex()}) as resp:
            if resp.status >= 400:
                raise PairingError(f"{pairing.name} refused the pairing: "
                                   f"{(await resp.json(content_type=None)).get('detail')}")
        pairing.code = pairing_code(self.identity.public_key_bytes, pairing.public_key,
                                    nonce_a=nonce, nonce_b=bytes.fromhex(answer["nonce"]))
        self.peers.seen(pairing.node_id, pairing.name, host, port, "pairing")
        self._changed(pairing, EventKind.PAIRING_REQUESTED, code=pairing.code)
        self.audit.append("pairing", event="requested", peer=pairing.node_id, name=pairing.name)
        return pairing

    def _peer_from(self, info: Any, host: str, port: int, pairing_id: str, direction: str
                   ) -> Pairing:
        try:
            public_key = base64.b64decode(info["public_key"], validate=True)
            if len(public_key) != 32 or fingerprint_of(public_key) != info["node_id"]:
                raise ValueError("node id is not the key's fingerprint")
            if cert_public_key_raw(info["cert_pem"]) != public_key:
                raise ValueError("certificate is not for that key")
            name = str(info["name"])[:63]
        except (KeyError, TypeError, ValueError) as exc:
            raise PairingError(f"malformed pairing message: {exc}") from None
        if info["node_id"] == self.node_id:
            raise PairingError("a node cannot pair with itself")
        return Pairing(pairing_id, direction, info["node_id"], name, host, port, public_key,
                       info["cert_pem"])

    # -- pairing: responder -------------------------------------------------------------
    def hello(self, body: Any, remote: str) -> dict[str, Any]:
        if not isinstance(body, dict) or not str(body.get("id", "")).startswith("p-"):
            raise PairingError("malformed pairing request")
        port = body.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise PairingError("a pairing request needs the sender's peer API port")
        self._expire()
        if len([p for p in self.pairings.values() if p.state == "pending"]) > 16:
            raise PairingError("too many pending pairing requests; try again later")
        pairing = self._peer_from(body, remote, port, body["id"], "in")
        pairing.commitment = str(body.get("commitment", ""))
        pairing.my_nonce = secrets.token_bytes(16)
        self._changed(pairing, None)  # shown once it has a code (after the reveal)
        return {"node_id": self.node_id, "name": self.name,
                "public_key": _b64(self.identity.public_key_bytes),
                "cert_pem": self.identity.cert_pem, "nonce": pairing.my_nonce.hex()}

    def reveal(self, pairing_id: str, body: Any) -> None:
        pairing = self._pending(pairing_id)
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
        self.peers.seen(pairing.node_id, pairing.name, pairing.host, pairing.port, "pairing")
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
        for p in list(self.pairings.values()):
            if p.state == "pending" and now > p.expires:
                p.state = "expired"
                self._changed(p, EventKind.PAIRING_EXPIRED)

    def expire(self) -> None:
        """Mark requests past their time expired (the node calls this every few seconds)."""
        self._expire()

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
        return [p.public(self.node_id) for p in sorted(self.pairings.values(),
                                                        key=lambda p: p.created) if p.code]

    async def confirm(self, pairing_id: str) -> Pairing:
        """The owner compared the codes: confirm locally and tell the peer, signed."""
        pairing = self._pending(pairing_id)
        if not pairing.code:
            raise PairingError("this pairing has no code yet")
        url = f"https://{pairing.host}:{pairing.port}/peer/v1/pairing/{pairing.id}/confirm"
        body = json.dumps({"code": pairing.code}).encode()
        session = self.session(pairing.node_id, cert_sha256(pairing.cert_pem), with_cert=False)
        try:
            async with session.post(url, data=body, headers=self.signed_headers(
                    "POST", url, body, pairing.node_id)) as resp:
                if resp.status >= 400:
                    detail = (await resp.json(content_type=None)).get("detail")
                    raise PairingError(f"{pairing.name} did not take the confirmation: {detail}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PairingError(f"could not reach {pairing.name} to confirm "
                               f"({type(exc).__name__})") from None
        pairing.local_confirmed = True
        self.audit.append("pairing", event="confirmed", peer=pairing.node_id, by="owner")
        self._maybe_paired(pairing)
        self._changed(pairing, EventKind.PAIRING_CONFIRMED, by="owner")
        return pairing

    async def remote_confirm(self, pairing_id: str, request: web.Request) -> None:
        pairing = self._pending(pairing_id)
        sender = await self.authenticate(request, {pairing.node_id: pairing.public_key})
        if sender != pairing.node_id:
            raise PairingError("the confirmation is not from the node being paired")
        body = await request.json()
        if not isinstance(body, dict) or body.get("code") != pairing.code:
            pairing.state = "rejected"
            self._changed(pairing, EventKind.PAIRING_REJECTED, by="check")
            raise PairingError("the peer computed another code: someone is in between; "
                               "pairing refused")
        pairing.remote_confirmed = True
        self.audit.append("pairing", event="confirmed", peer=pairing.node_id, by="peer")
        self._maybe_paired(pairing)
        self._changed(pairing, EventKind.PAIRING_CONFIRMED, by="peer")

    def reject(self, pairing_id: str) -> Pairing:
        pairing = self._pending(pairing_id)
        pairing.state = "rejected"
        self.audit.append("pairing", event="rejected", peer=pairing.node_id, by="owner")
        self._changed(pairing, EventKind.PAIRING_REJECTED, by="owner")
        return pairing

    def _maybe_paired(self, pairing: Pairing) -> None:
        if not (pairing.local_confirmed and pairing.remote_confirmed):
            return
        self.peers.seen(pairing.node_id, pairing.name, pairing.host, pairing.port, "pairing")
        self.peers.pair(pairing.node_id, _b64(pairing.public_key), pairing.cert_pem,
                        cert_sha256(pairing.cert_pem))
        add_trusted_cert(self.server_ctx, pairing.cert_pem)
        pairing.state = "paired"
        self.audit.append("pairing", event="paired", peer=pairing.node_id, name=pairing.name)

    def unpair(self, name_or_id: str) -> Peer:
        peer = self.peers.revoke(self.peers.find(name_or_id).node_id)
        self.audit.append("pairing", event="revoked", peer=peer.node_id, by="owner")
        return peer

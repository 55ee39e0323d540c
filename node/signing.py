"""Signed peer requests: ``sign_request`` adds the ``X-Parley-*`` headers, ``RequestVerifier``
checks them.

The signature covers the method, raw path and query, the body's sha256, the time, a random
nonce, the sender and (optionally) the recipient, as canonical JSON, made with the node's key
(node/identity.py).

Replay protection. A request is accepted only within ``window_s`` (60 s) of the verifier's
clock and only once: its nonce is remembered until the request would have expired anyway.
The remembered nonces live in a small SQLite table when the verifier is given a path (what a
node does: ``<data dir>/nonces.sqlite``), so a restart inside the window does not forget them.
Without a path they live in memory, and the verifier then also refuses any request signed
before it was created (at one-second resolution), so that a request already spent on the
previous process cannot be spent again on this one. Refusals are ``AuthError`` with a stable
``AuthReason``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from node.db import connect
from node.errors import AuthError, AuthReason
from node.identity import (
    _NODE_ID_RE,
    NodeIdentity,
    cert_public_key_raw,
    fingerprint_of,
    verify_signature,
)
from node.tls import peer_cert_der
from node.wire import canonical

__all__ = ["DEFAULT_WINDOW_S", "HEADER_KEY", "HEADER_NODE", "HEADER_NONCE", "HEADER_SIGNATURE",
           "HEADER_TIME", "HEADER_TO", "NONCE_DB_FILE", "RequestVerifier", "sign_request"]

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)

NONCE_DB_FILE = "nonces.sqlite"
DEFAULT_WINDOW_S = 60.0
HEADER_NODE = "X-Parley-Node"
HEADER_KEY = "X-Parley-Key"
HEADER_TIME = "X-Parley-Time"
HEADER_NONCE = "X-Parley-Nonce"
HEADER_SIGNATURE = "X-Parley-Signature"
HEADER_TO = "X-Parley-To"
_REQUIRED_HEADERS = (HEADER_NODE, HEADER_KEY, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_TIME_RE = re.compile(r"[0-9]{1,12}")


def _signed_bytes(method: str, path: str, body_sha256: str, time_s: str, nonce: str,
                  node: str, to: str) -> bytes:
    return canonical({"method": method.upper(), "path": path, "body_sha256": body_sha256,
                      "time": time_s, "nonce": nonce, "node": node, "to": to})


def sign_request(identity: NodeIdentity, method: str, path: str, body: bytes = b"",
                 now: float | None = None, nonce: str | None = None, *,
                 to: str | None = None) -> dict[str, str]:
    """Headers that let a peer check who sent this request, that it is intact and fresh.

    ``path`` is the path and query exactly as sent on the wire (the server compares it with
    ``request.raw_path``): ``yarl.URL(url).raw_path_qs``. ``to`` is the recipient's node id;
    give it whenever it is known, so that a peer cannot replay the request to another node.
    """
    time_s = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16) if nonce is None else nonce
    signed = _signed_bytes(method, path, hashlib.sha256(body).hexdigest(), time_s, nonce,
                           identity.node_id, to or "")
    headers = {
        HEADER_NODE: identity.node_id,
        HEADER_KEY: base64.b64encode(identity.public_key_bytes).decode("ascii"),
        HEADER_TIME: time_s,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(identity.sign(signed)).decode("ascii"),
    }
    if to:
        headers[HEADER_TO] = to
    return headers


class RequestVerifier:
    """Checks ``sign_request`` headers; one per node, shared by all handlers (thread-safe).

    ``node_id``: this node's id; a request signed for another recipient is refused.
    ``nonce_db``: where spent nonces are kept across restarts (see the module docstring); None
    keeps them in memory and refuses requests signed before this verifier was made.
    """

    def __init__(self, *, node_id: str | None = None, nonce_db: Path | None = None,
                 window_s: float = DEFAULT_WINDOW_S, max_nonces: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.node_id = node_id
        self.window_s = window_s
        self.max_nonces = max_nonces
        self._clock = clock
        self._lock = threading.Lock()
        self._not_before = None if nonce_db is not None else math.floor(clock())
        self._db = connect(None if nonce_db is None else Path(nonce_db), (
            "CREATE TABLE IF NOT EXISTS nonces (node TEXT NOT NULL, nonce TEXT NOT NULL, "
            "expires REAL NOT NULL, PRIMARY KEY (node, nonce));"
            "CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)"), durable=False)
        with self._lock:
            self._count = self._prune()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def verify(self, method: str, path: str, body: bytes, headers: Mapping[str, str], *,
               known_keys: Mapping[str, bytes] | None = None,
               peer_cert_der: bytes | None = None) -> str:
        """The sender's node id, or ``AuthError`` saying why the request is refused.

        ``known_keys`` (node id -> raw public key): the paired peers; anyone else is refused.
        Leave it None only where strangers are welcome (the pairing request).
        ``peer_cert_der``: the TLS client certificate, if one was sent; its key must be the
        signer's, so a verified TLS peer cannot pass on another node's signed request.
        """
        fields = self._headers(headers)
        node = fields[HEADER_NODE]
        if not _NODE_ID_RE.fullmatch(node):
            raise AuthError(f"{HEADER_NODE} {node[:40]!r} is not a node id", AuthReason.MALFORMED)
        key = _b64(fields[HEADER_KEY], 32, HEADER_KEY)
        signature = _b64(fields[HEADER_SIGNATURE], 64, HEADER_SIGNATURE)
        time_s, nonce = fields[HEADER_TIME], fields[HEADER_NONCE]
        if not _TIME_RE.fullmatch(time_s):
            raise AuthError(f"{HEADER_TIME} must be unix seconds, not {time_s[:20]!r}",
                            AuthReason.MALFORMED)
        if not _NONCE_RE.fullmatch(nonce):
            raise AuthError(f"{HEADER_NONCE} must be 32 lowercase hex digits",
                            AuthReason.MALFORMED)
        if fingerprint_of(key) != node:
            raise AuthError(f"the key sent is not the key of node {node}: the node id is the "
                            "fingerprint of its public key", AuthReason.KEY_MISMATCH)
        if known_keys is not None:
            if node not in known_keys:
                raise AuthError(f"node {node} is not paired with this node; pair first",
                                AuthReason.UNKNOWN_NODE)
            if not hmac.compare_digest(known_keys[node], key):
                raise AuthError(f"node {node} signed with a key other than the paired one",
                                AuthReason.KEY_MISMATCH)
        if peer_cert_der is not None and cert_public_key_raw(peer_cert_der) != key:
            raise AuthError(f"the request is signed by {node} but the TLS client certificate "
                            "is another node's", AuthReason.CERT_MISMATCH)
        to = fields.get(HEADER_TO, "")
        signed = _signed_bytes(method, path, hashlib.sha256(body).hexdigest(), time_s, nonce,
                               node, to)
        if not verify_signature(key, signed, signature):
            raise AuthError(f"the signature of this request does not verify for node {node}: "
                            "it was altered or not signed by that node", AuthReason.FORGED)
        if to and self.node_id is not None and to != self.node_id:
            raise AuthError(f"the request was signed for node {to[:40]}, not this node "
                            f"({self.node_id})", AuthReason.WRONG_RECIPIENT)
        sent = int(time_s)
        now = self._clock()
        if sent < now - self.window_s:
            raise AuthError(f"the request was signed {now - sent:.0f} s ago, more than the "
                            f"{self.window_s:.0f} s allowed; check both clocks and send it again",
                            AuthReason.EXPIRED)
        if sent > now + self.window_s:
            raise AuthError(f"the request is dated {sent - now:.0f} s in the future, more than "
                            f"the {self.window_s:.0f} s allowed; the sender's clock is wrong",
                            AuthReason.FUTURE)
        if self._not_before is not None and sent < self._not_before:
            raise AuthError("the request was signed before this node started; sign it again",
                            AuthReason.EXPIRED)
        self._spend(node, nonce, sent + self.window_s)
        return node

    async def verify_request(self, request: web.BaseRequest, *,
                             known_keys: Mapping[str, bytes] | None = None) -> str:
        """``verify`` for an aiohttp request: raw path and query, body, TLS client cert."""
        body = await request.read()
        return self.verify(request.method, request.raw_path, body, request.headers,
                           known_keys=known_keys, peer_cert_der=peer_cert_der(request))

    @staticmethod
    def _headers(headers: Mapping[str, str]) -> dict[str, str]:
        wanted = {h.lower(): h for h in (*_REQUIRED_HEADERS, HEADER_TO)}
        found: dict[str, str] = {}
        for name, value in headers.items():
            canonical_name = wanted.get(name.lower())
            if canonical_name is None:
                continue
            if canonical_name in found:
                raise AuthError(f"{canonical_name} appears more than once",
                                AuthReason.MALFORMED)
            found[canonical_name] = value.strip()
        missing = [h for h in _REQUIRED_HEADERS if h not in found]
        if missing:
            raise AuthError(f"the request is not signed (missing {', '.join(missing)}); peers "
                            "must sign every request with their node key", AuthReason.UNSIGNED)
        return found

    def _spend(self, node: str, nonce: str, expires: float) -> None:
        with self._lock:
            if self._count >= self.max_nonces:
                self._count = self._prune()
                if self._count >= self.max_nonces:
                    raise AuthError("too many signed requests in the last minute; try again "
                                    "shortly", AuthReason.BUSY)
            try:
                self._db.execute("INSERT INTO nonces (node, nonce, expires) VALUES (?, ?, ?)",
                                 (node, nonce, expires))
            except sqlite3.IntegrityError:
                raise AuthError(f"this request from {node} was already received once (nonce "
                                f"{nonce[:8]}...); a replayed request is refused",
                                AuthReason.REPLAYED) from None
            self._count += 1
            if self._count % 1024 == 0:
                self._count = self._prune()

    def _prune(self) -> int:
        self._db.execute("DELETE FROM nonces WHERE expires < ?", (self._clock(),))
        return int(self._db.execute("SELECT count(*) FROM nonces").fetchone()[0])


def _b64(value: str, length: int, header: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise AuthError(f"{header} must be {length} bytes in base64", AuthReason.MALFORMED)
    return raw

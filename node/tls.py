"""TLS between nodes: no certificate authority, no host names; each node pins the certificate
it learnt at pairing.

Every node presents its certificate (node/identity.py); a client pins the certificate's sha256
that it learnt at pairing. The server requests a client certificate but does not require one
(``CERT_OPTIONAL``): a node that is not paired yet must still reach the pairing endpoint, and it
must then connect *without* a certificate, because a certificate the server does not trust fails
the handshake (the client sees a connection reset, not an error message). The application still
decides, request by request, what a caller may do: TLS trust anchors cannot be removed from a
live context, and each peer's certificate is a CA (pathlen 0) that could sign other leaves, so
the verified client certificate's hash or key must be compared with the paired peer's, which
``RequestVerifier.verify_request`` (node/signing.py) does by binding the request's signing key
to the client certificate. A wrong certificate raises ``PinMismatch`` inside the handshake.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp

from node.errors import PinMismatch
from node.identity import NodeIdentity

__all__ = ["PinnedSessions", "add_trusted_cert", "client_ssl_context", "peer_cert_der",
           "peer_cert_sha256", "pinned_fingerprint", "server_ssl_context"]

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)


_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")

# --- TLS -------------------------------------------------------------------------------------


def server_ssl_context(identity: NodeIdentity,
                       trusted_peer_certs_pem: Iterable[str] = ()) -> ssl.SSLContext:
    """The peer API's TLS: 1.3 only, our certificate, client certificates optional.

    A client certificate, when sent, must be one of ``trusted_peer_certs_pem`` (the paired
    peers) or the handshake fails; a client that sends none gets through, and the handler sees
    ``peer_cert_sha256(request) is None``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    for pem in trusted_peer_certs_pem:
        add_trusted_cert(ctx, pem)
    return ctx


def add_trusted_cert(ctx: ssl.SSLContext, pem: str) -> None:
    """Trust a newly paired peer's certificate from the next handshake on, without a restart.

    There is no way to take one out again: after unpairing, the handlers' own check (the
    request's signer against the paired set) is what refuses the peer, until the next restart
    builds a context without it.
    """
    ctx.load_verify_locations(cadata=pem)


class _PinnedSSLObject(ssl.SSLObject):
    """Checks the server certificate's sha256 as the last step of the client's handshake.

    asyncio drives handshakes through ``SSLContext.sslobject_class``; an ``SSLError`` from
    ``do_handshake`` aborts the connection before the first byte of the request is written.
    """

    def do_handshake(self) -> None:
        super().do_handshake()
        expected = getattr(self.context, "expected_cert_sha256", None)
        if expected is None:
            return
        der = self.getpeercert(binary_form=True)
        got = hashlib.sha256(der).hexdigest() if der else ""
        if not hmac.compare_digest(got, expected):
            raise PinMismatch(
                f"the peer at {self.server_hostname or 'this address'} presented a certificate "
                f"with sha256 {got[:16] or 'none'}..., not the paired {expected[:16]}...: it is "
                "not the node you paired with (or it was reinstalled); pair again if you trust it")


class _PinnedClientContext(ssl.SSLContext):
    expected_cert_sha256: str | None = None
    sslobject_class = _PinnedSSLObject


def client_ssl_context(identity: NodeIdentity | None, *,
                       expected_cert_sha256: str | None = None) -> ssl.SSLContext:
    """A client context for the peer API: TLS 1.3, our certificate, the peer pinned.

    ``identity=None`` connects without a client certificate: what an unpaired node must do to
    send a pairing request (a certificate the server does not trust fails the handshake).
    With ``expected_cert_sha256`` the handshake fails with ``PinMismatch`` unless the server's
    certificate has that sha256, before any request byte is sent. aiohttp keys pooled
    connections by context, so make one context per peer and keep it.

    Why not ``ssl=aiohttp.Fingerprint(...)``: with a Fingerprint aiohttp uses its own shared
    unverified context, which carries no client certificate. ``pinned_fingerprint`` is right
    only for requests that need no client certificate.
    """
    ctx = _PinnedClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # peers are pinned, not named
    ctx.verify_mode = ssl.CERT_NONE  # the pin check in the handshake replaces chain checks
    if identity is not None:
        ctx.load_cert_chain(identity.cert_path, identity.key_path)
    if expected_cert_sha256 is not None:
        ctx.expected_cert_sha256 = _normalise_sha256(expected_cert_sha256)
    return ctx


class PinnedSessions:
    """The node's HTTP client sessions to other nodes: one per pinned peer certificate
    (aiohttp pools connections by TLS context), kept for the node's life and closed with it."""

    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def get(self, node_id: str | None, pin: str | None, with_cert: bool = True
            ) -> aiohttp.ClientSession:
        """The session for ``node_id`` whose server certificate must have sha256 ``pin``
        (None: any); ``with_cert=False`` presents no client certificate (pairing)."""
        key = f"{node_id}:{pin}:{with_cert}"
        if key not in self._sessions:
            ctx = client_ssl_context(self.identity if with_cert else None,
                                     expected_cert_sha256=pin)
            self._sessions[key] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15),
                connector=aiohttp.TCPConnector(ssl=ctx))
        return self._sessions[key]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def pinned_fingerprint(expected_cert_sha256_hex: str) -> aiohttp.Fingerprint:
    """``ssl=`` for aiohttp requests that present no client certificate (pairing)."""
    return aiohttp.Fingerprint(bytes.fromhex(_normalise_sha256(expected_cert_sha256_hex)))


def _normalise_sha256(value: str) -> str:
    hex_digest = value.replace(":", "").strip().lower()
    if not _SHA256_HEX_RE.fullmatch(hex_digest):
        raise ValueError(f"a certificate pin is a sha256 in hex (64 digits), not {value!r}")
    return hex_digest


def peer_cert_der(request: web.BaseRequest) -> bytes | None:
    """The verified TLS client certificate of ``request`` (DER), or None if none was sent."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der or None


def peer_cert_sha256(request: web.BaseRequest) -> str | None:
    """Hex sha256 of the request's TLS client certificate, or None if none was sent."""
    der = peer_cert_der(request)
    return hashlib.sha256(der).hexdigest() if der else None

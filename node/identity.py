"""Who a node is, and how nodes prove it to each other.

A node is its Ed25519 key pair, made on first start and kept in ``<data dir>/identity``. The
same key signs peer-API requests and stands behind the node's self-signed TLS certificate
(``<data dir>/tls.pem``), so one fingerprint names the node everywhere:

* **node id**: ``"n-"`` + the first 26 characters of the lowercase, unpadded base32 of
  sha256(raw 32-byte public key). 26 characters carry 130 bits: finding another key with the
  same id (a second preimage) costs about 2**130 hashes, far beyond reach, while the id stays
  short enough for logs and mDNS TXT records (255 bytes each).
* **TLS**: every node presents its certificate; a client pins the certificate's sha256 that it
  learnt at pairing, so no certificate authority and no hostname is involved. The server
  requests a client certificate but does not require one (``CERT_OPTIONAL``): a node that is not
  paired yet must still reach the pairing endpoint, and it must then connect *without* a
  certificate, because a certificate the server does not trust fails the handshake (the client
  sees a connection reset, not an error message). The application still decides, request by
  request, what a caller may do: TLS trust anchors cannot be removed from a live context, and
  each peer's certificate is a CA (pathlen 0) that could sign other leaves, so the verified
  client certificate's hash or key must be compared with the paired peer's, which
  ``RequestVerifier.verify_request`` does by binding the request's signing key to the client
  certificate.
* **signed requests**: ``sign_request`` adds the ``X-Parley-*`` headers, ``RequestVerifier``
  checks them. The signature covers the method, raw path and query, the body's sha256, the
  time, a random nonce, the sender and (optionally) the recipient, as canonical JSON.

Replay protection. A request is accepted only within ``window_s`` (60 s) of the verifier's
clock and only once: its nonce is remembered until the request would have expired anyway.
The remembered nonces live in a small SQLite table when the verifier is given a path (what a
node does: ``<data dir>/nonces.sqlite``), so a restart inside the window does not forget them.
Without a path they live in memory, and the verifier then also refuses any request signed
before it was created (at one-second resolution), so that a request already spent on the
previous process cannot be spent again on this one.

Errors (all ``ParleyError``)::

    ParleyError
    +-- IdentityError       the key file is unreadable, not Ed25519, or readable by others
    +-- AuthError           a peer request that is not (validly) signed; ``reason`` is stable
    +-- PinMismatch         the peer's TLS certificate is not the one paired (also an
                            ``ssl.SSLCertVerificationError``, so asyncio aborts the handshake)
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import secrets
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.db import connect
from node.errors import AuthError, AuthReason, IdentityError, PinMismatch
from node.files import write_atomic
from node.wire import canonical

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity"
CERT_FILE = "tls.pem"
NONCE_DB_FILE = "nonces.sqlite"
NODE_ID_PREFIX = "n-"
NODE_ID_LENGTH = 26  # base32 characters after the prefix: 130 bits
TLS_DNS_NAME = "parley-node"
DEFAULT_WINDOW_S = 60.0

HEADER_NODE = "X-Parley-Node"
HEADER_KEY = "X-Parley-Key"
HEADER_TIME = "X-Parley-Time"
HEADER_NONCE = "X-Parley-Nonce"
HEADER_SIGNATURE = "X-Parley-Signature"
HEADER_TO = "X-Parley-To"
_REQUIRED_HEADERS = (HEADER_NODE, HEADER_KEY, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)

_NODE_ID_RE = re.compile(rf"{NODE_ID_PREFIX}[a-z2-7]{{{NODE_ID_LENGTH}}}")
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_TIME_RE = re.compile(r"[0-9]{1,12}")
_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")


# --- keys and fingerprints -------------------------------------------------------------------


def fingerprint_of(public_key_raw: bytes) -> str:
    """The node id that a raw 32-byte Ed25519 public key names."""
    if len(public_key_raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key_raw)}")
    b32 = base64.b32encode(hashlib.sha256(public_key_raw).digest()).decode("ascii")
    return NODE_ID_PREFIX + b32.lower().rstrip("=")[:NODE_ID_LENGTH]


def verify_signature(public_key_raw: bytes, data: bytes, signature: bytes) -> bool:
    """True if ``signature`` is the Ed25519 signature of ``data`` by that key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def cert_sha256(cert: str | bytes) -> str:
    """Hex sha256 of a certificate's DER encoding (what peers pin); PEM text or DER bytes."""
    return hashlib.sha256(_cert_der(cert)).hexdigest()


def cert_public_key_raw(cert: str | bytes) -> bytes:
    """The raw Ed25519 public key inside a certificate (PEM text or DER bytes)."""
    try:
        parsed = x509.load_der_x509_certificate(_cert_der(cert))
        key = parsed.public_key()
    except ValueError as exc:
        raise AuthError(f"the certificate cannot be read ({exc})", AuthReason.MALFORMED) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuthError("the certificate's key is not Ed25519; Parley nodes use Ed25519 keys",
                        AuthReason.MALFORMED)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _cert_der(cert: str | bytes) -> bytes:
    if isinstance(cert, str):
        try:
            return x509.load_pem_x509_certificate(cert.encode("ascii")).public_bytes(
                serialization.Encoding.DER)
        except ValueError as exc:
            raise AuthError(f"the certificate cannot be read ({exc})",
                            AuthReason.MALFORMED) from exc
    return cert


class NodeIdentity:
    """This node's key pair and TLS certificate. Never logged or printed beyond the node id."""

    fingerprint_of = staticmethod(fingerprint_of)
    verify = staticmethod(verify_signature)

    def __init__(self, private_key: Ed25519PrivateKey, certificate: x509.Certificate,
                 key_path: Path, cert_path: Path) -> None:
        self._private_key = private_key
        self._certificate = certificate
        self.key_path = key_path
        self.cert_path = cert_path
        self.public_key_bytes: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.node_id: str = fingerprint_of(self.public_key_bytes)
        self.cert_der: bytes = certificate.public_bytes(serialization.Encoding.DER)
        self.cert_pem: str = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        self.cert_der_sha256: str = hashlib.sha256(self.cert_der).hexdigest()

    def __repr__(self) -> str:
        return f"NodeIdentity({self.node_id})"

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        """This node's identity, made on the first start and the same on every later one."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = data_dir / IDENTITY_FILE
        if not key_path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            if write_atomic(key_path, pem, 0o600, exclusive=True):
                logger.info("made a new node identity %s in %s",
                            fingerprint_of(key.public_key().public_bytes(
                                serialization.Encoding.Raw, serialization.PublicFormat.Raw)),
                            data_dir)
            # else another process made it first: load theirs, so both agree
        key = _load_private_key(key_path)
        cert_path = data_dir / CERT_FILE
        certificate = _load_matching_cert(cert_path, key)
        if certificate is None:
            certificate = _make_certificate(key)
            write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o600)
        return cls(key, certificate, key_path, cert_path)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes) of ``data`` by this node."""
        return self._private_key.sign(data)


def _load_private_key(key_path: Path) -> Ed25519PrivateKey:
    try:
        fd = os.open(key_path, os.O_RDONLY)
    except OSError as exc:
        raise IdentityError(f"cannot read the node key {key_path}: {exc.strerror}; check the "
                            "data directory's owner and permissions") from exc
    with os.fdopen(fd, "rb") as f:
        if os.name == "posix":
            st = os.fstat(f.fileno())
            if st.st_mode & 0o077:
                raise IdentityError(
                    f"{key_path} has permissions {st.st_mode & 0o777:04o}: the node's private "
                    f"key must be readable by its owner only. If nobody else could have read "
                    f"it, run `chmod 600 {key_path}`; otherwise delete it to make a new "
                    f"identity and pair again")
            if st.st_uid != os.geteuid():
                raise IdentityError(
                    f"{key_path} belongs to user id {st.st_uid}, not to the user running the "
                    f"node ({os.geteuid()}); run the node as that user or chown the file")
        data = f.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_path} is not a readable unencrypted PEM private key "
                            f"({exc}); restore it from a backup or delete it to make a new "
                            f"identity and pair again") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{key_path} holds a {type(key).__name__}, not an Ed25519 key; "
                            "delete it to make a new identity and pair again")
    return key


def _load_matching_cert(cert_path: Path, key: Ed25519PrivateKey) -> x509.Certificate | None:
    """The stored certificate if it is for ``key``; None means make a new one."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("%s is not a readable certificate; making a new one (peers that pinned "
                       "the old one must pair again)", cert_path)
        return None
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    cert_key = cert.public_key()
    if not isinstance(cert_key, Ed25519PublicKey) or cert_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw) != raw:
        logger.warning("%s is for another key; making a new certificate (peers that pinned the "
                       "old one must pair again)", cert_path)
        return None
    return cert


def _make_certificate(key: Ed25519PrivateKey) -> x509.Certificate:
    """Self-signed, CA:TRUE so that peers can load it as its own trust anchor, no expiry.

    99991231235959Z is RFC 5280's "no well-defined expiration date": pins, not dates, are what
    make a node's certificate trusted, and a certificate that expired would break pairings.
    """
    public = key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fingerprint_of(raw))])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate peers' slow clocks
        .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59,
                                           tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(TLS_DNS_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, algorithm=None)  # Ed25519 hashes internally
    )


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


# --- signed requests -------------------------------------------------------------------------


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


# --- pairing ---------------------------------------------------------------------------------


def pairing_code(pub_a_raw: bytes, pub_b_raw: bytes, *, nonce_a: bytes = b"",
                 nonce_b: bytes = b"", digits: int = 6) -> str:
    """The short code both owners read out and compare; the same whichever side computes it.

    From the two public keys alone, a 6-digit code is only about 20 bits: an attacker in the
    middle who knows both keys in advance (they are long-lived and announced on the network)
    can grind keys of its own offline until the codes on both sides agree. Pairing should
    therefore mix in a fresh random nonce from each side, the initiator committing to its nonce
    (``pairing_commitment``) before it sees the other's and revealing it after; then each
    attempt to cheat succeeds with probability 10**-digits and fails visibly otherwise.
    """
    if len(pub_a_raw) != 32 or len(pub_b_raw) != 32:
        raise ValueError("pairing codes are computed from raw 32-byte Ed25519 public keys")
    if not 4 <= digits <= 12:
        raise ValueError("a pairing code has 4 to 12 digits")
    h = hashlib.sha256(b"parley-pairing-v1")
    for key, nonce in sorted([(pub_a_raw, nonce_a), (pub_b_raw, nonce_b)]):
        for part in (key, nonce):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
    number = int.from_bytes(h.digest()[:8], "big") % 10**digits
    return f"{number:0{digits}d}"


def pairing_commitment(public_key_raw: bytes, nonce: bytes) -> str:
    """Hex commitment to a pairing nonce, sent before the nonce itself (see ``pairing_code``)."""
    return hashlib.sha256(b"parley-pairing-commit-v1" + public_key_raw + nonce).hexdigest()

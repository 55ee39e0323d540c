"""Who a node is: its key pair, its node id, its certificate, and the pairing codes.

A node is its Ed25519 key pair, made on first start and kept in ``<data dir>/identity``. The
same key signs peer-API requests (node/signing.py) and stands behind the node's self-signed TLS
certificate (``<data dir>/tls.pem``; node/tls.py pins it), so one fingerprint names the node
everywhere:

* **node id**: ``"n-"`` + the first 26 characters of the lowercase, unpadded base32 of
  sha256(raw 32-byte public key). 26 characters carry 130 bits: finding another key with the
  same id (a second preimage) costs about 2**130 hashes, far beyond reach, while the id stays
  short enough for logs and mDNS TXT records (255 bytes each).
* **pairing codes**: the short code both owners read out, from both keys and nonces.

Errors: ``IdentityError`` (node/errors.py) for a key file that is unreadable, not Ed25519, or
readable by others.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.errors import AuthError, AuthReason, IdentityError
from node.files import write_atomic

__all__ = ["CERT_FILE", "IDENTITY_FILE", "NODE_ID_LENGTH", "NODE_ID_PREFIX", "NodeIdentity",
           "TLS_DNS_NAME", "cert_public_key_raw", "cert_sha256", "fingerprint_of", "pairing_code",
           "pairing_commitment", "verify_signature"]

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


IDENTITY_FILE = "identity"
CERT_FILE = "tls.pem"
NODE_ID_PREFIX = "n-"
NODE_ID_LENGTH = 26  # base32 characters after the prefix: 130 bits
TLS_DNS_NAME = "parley-node"


_NODE_ID_RE = re.compile(rf"{NODE_ID_PREFIX}[a-z2-7]{{{NODE_ID_LENGTH}}}")


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

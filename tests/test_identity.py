"""Node identity: the key on disk, request signatures, pairing codes, and pinned TLS for real."""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from yarl import URL

from node.errors import AuthError, AuthReason, IdentityError, ParleyError, PinMismatch
from node.identity import NodeIdentity, cert_public_key_raw, fingerprint_of, pairing_code
from node.signing import HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, RequestVerifier, sign_request
from node.tls import (
    add_trusted_cert,
    client_ssl_context,
    peer_cert_sha256,
    pinned_fingerprint,
    server_ssl_context,
)

NOW = 1_800_000_000.0


@pytest.fixture
def alice(tmp_path: Path) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path / "alice")


@pytest.fixture
def bob(tmp_path: Path) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path / "bob")


@pytest.fixture
def verifier(bob: NodeIdentity) -> Iterator[RequestVerifier]:
    v = RequestVerifier(node_id=bob.node_id, clock=lambda: NOW)
    yield v
    v.close()


# --- the key on disk ---------------------------------------------------------------------------


def test_key_is_created_owner_only_and_reloaded_identically(tmp_path: Path) -> None:
    first = NodeIdentity.load_or_create(tmp_path)
    key_file = tmp_path / "identity"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in key_file.read_bytes()  # PKCS8, unencrypted
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    again = NodeIdentity.load_or_create(tmp_path)
    assert again.public_key_bytes == first.public_key_bytes
    assert again.node_id == first.node_id
    assert again.cert_der_sha256 == first.cert_der_sha256  # the pinned cert is kept, not remade
    assert NodeIdentity.verify(first.public_key_bytes, b"x", again.sign(b"x"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    NodeIdentity.load_or_create(tmp_path)
    (tmp_path / "identity").chmod(mode)
    with pytest.raises(IdentityError, match=f"{mode:04o}.*chmod 600"):
        NodeIdentity.load_or_create(tmp_path)


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "identity"
    key_file.write_text("not a key")
    key_file.chmod(0o600)
    with pytest.raises(IdentityError, match="not a readable"):
        NodeIdentity.load_or_create(tmp_path)


def test_a_certificate_for_another_key_is_remade(tmp_path: Path, bob: NodeIdentity) -> None:
    alice = NodeIdentity.load_or_create(tmp_path / "a")
    (tmp_path / "a" / "tls.pem").write_text(bob.cert_pem)
    again = NodeIdentity.load_or_create(tmp_path / "a")
    assert cert_public_key_raw(again.cert_pem) == alice.public_key_bytes


def test_node_id_is_a_stable_fingerprint_of_the_public_key(alice: NodeIdentity,
                                                           bob: NodeIdentity) -> None:
    digest = hashlib.sha256(alice.public_key_bytes).digest()
    expected = "n-" + base64.b32encode(digest).decode().lower().rstrip("=")[:26]
    assert alice.node_id == expected == fingerprint_of(alice.public_key_bytes)
    assert len(alice.node_id) == 28
    assert bob.node_id != alice.node_id
    # a known answer: changing the format would orphan every pairing made so far
    assert fingerprint_of(bytes(32)) == "n-mzuhvlpymk6xo3epygfy5h4oea"


def test_sign_and_verify(alice: NodeIdentity, bob: NodeIdentity) -> None:
    signature = alice.sign(b"proposal")
    assert len(signature) == 64
    assert NodeIdentity.verify(alice.public_key_bytes, b"proposal", signature)
    assert not NodeIdentity.verify(alice.public_key_bytes, b"proposal!", signature)
    assert not NodeIdentity.verify(bob.public_key_bytes, b"proposal", signature)
    assert not NodeIdentity.verify(b"short", b"proposal", signature)


def test_certificate_is_self_signed_ca_on_the_same_key(alice: NodeIdentity) -> None:
    cert = x509.load_pem_x509_certificate(alice.cert_pem.encode())
    assert cert_public_key_raw(alice.cert_pem) == alice.public_key_bytes
    assert isinstance(cert.public_key(), Ed25519PublicKey)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["parley-node"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc.year == 9999
    cert.verify_directly_issued_by(cert)
    assert alice.cert_der_sha256 == hashlib.sha256(alice.cert_der).hexdigest()


# --- signed requests ---------------------------------------------------------------------------


def refused(verifier: RequestVerifier, reason: AuthReason, *args: object,
            **kwargs: object) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(*args, **kwargs)
    assert info.value.reason == reason, info.value.message
    return info.value


def test_a_signed_request_verifies_to_its_sender(alice: NodeIdentity, bob: NodeIdentity,
                                                  verifier: RequestVerifier) -> None:
    headers = sign_request(alice, "post", "/jobs?x=1", b'{"a":1}', now=NOW, to=bob.node_id)
    lower = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    assert verifier.verify("POST", "/jobs?x=1", b'{"a":1}', lower,
                           known_keys={alice.node_id: alice.public_key_bytes}) == alice.node_id


def test_an_unsigned_request_is_refused(alice: NodeIdentity, verifier: RequestVerifier) -> None:
    err = refused(verifier, AuthReason.UNSIGNED, "GET", "/catalog", b"", {})
    assert isinstance(err, ParleyError) and err.http_status == 401
    assert err.problem_type == "https://parley.example/problems/unauthorized"
    headers = sign_request(alice, "GET", "/catalog", now=NOW)
    del headers[HEADER_SIGNATURE]
    refused(verifier, AuthReason.UNSIGNED, "GET", "/catalog", b"", headers)


def test_a_malformed_header_is_refused(alice: NodeIdentity, verifier: RequestVerifier) -> None:
    headers = sign_request(alice, "GET", "/catalog", now=NOW)
    refused(verifier, AuthReason.MALFORMED, "GET", "/catalog", b"",
            {**headers, HEADER_NONCE: "not-hex"})


@pytest.mark.parametrize("change", ["body", "path", "method", "signature"])
def test_a_forged_or_altered_request_is_refused(alice: NodeIdentity, bob: NodeIdentity,
                                                verifier: RequestVerifier, change: str) -> None:
    headers = sign_request(alice, "POST", "/jobs", b"approve", now=NOW)
    method, path, body = "POST", "/jobs", b"approve"
    if change == "body":
        body = b"approve all"
    elif change == "path":
        path = "/jobs/other"
    elif change == "method":
        method = "PUT"
    else:  # bob signs but claims to be alice
        headers[HEADER_SIGNATURE] = sign_request(bob, "POST", "/jobs", b"approve",
                                                 now=NOW)[HEADER_SIGNATURE]
    refused(verifier, AuthReason.FORGED, method, path, body, headers)


def test_a_key_that_is_not_the_node_ids_is_refused(alice: NodeIdentity, bob: NodeIdentity,
                                                   verifier: RequestVerifier) -> None:
    headers = sign_request(bob, "GET", "/catalog", now=NOW)
    headers["X-Parley-Node"] = alice.node_id  # bob's valid signature, alice's name
    refused(verifier, AuthReason.KEY_MISMATCH, "GET", "/catalog", b"", headers)


def test_a_replayed_request_is_refused(alice: NodeIdentity, verifier: RequestVerifier) -> None:
    headers = sign_request(alice, "POST", "/jobs", b"x", now=NOW)
    assert verifier.verify("POST", "/jobs", b"x", headers) == alice.node_id
    err = refused(verifier, AuthReason.REPLAYED, "POST", "/jobs", b"x", headers)
    assert "already received" in err.message
    # the same request signed again (a new nonce) is a new request
    other = sign_request(alice, "POST", "/jobs", b"x", now=NOW)
    assert verifier.verify("POST", "/jobs", b"x", other) == alice.node_id


def test_a_replay_after_a_restart_is_refused(tmp_path: Path, alice: NodeIdentity) -> None:
    headers = sign_request(alice, "POST", "/jobs", b"x", now=NOW)
    first = RequestVerifier(nonce_db=tmp_path / "nonces.sqlite", clock=lambda: NOW)
    assert first.verify("POST", "/jobs", b"x", headers) == alice.node_id
    first.close()
    restarted = RequestVerifier(nonce_db=tmp_path / "nonces.sqlite", clock=lambda: NOW + 5)
    refused(restarted, AuthReason.REPLAYED, "POST", "/jobs", b"x", headers)
    restarted.close()


def test_an_in_memory_verifier_refuses_requests_signed_before_it_started(
        alice: NodeIdentity) -> None:
    started = RequestVerifier(clock=lambda: NOW + 5)  # a replay of a request sent at NOW
    refused(started, AuthReason.EXPIRED, "GET", "/c", b"", sign_request(alice, "GET", "/c",
                                                                        now=NOW))
    assert started.verify("GET", "/c", b"", sign_request(alice, "GET", "/c",
                                                         now=NOW + 5)) == alice.node_id


def test_expired_and_future_requests_are_refused(alice: NodeIdentity, tmp_path: Path) -> None:
    verifier = RequestVerifier(nonce_db=tmp_path / "nonces.sqlite", clock=lambda: NOW)
    refused(verifier, AuthReason.EXPIRED, "GET", "/c", b"",
            sign_request(alice, "GET", "/c", now=NOW - 61))
    refused(verifier, AuthReason.FUTURE, "GET", "/c", b"",
            sign_request(alice, "GET", "/c", now=NOW + 61))
    for skew in (-59, 59):
        assert verifier.verify("GET", "/c", b"",
                               sign_request(alice, "GET", "/c", now=NOW + skew)) == alice.node_id


def test_an_unknown_node_is_refused(alice: NodeIdentity, bob: NodeIdentity,
                                    verifier: RequestVerifier) -> None:
    headers = sign_request(alice, "GET", "/catalog", now=NOW)
    refused(verifier, AuthReason.UNKNOWN_NODE, "GET", "/catalog", b"", headers,
            known_keys={bob.node_id: bob.public_key_bytes})


def test_a_request_signed_for_another_node_is_refused(alice: NodeIdentity, bob: NodeIdentity,
                                                      verifier: RequestVerifier) -> None:
    headers = sign_request(alice, "GET", "/catalog", now=NOW, to=alice.node_id)
    refused(verifier, AuthReason.WRONG_RECIPIENT, "GET", "/catalog", b"", headers)
    headers["X-Parley-To"] = bob.node_id  # re-addressing breaks the signature
    refused(verifier, AuthReason.FORGED, "GET", "/catalog", b"", headers)


def test_a_tls_certificate_of_another_node_is_refused(alice: NodeIdentity, bob: NodeIdentity,
                                                      verifier: RequestVerifier) -> None:
    headers = sign_request(alice, "GET", "/catalog", now=NOW)
    refused(verifier, AuthReason.CERT_MISMATCH, "GET", "/catalog", b"", headers,
            peer_cert_der=bob.cert_der)


# --- pairing -----------------------------------------------------------------------------------


def test_pairing_code_is_the_same_both_ways_and_differs_for_another_key(
        alice: NodeIdentity, bob: NodeIdentity, tmp_path: Path) -> None:
    mallory = NodeIdentity.load_or_create(tmp_path / "mallory")
    code = pairing_code(alice.public_key_bytes, bob.public_key_bytes)
    assert code == pairing_code(bob.public_key_bytes, alice.public_key_bytes)
    assert len(code) == 6 and code.isdigit()
    assert code != pairing_code(alice.public_key_bytes, mallory.public_key_bytes)
    assert code != pairing_code(mallory.public_key_bytes, bob.public_key_bytes)

    with_nonces = pairing_code(alice.public_key_bytes, bob.public_key_bytes,
                               nonce_a=b"1" * 16, nonce_b=b"2" * 16)
    assert with_nonces == pairing_code(bob.public_key_bytes, alice.public_key_bytes,
                                       nonce_a=b"2" * 16, nonce_b=b"1" * 16)
    assert with_nonces != pairing_code(alice.public_key_bytes, bob.public_key_bytes,
                                       nonce_a=b"1" * 16, nonce_b=b"3" * 16)


# --- TLS on a real server ----------------------------------------------------------------------

SEEN = web.AppKey("seen", list)


@dataclass
class Seen:
    body: bytes
    cert_sha256: str | None
    signer: str | None
    tls_version: str


@dataclass
class PeerServer:
    url: str
    identity: NodeIdentity
    ssl_context: ssl.SSLContext
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
async def server(tmp_path: Path, alice: NodeIdentity) -> AsyncIterator[PeerServer]:
    """Bob's peer API on the loopback; alice is paired (her certificate is trusted)."""
    bob = NodeIdentity.load_or_create(tmp_path / "bob")
    ctx = server_ssl_context(bob, [alice.cert_pem])
    verifier = RequestVerifier(node_id=bob.node_id)

    async def echo(request: web.Request) -> web.Response:
        cert = peer_cert_sha256(request)
        signer = None
        if "X-Parley-Signature" in request.headers:
            signer = await verifier.verify_request(
                request, known_keys={alice.node_id: alice.public_key_bytes})
        ssl_object = request.transport.get_extra_info("ssl_object")
        request.app[SEEN].append(Seen(await request.read(), cert, signer, ssl_object.version()))
        return web.json_response({"cert": cert, "signer": signer})

    app = web.Application()
    app[SEEN] = []
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield PeerServer(f"https://127.0.0.1:{port}", bob, ctx, app[SEEN])
    finally:
        await runner.cleanup()
        verifier.close()


async def test_pinned_tls_with_client_certificate(server: PeerServer,
                                                  alice: NodeIdentity) -> None:
    url = f"{server.url}/echo?job=j1"
    body = b'{"decision":"approve"}'
    headers = sign_request(alice, "POST", URL(url).raw_path_qs, body, to=server.identity.node_id)
    ctx = client_ssl_context(alice, expected_cert_sha256=server.identity.cert_der_sha256)
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers=headers, ssl=ctx) as resp:
        assert resp.status == 200
        assert await resp.json() == {"cert": alice.cert_der_sha256, "signer": alice.node_id}
    assert server.seen == [Seen(body, alice.cert_der_sha256, alice.node_id, "TLSv1.3")]


async def test_wrong_pin_is_refused_before_the_request_is_sent(server: PeerServer,
                                                               alice: NodeIdentity) -> None:
    ctx = client_ssl_context(alice, expected_cert_sha256=alice.cert_der_sha256)  # not bob's
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await session.post(f"{server.url}/echo", data=b"secret", ssl=ctx)
        assert isinstance(info.value.certificate_error, PinMismatch)
        # aiohttp's own Fingerprint (no client certificate) refuses the same way
        with pytest.raises(aiohttp.ServerFingerprintMismatch):
            await session.post(f"{server.url}/echo", data=b"secret",
                               ssl=pinned_fingerprint(alice.cert_der_sha256))
    assert server.seen == []


async def test_a_client_without_a_certificate_is_seen_as_none(server: PeerServer) -> None:
    """What an unpaired node does to send its pairing request."""
    pin = server.identity.cert_der_sha256
    async with aiohttp.ClientSession() as session:
        ctx = client_ssl_context(None, expected_cert_sha256=pin)
        async with session.post(f"{server.url}/echo", data=b"pair?", ssl=ctx) as resp:
            assert resp.status == 200
        async with session.post(f"{server.url}/echo", data=b"pair!",
                                ssl=pinned_fingerprint(pin.upper())) as resp:
            assert resp.status == 200
    assert [(s.body, s.cert_sha256) for s in server.seen] == [(b"pair?", None), (b"pair!", None)]


async def test_an_untrusted_client_certificate_fails_until_trusted(
        server: PeerServer, tmp_path: Path) -> None:
    carol = NodeIdentity.load_or_create(tmp_path / "carol")
    pin = server.identity.cert_der_sha256
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(f"{server.url}/echo", data=b"hello",
                                    ssl=client_ssl_context(carol, expected_cert_sha256=pin)):
                pass
        assert server.seen == []
        add_trusted_cert(server.ssl_context, carol.cert_pem)  # paired: no restart needed
        async with session.post(f"{server.url}/echo", data=b"hello",
                                ssl=client_ssl_context(carol, expected_cert_sha256=pin)) as resp:
            assert resp.status == 200
    assert [(s.body, s.cert_sha256) for s in server.seen] == [(b"hello", carol.cert_der_sha256)]


async def test_tls_below_1_3_is_refused(server: PeerServer, alice: NodeIdentity) -> None:
    ctx = client_ssl_context(alice, expected_cert_sha256=server.identity.cert_der_sha256)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.post(f"{server.url}/echo", data=b"x", ssl=ctx)
    assert server.seen == []


def test_header_key_is_base64_of_the_raw_public_key(alice: NodeIdentity) -> None:
    headers = sign_request(alice, "GET", "/", now=NOW)
    assert base64.b64decode(headers[HEADER_KEY]) == alice.public_key_bytes
    assert headers["X-Parley-Time"] == str(int(NOW))

"""Identity and trust between real nodes: pairing, pinned TLS, signed requests, the audit log.

Every refusal must be a clear problem document and an audit entry, and must change nothing.
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from node.api import TOKEN, owner_only
from node.client import results
from node.identity import NodeIdentity
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.peerclient import peer_request
from tests.test_jobs import spec, write_csv

SOURCE = "def run(crypten):\n    return crypten.load('nums', 1).sum().get_plain_text(dst=0)\n"


def _proposal(alice, bob, job_id="j-00000000000000a1"):
    return {"version": 1, "job_id": job_id, "title": "t",
            "orchestrator": {"name": "alice", "url": alice.peer_url, "node_id": alice.node_id},
            "parties": [{"name": "alice", "url": alice.peer_url, "node_id": alice.node_id,
                         "rank": 0},
                        {"name": "bob", "url": bob.peer_url, "node_id": bob.node_id, "rank": 1}],
            "code": {"kind": "source", "source": SOURCE, "entry": "run"},
            "bindings": [{"tag": "nums", "rank": 1, "kind": "dataset",
                          "expect": {"min_rows": 1}}],  # as the test nodes publish
            "reveal": {"to": [0], "everyone": False, "budget": 10, "result_to": [0]}}


def _signed_body(alice, p):
    from node.proposal import proposal_hash
    from node.wire import canonical

    ident = NodeIdentity.load_or_create(alice.data_dir)
    sig = base64.b64encode(ident.sign(canonical({"proposal": proposal_hash(p)}))).decode()
    return {"proposal": p, "rank": 1, "signature": sig}


def audit_reasons(node):
    return [e["fields"].get("reason", "") for e in node.client.audit()["entries"]
            if e["kind"] == "refusal"]


def test_pairing_shows_the_same_code_and_persists(make_node):
    alice = make_node("alice", pair=False)
    bob = make_node("bob", pair=False)
    asked = alice.client.pair(bob.address)
    pending = bob.client.pairings()
    assert [p["code"] for p in pending] == [asked["code"]] and len(asked["code"]) == 6
    assert {p["state"] for p in alice.client.peers()} == {"seen"}
    bob.client.decide_pairing(asked["id"], confirm=True)
    assert bob.client.peers()[0]["state"] == "seen"  # one confirmation is not enough
    alice.client.decide_pairing(asked["id"], confirm=True)
    for node, other in ((alice, bob), (bob, alice)):
        (peer,) = node.client.peers()
        assert peer["state"] == "paired" and peer["node_id"] == other.node_id
    bob.stop()
    bob.start()
    assert bob.client.peers()[0]["state"] == "paired"
    kinds = [(e["kind"], e["fields"].get("event")) for e in alice.client.audit()["entries"]]
    assert ("pairing", "requested") in kinds and ("pairing", "paired") in kinds
    assert alice.client.audit()["verify"]["ok"]


def test_unpaired_and_forged_requests_are_refused_and_audited(make_node, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    mallory = make_node("mallory", pair=False)
    bob.client.publish(write_csv(tmp_path / "b.csv", np.ones((3, 4))), tags=["nums"])
    p = _proposal(alice, bob)
    good = _signed_body(alice, p)

    def send(as_dir, body=good, **kw):
        return peer_request(as_dir, bob.peer_url, bob.node_id, "POST", "/peer/v1/proposals",
                            body, **kw)

    # unsigned
    status, prob = send(None, with_cert=False)
    assert status == 401 and "unsigned" in prob["detail"]
    # an unpaired node (valid signature, unknown key): only pairing is open to it
    status, prob = send(mallory.data_dir, with_cert=False)
    assert status == 401 and "unknown-node" in prob["detail"]

    # forged signature: alice's headers, one byte of the signature flipped
    def flip(h):
        sig = bytearray(base64.b64decode(h["X-Parley-Signature"]))
        sig[0] ^= 1
        h["X-Parley-Signature"] = base64.b64encode(bytes(sig)).decode()

    status, prob = send(alice.data_dir, tweak=flip)
    assert status == 401 and "forged" in prob["detail"]

    # wrong key: mallory's key under alice's node id
    def swap_key(h):
        h["X-Parley-Key"] = base64.b64encode(
            NodeIdentity.load_or_create(mallory.data_dir).public_key_bytes).decode()

    status, prob = send(alice.data_dir, tweak=swap_key)
    assert status == 401 and "key-mismatch" in prob["detail"]
    # expired: signed two minutes ago
    status, prob = send(alice.data_dir, tweak=lambda h: _resign(h, alice, bob, good,
                                                                 time.time() - 120))
    assert status == 401 and "expired" in prob["detail"]
    # a proposal whose body signature is not the orchestrator's
    status, prob = send(alice.data_dir, body={**good, "signature": good["signature"][::-1]})
    assert status in (403, 422) and "not signed by its orchestrator" in prob["detail"]

    # the genuine request once, then the very same request again: replayed
    frozen = {}

    def freeze(h):
        frozen.update(h)

    status, _ = send(alice.data_dir, tweak=freeze)
    assert status == 201
    status, prob = send(alice.data_dir, headers=frozen)
    assert status == 401 and "replayed" in prob["detail"]

    reasons = audit_reasons(bob)
    for reason in ("unsigned", "unknown-node", "forged", "key-mismatch", "expired",
                   "replayed"):
        assert reason in reasons, (reason, reasons)
    assert bob.client.audit()["verify"]["ok"]
    assert [j["id"] for j in bob.client.jobs(role="party")] == [p["job_id"]]


def _resign(headers, alice, bob, body, when):
    import json

    from node.signing import sign_request

    ident = NodeIdentity.load_or_create(alice.data_dir)
    headers.update(sign_request(ident, "POST", "/peer/v1/proposals", json.dumps(body).encode(),
                                now=when, to=bob.node_id))


def test_results_only_to_the_orchestrator_and_pins_hold(make_node, tmp_path):
    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    bob.client.publish(write_csv(tmp_path / "b.csv", np.ones((3, 4))), tags=["nums"])
    job = alice.client.submit(spec([alice, bob], SOURCE, [("nums", 1, "dataset")]))
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    # carol is paired with alice, but did not orchestrate: refused, audited
    status, prob = peer_request(carol.data_dir, alice.peer_url, alice.node_id, "GET",
                                f"/peer/v1/jobs/{job['id']}/result")
    assert status == 403 and "orchestrated" in prob["detail"]
    assert "not the job's orchestrator" in audit_reasons(alice)
    # alice herself gets it, signed
    status, answer = peer_request(alice.data_dir, alice.peer_url, alice.node_id, "GET",
                                  f"/peer/v1/jobs/{job['id']}/result")
    assert status == 200 and answer["signature"]

    # TLS pinned to a certificate that is not bob's (as the orchestrator pins): the
    # handshake fails before a byte of the request is sent
    import asyncio

    import aiohttp

    from node.tls import client_ssl_context

    async def pinned_get():
        ctx = client_ssl_context(NodeIdentity.load_or_create(alice.data_dir),
                                 expected_cert_sha256=NodeIdentity.load_or_create(
                                     carol.data_dir).cert_der_sha256)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session, \
                session.get(bob.peer_url + "/peer/v1/whoami") as resp:
            return resp.status

    with pytest.raises(aiohttp.ClientConnectorCertificateError) as err:
        asyncio.run(pinned_get())
    assert "not the paired" in str(err.value.certificate_error)

    # revoked: bob's requests to alice are refused from now on
    alice.client.unpair("bob")
    status, prob = peer_request(bob.data_dir, alice.peer_url, alice.node_id, "GET",
                                "/peer/v1/catalog")
    assert status == 401 and "unknown-node" in prob["detail"]


def test_search_across_paired_peers(make_node, tmp_path):
    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    bob.client.publish(write_csv(tmp_path / "b.csv", np.ones((3, 4))), tags=["wages", "2025"])
    carol.client.publish(write_csv(tmp_path / "c.csv", np.ones((5, 4))), tags=["wages"])
    found = alice.client.search(["wages"])
    assert [m["node"]["name"] for m in found["matches"]] == ["bob", "carol"]
    assert found["slow"] == [] and found["errors"] == []
    # the orchestrator binds a job's roles from the search: one party per holder
    from node.client import Party

    source = ("def run(crypten):\n    a = crypten.load('wages', 0)\n"
              "    b = crypten.load('wages', 1)"
              "\n    return (a.sum() + b.sum()).get_plain_text(dst=0)\n")
    parties = [Party(m["node"]["name"], m["node"]["node_id"]) for m in found["matches"]]
    job = alice.client.submit({"source": source, "entry": "run",
                               "parties": [p.spec() for p in parties],
                               "bindings": [{"tag": "wages", "rank": r, "kind": "dataset"}
                                            for r in range(len(parties))], "result_to": [0]})
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(32.0, abs=1e-2)
    found = alice.client.search(["wages", "2025"])
    assert [m["node"]["name"] for m in found["matches"]] == ["bob"]
    assert "1.0" not in str(found)  # metadata only
    carol.proc.send_signal(19)  # SIGSTOP: carol is slow now
    try:
        t0 = time.monotonic()
        found = alice.client.search(["wages"], timeout=1.0)
        assert time.monotonic() - t0 < 5
        assert found["slow"] == ["carol"] and [m["node"]["name"] for m in found["matches"]] \
            == ["bob"]
    finally:
        carol.proc.send_signal(18)


def test_a_peer_added_by_address_is_kept(make_node):
    alice = make_node("alice")
    bob = make_node("bob", pair=False)
    alice.client.add_peer(bob.address)
    peer = wait_until(lambda: {p["name"]: p for p in alice.client.peers()}.get("bob"), 10,
                      "bob to answer at its address")
    assert peer["source"] == "manual" and peer["node_id"] == bob.node_id
    assert peer["state"] == "seen"  # an address is not trust
    alice.stop()
    alice.start()
    assert "bob" in {p["name"] for p in alice.client.peers()}


def test_admin_api_refuses_non_loopback():
    app = web.Application()
    app[TOKEN] = "t"

    async def handler(request):
        return web.json_response({})

    async def call(remote):
        req = make_mocked_request("GET", "/admin/v1/status", app=app,
                                  headers={"Authorization": "Bearer t"})
        req = req.clone(remote=remote)
        return await owner_only(req, handler)

    import asyncio

    assert asyncio.run(call("10.1.2.3")).status == 403
    assert asyncio.run(call("127.0.0.1")).status == 200


def test_audit_chain_detects_tampering(make_node):
    import sqlite3

    alice = make_node("alice")
    make_node("bob")  # pairing writes an entry in alice's audit log that names bob
    before = alice.client.audit()
    assert before["verify"]["ok"]
    entry = next(e for e in before["entries"] if "bob" in json.dumps(e["fields"]))
    alice.stop()
    db = sqlite3.connect(alice.data_dir / "audit.sqlite")
    changed = db.execute("UPDATE audit SET fields = replace(fields, 'bob', 'eve') WHERE seq = ?",
                         (entry["seq"],))
    assert changed.rowcount == 1
    db.commit()
    db.close()
    alice.start()
    out = alice.client.audit()
    assert not out["verify"]["ok"] and out["verify"]["first_bad_seq"] == entry["seq"]


def test_a_pairing_request_expires(tmp_path, monkeypatch):
    import asyncio

    from node import trust as trust_mod
    from node.trust import Pairing, PairingError, Trust

    t = Trust(tmp_path, "alice")
    other = NodeIdentity.load_or_create(tmp_path / "other")
    t.pairings["p-1"] = Pairing("p-1", "in", other.node_id, "bob", "127.0.0.1", 1,
                                other.public_key_bytes, other.cert_pem, code="123456",
                                created=time.time() - trust_mod.PAIRING_TTL_S - 1)
    with pytest.raises(PairingError, match="expired"):
        asyncio.run(t.confirm("p-1"))
    assert t.list_pairings()[0]["state"] == "expired"
    assert not t.peers.paired()
    asyncio.run(t.close())

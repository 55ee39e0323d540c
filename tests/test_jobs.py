"""Real nodes, real CrypTen parties over TCP: jobs end to end, and every way they can fail."""

from __future__ import annotations

import base64
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from node import proposal as proposals
from node.client import NodeClient, results
from node.errors import ParleyError
from node.identity import NodeIdentity
from node.localnet import LocalNode, party_pids
from node.wire import canonical
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.peerclient import peer_request

SUM_JOB = '''
def run(crypten):
    total = crypten.load("nums", 0)
    for rank in range(1, 3):
        total = total + crypten.load("nums", rank)
    scaled = total * 0.5
    product = total * crypten.load("nums", 1)
    return {"sum": total.get_plain_text(dst=0), "half": scaled.get_plain_text(dst=0),
            "product": product.get_plain_text(dst=0)}
'''

LONG_JOB = '''
def run(crypten):
    x = crypten.load("nums", 1)
    y = x
    for _ in range(1000000):
        y = y * x
    return y.get_plain_text(dst=0)
'''


def write_csv(path: Path, values: np.ndarray, header: str = "a,b,c,d") -> Path:
    rows = [header] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(rows) + "\n")
    return path


def spec(parties: list[LocalNode], source: str, bindings: list[tuple[str, int, str]],
         result_to: tuple[int, ...] = (0,), **limits: float) -> dict:
    return {"title": "test", "source": source, "entry": "run",
            "parties": [p.party.spec() for p in parties],
            "bindings": [{"tag": t, "rank": r, "kind": k} for t, r, k in bindings],
            "result_to": list(result_to), "limits": limits}


def party_states(client: NodeClient, job_id: str) -> dict[str, dict]:
    return client.orchestration(job_id)["detail"]["parties"]


def test_three_parties_compute_exactly_on_negative_integers(make_node, tmp_path):
    """Sums, public and private products over 3 parties; the off-by-one decode would show here
    (values a few units of least precision above negative integers decoded one too low)."""
    rng = np.random.default_rng(7)
    nodes = [make_node(n) for n in ("alice", "bob", "carol")]
    data = [rng.integers(-50, 50, size=(40, 4)).astype(float) for _ in nodes]
    for node, values in zip(nodes, data):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", values), tags=["nums"])
    orch = nodes[0].client
    job = orch.submit(spec(nodes, SUM_JOB, [("nums", r, "dataset") for r in range(3)]))
    done = orch.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    value = results(done)[0]
    total = sum(data)
    np.testing.assert_allclose(value["sum"], total, atol=1e-3)
    np.testing.assert_allclose(value["half"], total * 0.5, atol=1e-3)
    np.testing.assert_allclose(value["product"], total * data[1], atol=2e-2)
    # the rounded answers are exact: no off-by-one anywhere
    assert (np.round(value["half"] * 2) == total).all()


def test_two_party_encrypted_inference_matches_plaintext(make_node):
    from node.demo import plain_inference
    from resources import path as resource

    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])
    source = '''
def run(crypten):
    data = crypten.load("bc-inference", 1)
    model = crypten.load_model("bc-model")
    return model(data).get_plain_text(dst=1)
'''
    body = spec([alice, bob], source, [("bc-model", 0, "model"), ("bc-inference", 1, "dataset")],
                result_to=(1,))
    body["crypten"] = {"precision_bits": 20}
    job = carol.client.submit(body)
    done = carol.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert np.abs(results(done)[1] - plain_inference()).max() < 1e-2
    # bob's node keeps the released value; alice's party returned nothing (dst=1 only)
    assert alice.client.job(job["id"], role="party")["result"] is None


def test_explicit_approval_and_rejection_reach_the_orchestrator(make_node, tmp_path):
    alice, bob = make_node("alice", auto_approve=False), make_node("bob", auto_approve=False)
    for node in (alice, bob):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", np.ones((3, 4))),
                            tags=["nums"])
    source = "def run(crypten):\n    return crypten.load('nums', 0).sum().get_plain_text(dst=0)\n"
    job = alice.client.submit(spec([alice, bob], source, [("nums", 0, "dataset")]))
    inbox = wait_until(lambda: bob.client.jobs(role="party", states=["awaiting_approval"]), 20,
                       "the proposal in bob's inbox")
    assert inbox[0]["id"] == job["id"]
    with pytest.raises(ParleyError, match="hash differs"):
        bob.client.approve(job["id"], "0" * 64)
    bob.client.reject(job["id"], "we do not share totals this quarter")
    done = alice.client.wait(job["id"], timeout=30)
    assert done["state"] == "rejected"
    assert "we do not share totals this quarter" in done["reason"]
    assert "bob" in done["reason"]
    # alice's own party copy was withdrawn, not left waiting
    assert alice.client.job(job["id"], role="party")["state"] == "cancelled"

    job = alice.client.submit(spec([alice, bob], source, [("nums", 0, "dataset")]))
    for node in (alice, bob):
        rec = wait_until(lambda n=node: [j for j in n.client.jobs(role="party")
                                         if j["id"] == job["id"]], 20, "proposal")[0]
        node.client.approve(job["id"], rec["proposal_hash"])
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(12.0, abs=1e-3)


def _start_long_job(make_node, tmp_path, n: int = 3):
    nodes = [make_node(name) for name in ("alice", "bob", "carol")[:n]]
    for node in nodes:
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", np.ones((20, 4))),
                            tags=["nums"])
    orch = nodes[0].client
    job = orch.submit(spec(nodes, LONG_JOB, [("nums", 1, "dataset")], time_s=300))
    wait_until(lambda: all(p["state"] == "running"
                           for p in party_states(orch, job["id"]).values()), 60,
               "every party to be running")
    time.sleep(0.5)  # well inside the multiplication loop
    return nodes, orch, job["id"]


def _assert_all_ended(nodes, orch, job_id, started: float, limit: float = 15.0):
    def ended():
        states = party_states(orch, job_id)
        return all(p["state"] in ("failed", "cancelled") for p in states.values())

    wait_until(ended, limit, "every party to end")
    assert time.monotonic() - started < limit
    for node in nodes:
        wait_until(lambda n=node: not party_pids(n.data_dir), 5, f"{node.name}'s party to exit")
    done = orch.wait(job_id, timeout=10)
    assert done["state"] == "failed"
    return done


def test_party_killed_mid_job_ends_every_party_within_15s(make_node, tmp_path):
    nodes, orch, job_id = _start_long_job(make_node, tmp_path)
    bob = nodes[1]
    (victim,) = party_pids(bob.data_dir)
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    done = _assert_all_ended(nodes, orch, job_id, started)
    assert "bob" in done["reason"] and "SIGKILL" in done["reason"], done["reason"]
    bob_job = bob.client.job(job_id, role="party")
    assert bob_job["state"] == "failed" and "SIGKILL" in bob_job["reason"]
    for node in (nodes[0], nodes[2]):
        reason = node.client.job(job_id, role="party")["reason"]
        assert "bob" in reason or "lost the connection" in reason, reason


def test_party_frozen_mid_job_ends_every_party_within_15s(make_node, tmp_path):
    nodes, orch, job_id = _start_long_job(make_node, tmp_path)
    bob = nodes[1]
    (victim,) = party_pids(bob.data_dir)
    started = time.monotonic()
    os.kill(victim, signal.SIGSTOP)  # keeps its sockets open: only timeouts can tell
    try:
        done = _assert_all_ended(nodes, orch, job_id, started)
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert done["reason"].startswith("bob (rank 1): stopped answering"), done["reason"]
    assert bob.client.job(job_id, role="party")["state"] == "cancelled"
    for node in (nodes[0], nodes[2]):
        assert node.client.job(job_id, role="party")["state"] in ("failed", "cancelled")


def test_node_restarted_mid_job(make_node, tmp_path):
    nodes, orch, job_id = _start_long_job(make_node, tmp_path, n=2)
    bob = nodes[1]
    (victim,) = party_pids(bob.data_dir)
    started = time.monotonic()
    bob.kill()  # the node dies without any chance to clean up
    wait_until(lambda: not os.path.exists(f"/proc/{victim}") or
               open(f"/proc/{victim}/stat").read().split(")")[1].split()[0] == "Z", 5,
               "bob's party to die with its node")
    bob.start()  # same data dir, same address
    job = bob.client.job(job_id, role="party")
    assert job["state"] == "failed"
    assert "node stopped while the job was running" in job["reason"]
    done = orch.wait(job_id, timeout=30)
    assert done["state"] == "failed"
    assert done["reason"].startswith("bob (rank 1)"), done["reason"]
    assert time.monotonic() - started < 30


def test_a_killed_node_is_the_one_blamed(make_node, tmp_path):
    nodes, orch, job_id = _start_long_job(make_node, tmp_path, n=2)
    nodes[1].kill()  # bob's node and its party die; alice only sees a lost connection
    done = orch.wait(job_id, timeout=60)
    assert done["state"] == "failed"
    assert done["reason"].startswith("bob (rank 1): its node stopped answering"), done["reason"]
    assert party_states(orch, job_id)["0"]["state"] in ("failed", "cancelled")


STEADY_JOB = '''
def run(crypten):
    x = crypten.load("nums", 1)
    y = x
    for _ in range(400):
        y = y * x
    return (y + crypten.load("nums", 0)).get_plain_text(dst=0)
'''


def test_an_orchestrator_that_restarts_collects_the_result(make_node, tmp_path):
    """carol drives a job between alice and bob and is killed mid-run; the parties finish
    on their own, and carol, back on the same address, collects the result."""
    alice, bob, carol = (make_node(n) for n in ("alice", "bob", "carol"))
    for node, value in ((alice, 2.0), (bob, 1.0)):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv",
                                      np.full((4, 4), value)), tags=["nums"])
    job = carol.client.submit(spec([alice, bob], STEADY_JOB, [("nums", 0, "dataset"),
                                                              ("nums", 1, "dataset")]))
    wait_until(lambda: all(p["state"] == "running"
                           for p in party_states(carol.client, job["id"]).values()), 60,
               "both parties to be running")
    carol.kill()
    carol.start()
    done = carol.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert "collected after this node restarted" in done["reason"]
    np.testing.assert_allclose(np.asarray(results(done)[0]), np.full((4, 4), 3.0), atol=1e-2)
    assert {p["state"] for p in party_states(carol.client, job["id"]).values()} == {"succeeded"}


def test_after_a_cancel_no_party_is_listed_running(make_node, tmp_path):
    nodes, orch, job_id = _start_long_job(make_node, tmp_path, n=2)
    orch.cancel(job_id, "changed my mind")
    wait_until(lambda: all(p["state"] in ("cancelled", "failed")
                           for p in party_states(orch, job_id).values()), 20,
               "every party's end to be recorded")
    assert orch.orchestration(job_id)["state"] == "cancelled"


def test_refusals_are_clear_and_lose_nothing(make_node, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    alice.client.publish(write_csv(tmp_path / "a.csv", np.ones((5, 4))), tags=["nums"])
    source = "def run(crypten):\n    return 1\n"

    # an unknown tag: refused when submitted (the orchestrator reads each holder's catalog to
    # state the asset's shape in the proposal), naming the node and the tag; nothing is sent
    with pytest.raises(ParleyError, match="the job was not sent: bob holds no asset tagged "
                                          "'no-such-tag'"):
        alice.client.submit(spec([alice, bob], source, [("no-such-tag", 1, "dataset")]))

    # an asset of the wrong shape
    body = spec([alice, bob], source, [("nums", 0, "dataset")])
    body["bindings"][0]["expect"] = {"shape": [None, 30]}
    with pytest.raises(ParleyError, match=r"'nums' at alice has shape \[5, 4\], but the job "
                                          r"expects \['any', 30\]"):
        alice.client.submit(body)

    # a model where a dataset is expected
    with pytest.raises(ParleyError, match="'nums' at alice is a dataset, not a model"):
        alice.client.submit(spec([alice, bob], source, [("nums", 0, "model")]))
    assert alice.client.jobs() == [] and bob.client.jobs() == []

    # a proposal written by hand reaches the party: its node refuses what it cannot provide
    job = alice.client.submit(spec([alice, bob], source, [("nums", 0, "dataset")]))
    p = alice.client.orchestration(job["id"])["proposal"]
    assert p["bindings"][0]["expect"] == {"shape": [5, 4], "labels": False, "min_rows": 1,
                                          "dp": False}
    assert alice.client.wait(job["id"], timeout=JOB_TIMEOUT)["state"] == "succeeded"
    forged = {**p, "job_id": "j-00000000000000f0",
              "bindings": [{"tag": "no-such-tag", "rank": 1, "kind": "dataset"}]}
    signature = base64.b64encode(NodeIdentity.load_or_create(alice.data_dir).sign(canonical(
        {"proposal": proposals.proposal_hash(forged)}))).decode()
    status, problem = peer_request(alice.data_dir, bob.peer_url, bob.node_id, "POST",
                                   "/peer/v1/proposals", {"proposal": forged, "rank": 1,
                                                          "signature": signature})
    assert status == 422 and "cannot provide 'no-such-tag'" in problem["detail"], problem

    # a malformed proposal straight to the peer API, signed by a paired node: a problem
    # document, nothing stored
    status, problem = peer_request(alice.data_dir, bob.peer_url, bob.node_id, "POST",
                                   "/peer/v1/proposals", {"proposal": {"version": 1}, "rank": 0})
    assert status == 422
    assert problem["type"].endswith("/bad-proposal") and "job_id" in problem["detail"]
    status, problem = peer_request(alice.data_dir, bob.peer_url, bob.node_id, "POST",
                                   "/peer/v1/proposals", raw=b'{"proposal": {not json')
    assert status == 422 and "not valid JSON" in problem["detail"], problem
    # valid JSON that is not a proposal request (a string)
    status, problem = peer_request(alice.data_dir, bob.peer_url, bob.node_id, "POST",
                                   "/peer/v1/proposals", "{not json")
    assert status == 422 and "expected" in problem["detail"]
    assert not bob.client.jobs(role="party", states=["awaiting_approval"])

    # the job's own error: a clear reason with the line, and the nodes keep working
    bad = "def run(crypten):\n    x = crypten.load('nums', 0)\n    return x.no_such_method()\n"
    done = alice.client.wait(alice.client.submit(
        spec([alice, bob], bad, [("nums", 0, "dataset")]))["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "failed"
    assert "line 3 of the job" in done["reason"], done["reason"]
    assert "'no_such_method' on a MPCTensor is not part of the job API" in done["reason"]
    assert len(alice.client.assets()) == 1

"""The node's seam for its owner's app: one event log, persisted waiting items, one node per dir.

Real ``parley node`` processes on the loopback; what the GUI relies on, asserted through the
admin API exactly as the GUI calls it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from node.client import NodeClient, results
from node.errors import NodeUnreachable, PairingError
from node.wire import decode
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import spec, write_csv

MEAN_JOB = '''
def run(crypten):
    x = crypten.load("cohort", 1)
    return x.mean(dim=0).get_plain_text(dst=0)
'''


def kinds(client: NodeClient, after: int = 0) -> list[str]:
    return [e["kind"] for e in client.events(after)["events"]]


def test_every_change_an_owner_cares_about_is_an_event(make_node, tmp_path):
    alice = make_node("alice", auto_approve=False)
    start = alice.client.status()["event_seq"]
    bob = make_node("bob", auto_approve=False)  # pairs with alice
    carol = make_node("carol", auto_approve=False)  # pairs with alice and bob
    seen = kinds(alice.client, start)
    for kind in ("pairing.requested", "pairing.confirmed", "peer.trust_changed", "peer.found"):
        assert kind in seen, (kind, seen)

    after = alice.client.status()["event_seq"]
    write_csv(tmp_path / "c.csv", np.arange(12.0).reshape(3, 4))
    asset = bob.client.publish(tmp_path / "c.csv", tags=["cohort"])
    alice.client.add_policy("carol", "inference")
    alice.client.remove_policy("carol", "inference")
    bob_after = bob.client.status()["event_seq"]
    job = carol.client.submit(spec([alice, bob], MEAN_JOB, [("cohort", 1, "dataset")]))
    arrived = wait_until(lambda: [e for e in bob.client.events(bob_after)["events"]
                                  if e["kind"] == "proposal.arrived"], 30, "the proposal event")
    assert arrived[0]["data"]["job_id"] == job["id"]
    assert arrived[0]["data"]["orchestrator"] == "carol"
    bob.client.approve(job["id"], bob.client.job(job["id"], "party")["proposal_hash"])
    alice.client.approve(job["id"], alice.client.job(job["id"], "party")["proposal_hash"])
    done = carol.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    np.testing.assert_allclose(np.asarray(results(done)[0]).reshape(-1), [4, 5, 6, 7],
                               atol=1e-3)

    seen_alice = kinds(alice.client, after)
    for kind in ("policy.added", "policy.removed", "proposal.arrived", "decision.taken",
                 "job.state", "job.progress"):
        assert kind in seen_alice, (kind, seen_alice)
    bob_events = bob.client.events(bob_after)["events"]
    assert "asset.published" in [e["kind"] for e in bob.client.events(0)["events"]]
    states = [e["data"]["state"] for e in bob_events
              if e["kind"] == "job.state" and e["job_id"] == job["id"]]
    assert states == ["awaiting_approval", "approved", "starting", "running", "succeeded"]
    # a job list never carries the source; the review endpoint does
    listed = bob.client.jobs(role="party")[0]
    assert "review" not in listed["detail"] and listed["kind"] == "source"
    review = bob.client.call("GET", f"/admin/v1/jobs/{job['id']}/review")
    assert "x.mean(dim=0)" in review["source"] and review["reads"][0]["here"]
    assert asset["id"] == review["reads"][0]["asset_id"]

    # the log survives a restart, and a client catches up from its cursor
    cursor = bob.client.status()["event_seq"]
    bob.stop()
    bob.start()
    assert bob.client.status()["event_seq"] >= cursor
    assert [e["seq"] for e in bob.client.events(0)["events"]][:1] == [1]
    bob.client.add_policy("carol", "statistics")
    fresh = bob.client.events(cursor, timeout=10)["events"]
    assert [e["kind"] for e in fresh] == ["policy.added"] and fresh[0]["seq"] > cursor


def test_a_pending_pairing_request_survives_a_restart_and_can_be_confirmed(make_node):
    alice = make_node("alice", auto_approve=False)
    bob = make_node("bob", auto_approve=False, pair=False)
    asked = alice.client.pair(bob.address)
    assert asked["my_fingerprint"] == alice.node_id and asked["peer_fingerprint"] == bob.node_id
    bob.stop()
    bob.start()
    pending = [p for p in bob.client.pairings() if p["id"] == asked["id"]]
    assert pending and pending[0]["state"] == "pending"
    assert pending[0]["code"] == asked["code"] and pending[0]["direction"] == "in"
    assert bob.client.status()["counts"]["pending_pairings"] == 1
    bob.client.decide_pairing(asked["id"], confirm=True)
    alice.client.decide_pairing(asked["id"], confirm=True)
    assert [p["state"] for p in bob.client.peers() if p["node_id"] == alice.node_id] == ["paired"]
    assert [p["state"] for p in alice.client.peers() if p["node_id"] == bob.node_id] == ["paired"]
    try:
        bob.client.decide_pairing(asked["id"], confirm=True)
        raise AssertionError("a decided request cannot be decided again")
    except PairingError as exc:  # the client maps the problem type back to its exception
        assert "paired" in exc.message


def test_one_node_per_data_dir_and_a_stale_node_json_is_not_trusted(make_node, tmp_path):
    alice = make_node("alice")
    second = subprocess.run([sys.executable, "-m", "node.cli", "node", "--data-dir",
                             str(alice.data_dir), "--no-mdns"], capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 1
    assert "another node already runs on" in second.stderr and "Traceback" not in second.stderr
    assert alice.client.status()["name"] == "alice"  # the running node is untouched

    alice.kill()  # a crash leaves node.json behind
    left = json.loads((alice.data_dir / "node.json").read_text())
    assert left["pid"] == alice.pid
    try:
        NodeClient.for_data_dir(alice.data_dir)
        raise AssertionError("a node.json of a dead node must not be trusted")
    except NodeUnreachable as exc:
        assert "no node is running" in exc.message
    alice.start()  # and a new node takes the dir over
    assert alice.client.status()["name"] == "alice"


def test_a_received_proposal_dry_runs_on_mock_data_with_its_own_reveal_map(make_node, tmp_path):
    alice, bob = make_node("alice", auto_approve=False), make_node("bob", auto_approve=False)
    carol = make_node("carol")
    write_csv(tmp_path / "c.csv", np.full((5, 4), 1000.0))
    bob.client.publish(tmp_path / "c.csv", tags=["cohort"])
    job = carol.client.submit(spec([alice, bob], MEAN_JOB, [("cohort", 1, "dataset")]))
    wait_until(lambda: alice.client.jobs(role="party"), 30, "the proposal at alice")
    out = alice.client.call("POST", f"/admin/v1/jobs/{job['id']}/dry-run", {}, timeout=180)
    assert out["state"] == "succeeded", out["reason"]
    mean = np.asarray(decode(out["result"])).reshape(-1)
    assert mean.shape == (4,)  # the shape of bob's real data, learnt from his catalog
    assert np.all(np.abs(mean) < 100), "the dry run must not see bob's real values (1000)"
    assert out["confinement"]["complete"] is True
    # the proposal reveals to rank 0 only: a job that reveals elsewhere is refused in the dry run
    job2 = carol.client.submit(spec([alice, bob], MEAN_JOB.replace("dst=0", "dst=1"),
                                    [("cohort", 1, "dataset")]))
    wait_until(lambda: len(alice.client.jobs(role="party")) == 2, 30, "the second proposal")
    out2 = alice.client.call("POST", f"/admin/v1/jobs/{job2['id']}/dry-run", {}, timeout=180)
    assert out2["state"] == "failed" and "reveal map" in out2["reason"]
    for j in (job, job2):
        carol.client.cancel(j["id"])


def test_a_large_import_reports_progress_and_can_be_cancelled(make_node, tmp_path):
    alice = make_node("alice")
    big = tmp_path / "big.csv"
    rows = np.random.default_rng(1).standard_normal((300_000, 8))
    big.write_text("a,b,c,d,e,f,g,h\n" + "\n".join(",".join(f"{v:.6f}" for v in r)
                                                   for r in rows) + "\n")
    cursor = alice.client.status()["event_seq"]

    import threading

    outcome: dict[str, object] = {}

    def publish() -> None:
        try:
            outcome["asset"] = alice.client.call("POST", "/admin/v1/assets", {
                "path": str(big), "tags": ["big"], "import_id": "imp-1"}, timeout=300)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=publish)
    thread.start()
    progress = wait_until(lambda: [e for e in alice.client.events(cursor, 5)["events"]
                                   if e["kind"] == "asset.import_progress"], 120,
                          "a progress event")
    assert 0 < progress[0]["data"]["done"] < progress[0]["data"]["total"]
    alice.client.call("POST", "/admin/v1/imports/imp-1/cancel", {})
    thread.join(120)
    assert "cancelled" in getattr(outcome.get("error"), "message", ""), outcome
    assert alice.client.assets() == []  # nothing was stored

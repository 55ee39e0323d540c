"""Who is who: every name a node shows its owner comes from its own peer book, keyed by the
key that signed; standing approvals bind to keys; peer text reaches the terminal escaped."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from node import proposal as proposals
from node.identity import NodeIdentity
from node.wire import canonical
from tests.conftest import wait_until
from tests.peerclient import peer_request

SOURCE = ("def run(crypten):\n"
          "    x = crypten.load('wages', 0)\n"
          "    return x.sum(0).get_plain_text(dst=1)\n")


def parley(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=120)


def _forged_proposal(sender, target, claimed_orchestrator: str, claimed_party: str) -> dict:
    """A proposal ``sender`` signs with its own key but in which it calls itself by
    another name, as orchestrator and as the party that receives the reveal."""
    return {
        "version": proposals.VERSION, "job_id": proposals.new_job_id(), "title": "wages",
        "orchestrator": {"name": claimed_orchestrator, "url": sender.peer_url,
                         "node_id": sender.node_id},
        "parties": [{"name": target.name, "url": target.peer_url, "node_id": target.node_id,
                     "rank": 0},
                    {"name": claimed_party, "url": sender.peer_url, "node_id": sender.node_id,
                     "rank": 1}],
        "code": {"kind": "source", "source": SOURCE, "entry": "run"},
        "bindings": [{"tag": "wages", "rank": 0, "kind": "dataset",
                      "expect": {"min_rows": 1}}],  # as the test nodes publish
        "reveal": {"to": [1], "everyone": False, "budget": 1000, "result_to": [1]},
    }


def _send(sender, target, p: dict) -> tuple[int, dict]:
    identity = NodeIdentity.load_or_create(sender.data_dir)
    signature = base64.b64encode(identity.sign(canonical(
        {"proposal": proposals.proposal_hash(p)}))).decode()
    pin = next(x["cert_sha256"] for x in sender.client.peers() if x["node_id"] == target.node_id)
    return peer_request(sender.data_dir, target.peer_url, target.node_id, "POST",
                        "/peer/v1/proposals", {"proposal": p, "rank": 0,
                                               "signature": signature}, pin=pin)


def test_a_peer_cannot_pose_as_another_orchestrator_or_party(make_node, tmp_path):
    alice = make_node("alice", auto_approve=False)
    bob = make_node("bob", auto_approve=False)
    carol = make_node("carol", auto_approve=False)
    csv = tmp_path / "wages.csv"
    csv.write_text("age,income\n30,1000\n40,2000\n")
    alice.client.publish(csv, tags=["wages"])
    alice.client.add_policy("carol", "source")  # alice trusts carol's source jobs, not bob's
    assert [(p["orchestrator"], p["node_id"]) for p in alice.client.policies()] == [
        ("carol", carol.node_id)]

    p = _forged_proposal(bob, alice, claimed_orchestrator="carol", claimed_party="carol")
    status, answer = _send(bob, alice, p)
    assert status == 201, answer
    job = alice.client.job(p["job_id"], role="party")
    # carol's standing approval does not apply: the key that signed is bob's
    assert job["state"] == "awaiting_approval"
    assert job["orchestrator"] == "bob" and job["orchestrator_id"] == bob.node_id
    review = alice.client.call("GET", f"/admin/v1/jobs/{p['job_id']}/review")
    assert review["orchestrator"]["name"] == "bob"
    assert [q["name"] for q in review["parties"]] == ["alice", "bob"]
    assert review["reveals"][0]["to"] == "rank 1 (bob)"
    assert review["released_to_orchestrator"] == ["rank 1 (bob)"]
    assert any("calls the orchestrator 'carol'" in w and "known here as bob" in w
               for w in review["warnings"])
    assert any("calls rank 1 'carol'" in w for w in review["warnings"])

    shown = parley("show", p["job_id"], "--data-dir", str(alice.data_dir)).stdout
    assert f"from bob ({bob.peer_url})" in shown and "to rank 1 (bob)" in shown
    assert "from carol" not in shown and "(carol)" not in shown

    audit = alice.client.audit()["entries"]
    claims = [e["fields"] for e in audit if e["kind"] == "claim"]
    assert {(c["field"], c["claimed"], c["known_as"]) for c in claims} == {
        ("the orchestrator", "carol", "bob"), ("rank 1", "carol", "bob")}
    assert all(c["sender"] == bob.node_id for c in claims)
    arrived = [e for e in alice.client.events(0)["events"] if e["kind"] == "proposal.arrived"]
    assert arrived[-1]["data"]["orchestrator"] == "bob"

    # carol's own proposal is approved by the policy, under carol's verified name
    honest = _forged_proposal(carol, alice, claimed_orchestrator="carol", claimed_party="carol")
    status, answer = _send(carol, alice, honest)
    assert status == 201, answer
    job = alice.client.job(honest["job_id"], role="party")
    assert job["state"] == "approved"
    assert job["detail"]["approved_by"].endswith(f"jobs from carol ({carol.node_id})")
    assert not any(e["kind"] == "claim" and e["fields"]["job"] == honest["job_id"]
                   for e in alice.client.audit()["entries"])

    # each orchestrator's event long-poll at alice tells it of its own jobs only
    def peer_events(asker) -> set[str]:
        pin = next(x["cert_sha256"] for x in asker.client.peers()
                   if x["node_id"] == alice.node_id)
        status, answer = peer_request(asker.data_dir, alice.peer_url, alice.node_id, "GET",
                                      "/peer/v1/events?after=0&timeout=0", pin=pin)
        assert status == 200, answer
        return {e["job_id"] for e in answer["events"]}

    assert peer_events(bob) == {p["job_id"]}
    assert peer_events(carol) == {honest["job_id"]}


def test_policies_name_paired_keys_and_are_audited(make_node):
    alice = make_node("alice", auto_approve=False)
    bob = make_node("bob", auto_approve=False)
    a = str(alice.data_dir)
    out = parley("policy", "add", "nobody", "train", "--data-dir", a)
    assert out.returncode == 1 and "no peer named 'nobody'" in out.stderr
    out = parley("policy", "add", "bob", "--data-dir", a)
    assert out.returncode == 1 and "KIND one of inference, train, statistics, source" in \
        out.stderr and "{" not in out.stderr
    out = parley("policy", "add", "bob", "train", "--data-dir", a)
    assert out.returncode == 0, out.stderr
    assert "bob" in out.stdout and bob.node_id in out.stdout
    out = parley("policy", "remove", "bob", "train", "--data-dir", a)
    assert out.returncode == 0 and "(none)" in out.stdout
    entries = [e["fields"] for e in alice.client.audit()["entries"] if e["kind"] == "policy"]
    assert [(e["event"], e["peer"], e["job_kind"]) for e in entries] == [
        ("added", bob.node_id, "train"), ("removed", bob.node_id, "train")]


def test_a_party_named_twice_and_an_unknown_plan_key_are_named(make_node, tmp_path):
    alice = make_node("alice")
    bob = make_node("bob")
    job = tmp_path / "job.py"
    job.write_text(SOURCE)
    a = str(alice.data_dir)
    out = parley("submit", str(job), "--party", "bob", "--party", "bob", "--data", "wages@0",
                 "--data-dir", a)
    assert out.returncode == 1 and "bob is named twice as a party (ranks 0 and 1)" in out.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"kind": "statistics", "data": [{"tag": "w", "rank": 0}],
                                "stats": ["mean"], "output_to": 0, "histogramm": {}}))
    out = parley("submit", str(plan), "--party", "alice", "--party", "bob", "--data-dir", a)
    assert out.returncode == 1 and "unknown key 'histogramm'" in out.stderr
    assert bob.client.jobs() == []


EVIL = "eve\x1b[2J\x1b[1;1H\nalice  n-forged  paired"


def test_control_characters_from_peers_reach_the_cli_escaped(make_node, tmp_path):
    """A peer's name, asset name, job title and reject reason hold escape sequences and
    newlines; the owner's terminal shows them as visible escapes, on one line each."""
    alice = make_node("alice", auto_approve=False)
    from node.localnet import LocalNode

    eve = LocalNode(EVIL, tmp_path / "eve", auto_approve=False).start()
    try:
        eve.pair_with(alice)
        csv = tmp_path / "x.csv"
        csv.write_text("a,b\n1,2\n3,4\n")
        eve.client.publish(csv, tags=["wages"], name="rows\x1b]0;pwned\x07\rfake",
                           description="d\x1b[31m")
        alice.client.publish(csv, tags=["wages"])
        job = eve.client.submit({"title": "t\x1b[2K\ninjected line", "source": SOURCE,
                                 "parties": [{"name": alice.node_id}, {"name": eve.node_id}],
                                 "bindings": [{"tag": "wages", "rank": 0, "kind": "dataset"}],
                                 "result_to": [1], "reveal_to": [1]})
        wait_until(lambda: alice.client.jobs(role="party"), 30, "the proposal at alice")
        mine = alice.client.submit({"title": "mine", "source": SOURCE,
                                    "parties": [{"name": alice.node_id},
                                                {"name": eve.node_id}],
                                    "bindings": [{"tag": "wages", "rank": 0,
                                                  "kind": "dataset"}]})
        wait_until(lambda: mine["id"] in {j["id"] for j in eve.client.jobs(role="party")}, 30,
                   "alice's proposal at eve")
        eve.client.reject(mine["id"], "no\x1b[2J\nalice: approved")
        wait_until(lambda: alice.client.orchestration(mine["id"])["state"] == "rejected", 30,
                   "the rejection")
        a = str(alice.data_dir)
        outputs = {
            "peers": parley("peers", "--data-dir", a),
            "jobs": parley("jobs", "--data-dir", a),
            "show": parley("show", job["id"], "--data-dir", a),
            "search": parley("search", "wages", "--data-dir", a),
            "result": parley("result", mine["id"], "--data-dir", a),
            "audit": parley("audit", "--data-dir", a),
        }
        for command, out in outputs.items():
            text = out.stdout + out.stderr
            assert "\x1b" not in text and "\x07" not in text and "\r" not in text, command
            assert "Traceback" not in text, command
        assert "eve\\x1b[2J\\x1b[1;1H\\nalice  n-forged  paired" in outputs["peers"].stdout
        assert not any(line.startswith("alice  n-forged")
                       for line in outputs["peers"].stdout.splitlines())
        assert "injected line" in outputs["jobs"].stdout
        assert not any(line.startswith("injected line")
                       for line in outputs["jobs"].stdout.splitlines())
        assert "\\x1b]0;pwned\\x07\\rfake" in outputs["search"].stdout
        assert "no\\x1b[2J\\nalice: approved" in outputs["result"].stdout
        assert not any(line.startswith("alice: approved")
                       for line in outputs["result"].stdout.splitlines())
        # JSON output is JSON-escaped, and the value survives it exactly
        listed = json.loads(parley("jobs", "--json", "--data-dir", a).stdout)
        assert "t\x1b[2K\ninjected line" in [j["title"] for j in listed]
        assert "\x1b" not in parley("jobs", "--json", "--data-dir", a).stdout
        # the node's own log line for the proposal is escaped too
        log = (alice.data_dir / "node.log").read_bytes()
        assert b"\x1b" not in log
    finally:
        eve.stop()


def test_a_reader_that_leaves_early_gets_no_traceback(make_node, tmp_path):
    """`parley show J | head`: more output than a pipe holds, and the reader leaves."""
    alice, bob = make_node("alice"), make_node("bob")
    csv = tmp_path / "wages.csv"
    csv.write_text("age,income\n30,1000\n40,2000\n")
    alice.client.publish(csv, tags=["wages"])
    padded = SOURCE + "# a long comment line to make the review long: padding\n" * 1500
    job = alice.client.submit({"title": "long", "source": padded,
                               "parties": [{"name": alice.node_id}, {"name": bob.node_id}],
                               "bindings": [{"tag": "wages", "rank": 0, "kind": "dataset"}]})
    wait_until(lambda: alice.client.jobs(role="party"), 30, "the proposal")
    cmd = f"{sys.executable} -m node.cli show {job['id']} --data-dir {alice.data_dir} | head -1"
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith(f"job {job['id']} from alice")
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr

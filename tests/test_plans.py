"""Plans, policies, review material, reveal control and dry runs, through real nodes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from node.client import results
from node.core import Node
from node.errors import ProposalError
from node.wire import decode
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import spec, write_csv


def _plan_spec(nodes, plan, title="plan"):
    return {"title": title, "plan": plan, "parties": [n.party.spec() for n in nodes]}


def test_statistics_plan_runs_by_policy_without_a_person(make_node, tmp_path):
    nodes = [make_node(n, auto_approve=False) for n in ("alice", "bob", "carol")]
    rng = np.random.default_rng(11)
    data = [np.round(rng.normal(50, 10, size=(30, 4)), 2) for _ in nodes]
    for node, values in zip(nodes, data):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", values), tags=["wages"])
        node.client.add_policy("alice", "statistics")
    plan = {"kind": "statistics", "data": [{"tag": "wages", "rank": r} for r in range(3)],
            "stats": ["count", "sum", "mean", "variance", "histogram"],
            "histogram": {"column": 0, "edges": [0, 40, 50, 60, 100]}, "output_to": 0}
    job = nodes[0].client.submit(_plan_spec(nodes, plan))
    done = nodes[0].client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    value = results(done)[0]
    rows = np.vstack(data)
    assert value["count"] == 90
    np.testing.assert_allclose(value["mean"], rows.mean(0), atol=1e-2)
    np.testing.assert_allclose(value["variance"], rows.var(0), rtol=1e-3)
    expected = np.histogram(rows[:, 0], [0, 40, 50, 60, 100])[0]
    np.testing.assert_allclose(value["histogram"], expected, atol=1e-3)
    for node in nodes:
        party = node.client.job(job["id"], role="party")
        assert party["detail"]["approved_by"] == ("approved by the owner's policy: statistics "
                                                  f"jobs from alice ({nodes[0].node_id})")
        confinement = party["detail"]["confinement"]  # recorded with the job
        assert confinement["seccomp"] is True and confinement["complete"] is True
    # the policy covers plans of that kind only: source from the same orchestrator waits
    source = "def run(crypten):\n    return crypten.load('wages', 0).sum().get_plain_text(dst=0)\n"
    job = nodes[0].client.submit(spec(nodes, source, [("wages", 0, "dataset")]))
    wait_until(lambda: nodes[1].client.jobs(role="party", states=["awaiting_approval"]), 20,
               "the source job in bob's inbox")
    nodes[0].client.cancel(job["id"], "test over")
    # a policy of kind "any" (for an owner's own nodes) approves source code too, from that
    # orchestrator's key only; it is the one way to approve without a person
    for node in nodes:
        node.client.add_policy("alice", "any")
    job = nodes[0].client.submit(spec(nodes, source, [("wages", 0, "dataset")]))
    done = nodes[0].client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(data[0].sum(), abs=0.05)
    party = nodes[2].client.job(job["id"], role="party")
    assert party["detail"]["approved_by"] == ("approved by the owner's policy: every job from "
                                              f"alice ({nodes[0].node_id})")
    assert {p["kind"] for p in nodes[2].client.policies()} == {"statistics", "any"}
    bob_job = nodes[1].client.submit(spec(nodes, source, [("wages", 0, "dataset")]))
    wait_until(lambda: [j for j in nodes[2].client.jobs(role="party",
                                                         states=["awaiting_approval"])
                        if j["id"] == bob_job["id"]], 20, "bob's source job in carol's inbox")
    nodes[1].client.cancel(bob_job["id"], "test over")
    # and a node cannot be started to approve everything from everyone
    out = subprocess.run([sys.executable, "-m", "node.cli", "node", "--auto-approve",
                          "--data-dir", str(tmp_path / "nobody")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "unrecognized arguments: --auto-approve" in out.stderr


def test_training_and_inference_plans_with_review(make_node, tmp_path):
    from resources import path as resource

    alice, bob, carol = (make_node(n) for n in ("alice", "bob", "carol"))
    alice.client.publish(resource("alice_features.csv"), tags=["bc-a"])
    bob.client.publish(resource("bob_features.csv"), tags=["bc-b"])
    carol.client.publish(resource("carol_labels.csv"), tags=["bc-y"])
    plan = {"kind": "train", "model": "logistic", "features": [{"tag": "bc-a", "rank": 0},
                                                               {"tag": "bc-b", "rank": 1}],
            "labels": {"tag": "bc-y", "rank": 2}, "epochs": 10,
            "learning_rate": 1.0, "output_to": 2}
    job = carol.client.submit(_plan_spec([alice, bob, carol], plan, "train"))
    done = carol.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    value = results(done)[2]
    assert float(value["accuracy"]) > 0.9
    assert np.asarray(value["weights"]).shape == (30, 1)

    review = bob.client.job(job["id"], role="party")["detail"]["review"]
    assert review["code_kind"] == "train"
    assert "def run_training(crypten):" in review["source"]
    assert [r["to"] for r in review["reveals"]] == ["rank 2 (carol)"] * 3
    here = [r for r in review["reads"] if r["here"]]
    assert [r["tag"] for r in here] == ["bc-b"] and here[0]["schema"]["shape"] == [399, 15]
    assert review["cost"] == "loops run about 10 times in all"

    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-rows"])
    plan = {"kind": "inference", "model": {"tag": "bc-model", "rank": 0},
            "data": {"tag": "bc-rows", "rank": 1}, "output_to": 1}
    done = carol.client.wait(carol.client.submit(_plan_spec([alice, bob], plan))["id"],
                             timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert np.asarray(results(done)[1]).shape == (399, 2)


def test_review_diff_reveal_control_and_static_refusal(make_node, tmp_path):
    alice, bob = make_node("alice", auto_approve=False), make_node("bob", auto_approve=False)
    for node in (alice, bob):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", np.ones((4, 4))),
                            tags=["nums"])
    v1 = ("def run(crypten):\n    x = crypten.load('nums', 1)\n"
          "    return x.sum().get_plain_text(dst=0)\n")
    body = spec([alice, bob], v1, [("nums", 1, "dataset")])
    body["title"] = "totals"
    job = alice.client.submit(body)
    for node in (alice, bob):
        rec = wait_until(lambda n=node: n.client.jobs(role="party", states=["awaiting_approval"]),
                         20, "proposal")[0]
        node.client.approve(rec["id"], rec["proposal_hash"])
    assert alice.client.wait(job["id"], timeout=JOB_TIMEOUT)["state"] == "succeeded"

    # version 2 reveals to rank 1, which its reveal map does not allow: the owner sees the
    # diff and the reveal in review, and the jail stops it at run time anyway
    v2 = v1.replace("x.sum().get_plain_text(dst=0)", "x.get_plain_text(dst=1)")
    body = spec([alice, bob], v2, [("nums", 1, "dataset")])
    body["title"] = "totals"
    job = alice.client.submit(body)
    rec = wait_until(lambda: bob.client.jobs(role="party", states=["awaiting_approval"]), 20,
                     "v2 in bob's inbox")[0]
    shown = subprocess.run([sys.executable, "-m", "node.cli", "show", rec["id"], "--data-dir",
                            str(bob.data_dir)], capture_output=True, text=True, timeout=60)
    assert "-    return x.sum().get_plain_text(dst=0)" in shown.stdout
    assert "+    return x.get_plain_text(dst=1)" in shown.stdout
    assert "line 3: to rank 1 (bob)" in shown.stdout
    assert "nums (dataset, rank 1, HERE)" in shown.stdout
    for node in (alice, bob):
        r = [j for j in node.client.jobs(role="party") if j["id"] == job["id"]][0]
        node.client.approve(r["id"], r["proposal_hash"])
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "failed"
    assert "revealing to rank 1 is not in the reveal map" in done["reason"], done["reason"]

    # the static check refuses before any owner is asked
    bad = "def run(crypten):\n    import os\n    return 1\n"
    done = alice.client.wait(alice.client.submit(spec([alice, bob], bad, []))["id"], timeout=30)
    assert done["state"] == "failed"
    assert "refused the proposal: line 2" in done["reason"], done["reason"]
    assert "no-imports" in done["reason"]


def test_dry_run_from_the_cli(make_node, tmp_path):
    alice = make_node("alice")
    alice.client.publish(write_csv(tmp_path / "a.csv", np.arange(8.0).reshape(2, 4)),
                         tags=["mock"])
    good = tmp_path / "good.py"
    good.write_text("def run(crypten):\n    x = crypten.load('mock', 1)\n"
                    "    return x.sum(0).get_plain_text(dst=1)\n")
    out = subprocess.run([sys.executable, "-m", "node.cli", "dry-run", str(good), "--data-dir",
                          str(alice.data_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dry run succeeded" in out.stdout and "[ 4.  6.  8. 10.]" in out.stdout
    evil = tmp_path / "evil.py"
    evil.write_text("def run(crypten):\n    return crypten.load('mock', 0).share\n")
    out = subprocess.run([sys.executable, "-m", "node.cli", "dry-run", str(evil), "--data-dir",
                          str(alice.data_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "refused" in out.stdout and "share" in out.stdout and "Traceback" not in out.stdout


README_JOB = """def run(crypten):
    data = crypten.load("cohort-2025", 1)
    model = crypten.load_model("risk-model")
    return model(data).get_plain_text(dst=1)
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_a_dry_run_makes_mock_data_for_the_tags_it_names(make_node, tmp_path):
    """The README's job dry-runs on a node that holds none of its tags; a tag a paired peer
    publishes gets that peer's shape; the time limit is the owner's."""
    alice, bob = make_node("alice"), make_node("bob")
    job = tmp_path / "job.py"
    job.write_text(README_JOB)
    out = _cli("dry-run", str(job), "--data-dir", str(alice.data_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mock data for 'cohort-2025' (dataset" in out.stdout
    assert "mock data for 'risk-model' (model" in out.stdout
    assert "dry run succeeded" in out.stdout

    bob.client.publish(write_csv(tmp_path / "b.csv", np.ones((3, 5)), "a,b,c,d,e"),
                       tags=["wide"])
    wide = tmp_path / "wide.py"
    wide.write_text("def run(crypten):\n    x = crypten.load('wide', 1)\n"
                    "    return x.sum(0).get_plain_text(dst=0)\n")
    out = _cli("dry-run", str(wide), "--json", "--data-dir", str(alice.data_dir))
    answer = json.loads(out.stdout)
    assert answer["state"] == "succeeded", answer["reason"]
    assert answer["mocked"] == [{"tag": "wide", "kind": "dataset",
                                 "shaped_like": "a paired peer's catalog"}]
    total = np.asarray(decode(answer["result"])).reshape(-1)
    assert total.shape == (5,) and not np.allclose(total, 3.0)  # bob's shape, not his values

    slow = tmp_path / "slow.py"
    slow.write_text("def run(crypten):\n    x = crypten.load('wide', 1)\n"
                    "    for _ in range(100000):\n        x = x * x\n"
                    "    return x.get_plain_text(dst=0)\n")
    out = _cli("dry-run", str(slow), "--time-limit", "3", "--data-dir", str(alice.data_dir))
    assert out.returncode == 1 and "time limit of 3 s" in out.stdout, out.stdout


def test_a_received_proposal_dry_runs_from_the_cli_under_its_own_limits(make_node, tmp_path):
    alice, bob = make_node("alice", auto_approve=False), make_node("bob", auto_approve=False)
    bob.client.publish(write_csv(tmp_path / "b.csv", np.ones((3, 4))), tags=["rows"])
    source = ("def run(crypten):\n    x = crypten.load('rows', 1)\n"
              "    for _ in range(100000):\n        x = x * x\n"
              "    return x.get_plain_text(dst=0)\n")
    job = bob.client.submit({"title": "slow", "source": source,
                             "parties": [{"name": alice.node_id}, {"name": bob.node_id}],
                             "bindings": [{"tag": "rows", "rank": 1, "kind": "dataset"}],
                             "limits": {"time_s": 4}})
    wait_until(lambda: alice.client.jobs(role="party"), 30, "the proposal at alice")
    out = _cli("dry-run", job["id"], "--data-dir", str(alice.data_dir))
    assert out.returncode == 1 and "time limit of 4 s" in out.stdout, out.stdout + out.stderr
    bob.client.cancel(job["id"])


def test_without_os_confinement_only_plans_are_accepted(tmp_path):
    async def scenario():
        node = Node(tmp_path, "old-kernel")
        node.confinement = {"seccomp": "unavailable", "landlock": "unavailable"}
        body = {"version": 1, "job_id": "j-00000000000000aa", "title": "t",
                "orchestrator": {"name": "x", "url": "https://127.0.0.1:1", "node_id": "n-x"},
                "parties": [{"name": "a", "url": "https://a", "node_id": "n-a", "rank": 0},
                            {"name": "b", "url": "https://b", "node_id": "n-b", "rank": 1}],
                "code": {"kind": "source", "source": "def run(crypten):\n    return 1\n",
                         "entry": "run"},
                "bindings": [], "reveal": {"to": [0], "everyone": False, "budget": 10,
                                           "result_to": [0]}}
        with pytest.raises(ProposalError, match="accepts plans only"):
            await node.receive_proposal({"proposal": body, "rank": 0})
        node.accept_reduced_isolation = True
        job = await node.receive_proposal({"proposal": body, "rank": 0})
        assert job.state == "awaiting_approval"
        await node.close()

    asyncio.run(scenario())

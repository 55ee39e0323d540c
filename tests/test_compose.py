"""The node's side of composing a job in the app: the check before sending, the static check
for an editor, live progress and output, the benchmark of a finished job, and job files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from node.client import results
from resources import path as resource
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import write_csv


def _inference(parties, data_tag: str = "bc-inference") -> dict:
    return {"title": "hiding", "parties": [{"name": n.node_id} for n in parties],
            "plan": {"kind": "inference", "model": {"tag": "bc-model", "rank": 0},
                     "data": {"tag": data_tag, "rank": 1}, "output_to": 1}}


def test_a_job_is_checked_against_the_parties_catalogs_before_it_is_sent(make_node, tmp_path):
    alice, bob, carol = (make_node(n) for n in ("alice", "bob", "carol"))
    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])
    bob.client.publish(resource("bob_features.csv"), tags=["narrow"])
    check = lambda spec: carol.client.call("POST", "/admin/v1/compose/check", spec)  # noqa: E731

    good = check(_inference([alice, bob]))
    assert good["ok"] and good["problems"] == []
    assert "crypten.load_model('bc-model')" in good["source"] or "bc-model" in good["source"]
    assert [q["name"] for q in good["parties"]] == ["alice", "bob"]
    assert good["estimate"]["basis"].startswith("a rough guess")

    narrow = check(_inference([alice, bob], "narrow"))
    assert not narrow["ok"]
    assert narrow["problems"] == ["the model 'bc-model' at alice takes 30 inputs, but 'narrow' "
                                  "at bob has 15 columns"]
    missing = check(_inference([alice, bob], "nowhere"))
    assert missing["problems"] == ["bob holds no asset tagged 'nowhere'"]

    rows = {"title": "train", "parties": [{"name": n.node_id} for n in (alice, bob)],
            "plan": {"kind": "train", "model": "logistic",
                     "features": [{"tag": "f", "rank": 0}, {"tag": "f", "rank": 1}],
                     "labels": {"tag": "f", "rank": 1}, "output_to": 0}}
    alice.client.publish(write_csv(tmp_path / "a.csv", np.ones((10, 4))), tags=["f"])
    bob.client.publish(write_csv(tmp_path / "b.csv", np.ones((12, 4))), tags=["f"])
    differ = check(rows)
    assert len(differ["problems"]) == 1 and "the parties' rows differ" in differ["problems"][0]
    assert "'f' at alice: 10" in differ["problems"][0] and "'f' at bob: 12" in \
        differ["problems"][0]

    source = {"title": "s", "parties": [{"name": n.node_id} for n in (alice, bob)],
              "source": "def run(crypten):\n    x = crypten.load('bc-inference', 1)\n"
                        "    return x.sum().get_plain_text(dst=1)\n",
              "bindings": [{"tag": "bc-inference", "rank": 1, "kind": "dataset"}],
              "result_to": [0], "reveal_to": [0]}
    nobody = check({**source, "result_to": []})
    assert "no result comes back to anyone: choose who receives it" in nobody["problems"]
    assert "line 3 reveals to rank 1, which the job's reveal map does not allow" in \
        nobody["problems"]
    bad = check({**source, "source": "def run(crypten):\n    import os\n"})
    assert any(p.startswith("the static check refuses the code: line 2") for p in
               bad["problems"])
    unknown = check({**source, "parties": [{"name": "nobody"}, {"name": bob.node_id}]})
    assert not unknown["ok"] and "nobody" in unknown["problems"][0]


def test_the_static_check_alone_for_an_editor(make_node):
    alice = make_node("alice")
    out = alice.client.call("POST", "/admin/v1/check-source",
                            {"source": "def run(crypten):\n    x = 1\n    y = x.__class__\n",
                             "entry": "run"})
    assert [(p["line"], p["rule"]) for p in out["problems"]] == [(3, "no-underscore")]
    assert alice.client.call("POST", "/admin/v1/check-source", {
        "source": "def run(crypten):\n    return 1\n"})["problems"] == []


PRINTING_JOB = '''
def run(crypten):
    x = crypten.load("nums", 0)
    y = x
    for i in range(3000):
        y = y * x
        if i % 1000 == 0:
            print(f"step {i}")
    return y.sum().get_plain_text(dst=0)
'''


def test_progress_and_output_while_a_job_runs(make_node, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    alice.client.publish(write_csv(tmp_path / "a.csv", np.ones((4, 4))), tags=["nums"])
    job = bob.client.submit({"title": "printing", "source": PRINTING_JOB,
                             "parties": [{"name": alice.node_id}, {"name": bob.node_id}],
                             "bindings": [{"tag": "nums", "rank": 0, "kind": "dataset"}],
                             "result_to": [0]})
    progress = wait_until(lambda: [q.get("progress") for q in bob.client.orchestration(
        job["id"])["detail"].get("parties", {}).values() if q.get("progress")], 60,
        "a party's progress at the orchestrator")
    assert progress[0]["phase"] == "computing" and progress[0]["elapsed_s"] >= 0
    done = bob.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == 16.0
    mine = alice.client.job(job["id"], role="party")
    assert mine["detail"]["output"] == ["step 0", "step 1000", "step 2000"]
    # what a party printed stays with its owner: the orchestrator never sees it
    assert "step 0" not in json.dumps(done)
    assert all("output" not in q for q in done["detail"]["parties"].values())


def test_a_finished_job_is_benchmarked_against_plain_crypten_and_plaintext(make_node,
                                                                           tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    for node, seed in ((alice, 1), (bob, 2)):
        rows = np.random.default_rng(seed).normal(50, 10, size=(40, 3))
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", rows, "a,b,c"),
                            tags=["wages"])
    spec = {"title": "stats", "parties": [{"name": alice.node_id}, {"name": bob.node_id}],
            "plan": {"kind": "statistics", "data": [{"tag": "wages", "rank": 0},
                                                    {"tag": "wages", "rank": 1}],
                     "stats": ["count", "mean", "variance", "histogram"],
                     "histogram": {"column": 0, "edges": [0, 40, 60, 100]}, "output_to": 0}}
    done = alice.client.wait(alice.client.submit(spec)["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    bench = alice.client.call("POST", f"/admin/v1/orchestrations/{done['id']}/benchmark", {},
                              timeout=300)
    assert bench["parley"]["seconds"] > 0 and bench["crypten"]["seconds"] > 0
    assert bench["plaintext"]["seconds"] > 0
    assert bench["crypten"]["phases"]["compute_s"] > 0
    assert bench["overhead"]["parley_vs_crypten"] > 0
    assert bench["overhead"]["crypten_vs_plaintext"] > 1  # MPC costs more than numpy
    # after the first run, the estimate comes from it
    check = alice.client.call("POST", "/admin/v1/compose/check", spec)
    assert check["estimate"]["basis"] == "the mean of the last 1 statistics job(s) this node sent"
    assert check["estimate"]["rounds"] > 0


def test_a_job_file_from_the_app_is_what_parley_submit_takes(make_node, tmp_path):
    alice = make_node("alice")
    make_node("bob")  # the job's second party
    alice.client.publish(write_csv(tmp_path / "a.csv", np.full((3, 4), 2.0)), tags=["nums"])
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({
        "title": "from a file", "parties": [{"name": "alice"}, {"name": "bob"}],
        "source": "def run(crypten):\n    return crypten.load('nums', 0).sum()"
                  ".get_plain_text(dst=0)\n",
        "entry": "run", "bindings": [{"tag": "nums", "rank": 0, "kind": "dataset"}],
        "result_to": [0]}))
    out = subprocess.run([sys.executable, "-m", "node.cli", "submit", str(job_file), "--wait",
                          "--json", "--data-dir", str(alice.data_dir)], capture_output=True,
                         text=True, timeout=JOB_TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
    done = json.loads(out.stdout)
    assert done["title"] == "from a file" and results(done)[0] == 24.0

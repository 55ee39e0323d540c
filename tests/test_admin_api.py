"""The owner's admin API, rule by rule, on an in-process node (tests/inprocess.py): who may
call it, what it refuses and in which words, and that a refusal loses nothing. What needs
parties, peers or the command line is tested against real node processes elsewhere."""

from __future__ import annotations

import pytest

from tests.inprocess import AppNode


async def test_every_call_needs_the_nodes_token(node_app: AppNode) -> None:
    for token in ("", "wrong-token"):
        status, problem = await node_app.call("GET", "/status", token=token)
        assert status == 401 and "admin token" in problem["detail"], problem
    status, answer = await node_app.call("GET", "/status")
    assert status == 200 and answer["name"] == "owner" and answer["id"] == node_app.node.node_id


async def test_a_body_that_is_not_json_or_nests_too_deep_is_a_problem(node_app: AppNode) -> None:
    status, problem = await node_app.call("POST", "/policies", raw=b'{"orchestrator": not json')
    assert status == 422 and problem["detail"] == "the request body is not valid JSON"
    status, problem = await node_app.call("POST", "/policies", raw=b"[" * 5000 + b"]" * 5000)
    assert status == 400 and problem["type"].endswith("/json-too-deep"), problem
    assert (await node_app.call("GET", "/policies"))[1] == {"policies": []}


async def test_standing_approvals_bind_to_a_paired_key_and_name_their_kinds(
        node_app: AppNode) -> None:
    status, problem = await node_app.call("POST", "/policies",
                                       {"orchestrator": "nobody", "kind": "train"})
    assert status == 404 and "nobody" in problem["detail"], problem
    status, problem = await node_app.call("POST", "/policies",
                                       {"orchestrator": "owner", "kind": "everything"})
    assert status == 422, problem
    assert problem["detail"] == ("the job kind must be one of inference, train, statistics, "
                                 "source, any, not 'everything'")
    # its own jobs, every kind: the one way a node approves without its owner
    status, added = await node_app.call("POST", "/policies", {"orchestrator": "owner",
                                                          "kind": "any"})
    assert status == 201 and added == {"orchestrator": "owner", "node_id": node_app.node.node_id,
                                       "kind": "any"}
    assert node_app.node.jobs.policy_allows(node_app.node.node_id, "source") == "any"
    assert node_app.node.jobs.policy_allows(node_app.node.node_id, "train") == "any"
    assert node_app.node.jobs.policy_allows("n-someoneelse", "train") is None
    status, problem = await node_app.call("DELETE", "/policies", {"orchestrator": "owner",
                                                              "kind": "train"})
    assert status == 422 and "no policy approves train jobs from owner" in problem["detail"]
    assert (await node_app.call("DELETE", "/policies", {"orchestrator": "owner",
                                                     "kind": "any"}))[0] == 200
    status, audit = await node_app.call("GET", "/audit?kind=policy")
    assert [e["fields"]["event"] for e in audit["entries"]] == ["added", "removed"]
    assert audit["verify"]["ok"]


async def test_a_file_that_cannot_be_read_is_refused_and_nothing_is_stored(
        node_app: AppNode, tmp_path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n")
    status, problem = await node_app.call("POST", "/assets", {"path": str(ragged),
                                                          "tags": ["wages"]})
    assert status == 422 and "line 3" in problem["detail"], problem
    status, problem = await node_app.call("POST", "/assets", {"path": str(tmp_path / "none.csv"),
                                                          "tags": ["wages"]})
    assert 400 <= status < 500 and "none.csv" in problem["detail"], problem
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n3,4\n")
    status, problem = await node_app.call("POST", "/assets", {"path": str(good),
                                                          "tags": ["-not-a-tag"]})
    assert status == 400 and "beginning with a letter or a digit" in problem["detail"], problem
    status, problem = await node_app.call("POST", "/assets", {"path": str(good), "tags": ["w"],
                                                          "privacy": {"min_rows": 0}})
    assert status == 400 and problem["detail"].startswith("min_rows must be a"), problem
    assert (await node_app.call("GET", "/assets"))[1]["assets"] == []
    status, asset = await node_app.call("POST", "/assets", {"path": str(good), "tags": ["w"]})
    assert status == 201 and asset["tags"] == ["w"] and asset["schema"]["shape"] == [2, 2]


async def test_unknown_jobs_and_unreviewed_approvals_are_refused(node_app: AppNode) -> None:
    status, problem = await node_app.call("GET", "/jobs/j-0000000000000000")
    assert status == 404 and "j-0000000000000000" in problem["detail"], problem
    status, problem = await node_app.call("POST", "/jobs/j-0000000000000000/approve",
                                       {"proposal_hash": "abc"})
    assert status in (404, 422) and "j-0000000000000000" in problem["detail"], problem
    assert (await node_app.call("GET", "/jobs"))[1]["jobs"] == []


@pytest.mark.parametrize(("parties", "status", "says"), [
    ([], 422, "proposal parties: must list 2 to 16 parties"),
    ([{"name": "ghost", "node_id": "n-ghost"}, {"name": "owner"}], 404,
     "no peer named 'n-ghost'"),
])
async def test_a_job_for_no_one_or_a_stranger_is_not_sent(node_app: AppNode, parties, status,
                                                          says) -> None:
    source = "def run(crypten):\n    return 1\n"
    got, problem = await node_app.call("POST", "/orchestrations", {
        "title": "t", "source": source, "entry": "run", "parties": parties, "bindings": [],
        "result_to": [0]})
    assert got == status and problem["detail"].startswith(says), problem
    assert (await node_app.call("GET", "/jobs"))[1]["jobs"] == []


async def test_a_published_model_s_imports_leave_the_collector_s_sight(
        node_app: AppNode, tmp_path) -> None:
    """Checking a model imports torch and CrypTen into the node; the node then freezes what is
    alive, so that no full collection walks those modules on its event loop (an 84 ms stall
    in a bench run before)."""
    import gc

    import torch

    from node.compat import onnx_bytes_from_pytorch

    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_bytes_from_pytorch(torch.nn.Linear(4, 2), torch.randn(1, 4)))
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    status, asset = await node_app.call("POST", "/assets", {"path": str(model), "tags": ["m"]})
    assert status == 201 and asset["kind"] == "model", asset
    assert gc.get_freeze_count() > 100_000  # torch alone is more than that
    gc.unfreeze()

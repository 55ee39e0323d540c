"""A model's architecture in a proposal: what it holds, that parties rebuilt from it compute what
the owner's model computes, that an owner's node refuses a job proposed for another asset than
the one it holds, and that a graph too large for a proposal is refused with a reason."""

from __future__ import annotations

import base64
import copy
import io
import json
import multiprocessing
import os
import queue as queue_module
import traceback
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from node import architecture, review
from node import proposal as proposals
from node.compat import onnx_bytes_from_pytorch
from node.errors import ModelError, ProposalError
from node.store import Store
from resources import path as resource
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import write_csv
from tests.test_units import GOOD


def _mlp(seed: int = 0, width: int = 6, hidden: int = 16, out: int = 3) -> bytes:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, out))
    return onnx_bytes_from_pytorch(model, torch.randn(2, width))


def _with_big_constant(values: int) -> bytes:
    """x + c, where the graph holds ``values`` floats as a Constant node (weights in the graph
    rather than in initializers, as some exporters write them)."""
    const = numpy_helper.from_array(np.ones(values, dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=const),
         helper.make_node("Add", ["x", "c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, values])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, values])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# -- what an architecture holds ---------------------------------------------------------------


def test_the_architecture_is_the_graph_without_weights():
    data = resource("alice_model.onnx").read_bytes()
    arch = architecture.of_model(data)
    assert arch == architecture.of_model(data)  # deterministic: same model, same text
    graph = onnx.load_model_from_string(base64.b64decode(arch)).graph
    real = onnx.load_model_from_string(data).graph
    assert [n.op_type for n in graph.node] == [n.op_type for n in real.node]
    assert [(i.name, list(i.dims), i.data_type) for i in graph.initializer] == [
        (i.name, list(i.dims), i.data_type) for i in real.initializer]
    assert all(not i.raw_data and not i.float_data for i in graph.initializer)
    assert all(not n.name and not n.doc_string for n in graph.node)
    assert len(base64.b64decode(arch)) < len(data) // 5

    described = architecture.describe(arch)
    assert described["parameters"] == 16 * 30 + 16 + 2 * 16 + 2 and described["tensors"] == 4
    assert architecture.lines(described)[:3] == ["Gemm  0.weight 16×30, 0.bias 16", "Relu",
                                                 "Gemm  2.weight 2×16, 2.bias 2"]
    rebuilt = onnx.load_model_from_string(architecture.rebuild(arch))
    assert all(not numpy_helper.to_array(i).any() for i in rebuilt.graph.initializer)
    assert [list(i.dims) for i in rebuilt.graph.initializer] == [[16, 30], [16], [2, 16], [2]]


def test_an_architecture_holding_weights_or_nonsense_is_refused():
    model = onnx.load_model_from_string(_mlp())
    with_weights = base64.b64encode(model.SerializeToString()).decode()
    with pytest.raises(ProposalError, match="holds the values of"):
        architecture.parse(with_weights)
    with pytest.raises(ProposalError, match="not a base64 ONNX graph"):
        architecture.parse("not base64!")
    p = copy.deepcopy(GOOD)
    p["bindings"] = [{"tag": "m", "rank": 0, "kind": "model",
                      "expect": {"architecture": with_weights}}]
    with pytest.raises(ProposalError, match=r"bindings\[0\].expect.architecture: .*values"):
        proposals.validate(p)
    p["bindings"] = [{"tag": "m", "rank": 0, "kind": "model", "expect": {"shape": [1, 2]}}]
    with pytest.raises(ProposalError, match="a model binding may expect architecture only"):
        proposals.validate(p)
    p["bindings"] = [{"tag": "d", "rank": 0, "kind": "dataset",
                      "expect": {"shape": [3, 2], "labels": "yes"}}]
    with pytest.raises(ProposalError, match="expect.labels"):
        proposals.validate(p)


def test_an_oversize_architecture_is_refused_at_import_and_in_a_proposal(tmp_path):
    big = _with_big_constant(200_000)  # 800 KB of constants inside the graph
    with pytest.raises(ModelError, match=r"over the 512 KB a proposal may carry.*Constant"):
        architecture.of_model(big)
    with Store(tmp_path / "data") as store:
        with pytest.raises(ModelError, match=r"big.onnx cannot be used in jobs: its graph "
                                             r"without weights is 7\d\d KB"):
            (tmp_path / "big.onnx").write_bytes(big)
            store.import_onnx(tmp_path / "big.onnx")
        assert store.list() == []
        small = store.import_onnx(_with_big_constant(1000), tags=["small"])
        assert architecture.describe(small.schema["architecture"])["constants"] == 1000
    p = copy.deepcopy(GOOD)
    p["bindings"] = [{"tag": "m", "rank": 0, "kind": "model",
                      "expect": {"architecture": "A" * (architecture.MAX_BYTES * 2)}}]
    with pytest.raises(ProposalError, match="at most 512 KB: its graph without weights is "
                                            "768 KB"):
        proposals.validate(p)


def test_a_store_from_before_architectures_gets_them_when_opened(tmp_path):
    data = _mlp()
    with Store(tmp_path / "data") as store:
        asset = store.import_onnx(data, tags=["m"])
        assert asset.schema["architecture"] == architecture.of_model(data)
        with store._write() as db:  # as an older Parley wrote it
            schema = {k: v for k, v in asset.schema.items() if k != "architecture"}
            db.execute("UPDATE assets SET schema = ? WHERE id = ?",
                       (json.dumps(schema), asset.id))
        assert "architecture" not in store.get(asset.id).schema
        version = store.catalog_version()
    with Store(tmp_path / "data") as store:
        assert store.get(asset.id).schema["architecture"] == architecture.of_model(data)
        assert store.catalog_version() == version + 1  # peers read the catalog again


# -- the owner's node checks the proposal against what it holds --------------------------------


def _proposal(*bindings: dict[str, Any]) -> dict[str, Any]:
    p = copy.deepcopy(GOOD)
    p["bindings"] = list(bindings)
    return proposals.validate(p)


def test_a_job_for_another_asset_than_the_one_held_is_refused_by_its_owner(tmp_path):
    with Store(tmp_path / "data") as store:
        model = store.import_onnx(_mlp(seed=0), tags=["risk"])
        rows = store.import_csv(write_csv(tmp_path / "rows.csv", np.ones((5, 4))), tags=["rows"])
        p = _proposal(
            {"tag": "risk", "rank": 0, "kind": "model",
             "expect": proposals.expectations("model", model.schema)},
            {"tag": "rows", "rank": 0, "kind": "dataset",
             "expect": proposals.expectations("dataset", rows.schema)})
        assets = proposals.check_against_store(p, 0, store)
        assert assets["rows"]["0"]["shapes"] == {"features": [5, 4]}
        assert assets["risk"]["0"]["architecture"] == model.schema["architecture"]
        # what the other party is told: the same, without the asset id (the minimum of rows
        # per reveal too: every party enforces it)
        other = proposals.check_against_store(p, 1, store)
        assert other["rows"]["0"] == {"rank": 0, "kind": "dataset", "min_rows": 10,
                                      "shapes": {"features": [5, 4]}}

        # published again: other weights do not matter, another graph does
        store.remove(model.id)
        store.import_onnx(_mlp(seed=1), tags=["risk"])
        assert proposals.check_against_store(p, 0, store)
        store.remove(store.by_tag("risk").id)
        store.import_onnx(_mlp(seed=0, hidden=12), tags=["risk"])
        with pytest.raises(ProposalError, match="'risk' here is not the model the job was "
                                                "proposed with: its architecture differs"):
            proposals.check_against_store(p, 0, store)

        store.remove(store.by_tag("risk").id)
        store.import_onnx(_mlp(seed=0), tags=["risk"])
        store.remove(rows.id)
        store.import_csv(write_csv(tmp_path / "more.csv", np.ones((6, 4))), tags=["rows"])
        with pytest.raises(ProposalError, match=r"'rows' here has shape \[6, 4\], but the job "
                                                r"expects \[5, 4\]"):
            proposals.check_against_store(p, 0, store)
        # another party does not hold it: it takes the proposal's word
        assert proposals.check_against_store(p, 1, store)["rows"]["0"]["shapes"] == {
            "features": [5, 4]}


def test_a_review_shows_the_stated_shapes_and_architecture(tmp_path):
    with Store(tmp_path / "data") as store:
        model = store.import_onnx(resource("alice_model.onnx").read_bytes(), tags=["risk"])
        p = _proposal(
            {"tag": "risk", "rank": 0, "kind": "model",
             "expect": proposals.expectations("model", model.schema)},
            {"tag": "rows", "rank": 1, "kind": "dataset",
             "expect": {"shape": [399, 30], "labels": True, "label_shape": [399]}})
        names = {"orchestrator": "carol", "parties": {"0": "alice", "1": "bob"}}
        material = review.build(p, 0, store, None, names)
    risk, rows = material["reads"]
    assert risk["here"] and "architecture" not in risk["schema"]  # the blob is not repeated
    assert risk["architecture"][0] == "Gemm  0.weight 16×30, 0.bias 16"
    assert rows["shape"] == [399, 30] and not rows["here"]
    text = review.render_text({"id": "j-1", "state": "awaiting_approval", "reason": "",
                               "proposal_hash": "h", "proposal": p,
                               "detail": {"review": material}})
    assert "rows (dataset, rank 1, at bob): shape 399 × 30, labels 399" in text
    assert "      Gemm  2.weight 2×16, 2.bias 2" in text


# -- parties rebuilt from the architecture ----------------------------------------------------


def _party(rank: int, rendezvous: str, assets: dict[str, Any], results: Any) -> None:
    """One party in its own spawned process: the job API's loads, then an inference."""
    try:
        os.environ.update(DISTRIBUTED_BACKEND="gloo", RENDEZVOUS=rendezvous, WORLD_SIZE="2",
                          RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
        torch.set_num_threads(1)
        from node.compat import crypten
        from node.jail.job_api import JobCrypten

        crypten.init()
        crypten.cfg.communicator.verbose = True
        comm = crypten.communicator.get()
        out = {}
        for way in ("stated", "told"):  # from the proposal, then broadcast by the owner
            comm.reset_communication_stats()
            api = JobCrypten(rank, 2, assets[way])
            model = api.load_model("m")
            x = api.load("x", 1)
            loaded = comm.get_communication_stats()
            value = model(x).get_plain_text(dst=1)
            out[way] = {"rounds": int(loaded["rounds"]), "bytes": int(loaded["bytes"]),
                        "value": None if value is None else value.numpy()}
        results.put((rank, "ok", out))
        crypten.uninit()
    except BaseException:  # noqa: BLE001 - report, don't hang the test
        results.put((rank, "error", traceback.format_exc()))


@pytest.mark.timeout(240)
def test_parties_rebuilt_from_the_architecture_compute_the_owners_model(tmp_path):
    from node.compat import crypten

    data = _mlp(seed=3)
    arch = architecture.of_model(data)
    rows = np.random.default_rng(0).standard_normal((7, 6)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, rows)
    stated = {"m": {"0": {"rank": 0, "kind": "model", "architecture": arch}},
              "x": {"1": {"rank": 1, "kind": "dataset", "shapes": {"features": [7, 6]}}}}
    told = {"m": {"0": {"rank": 0, "kind": "model"}}, "x": {"1": {"rank": 1, "kind": "dataset"}}}
    per_rank = []
    for rank in (0, 1):
        mine = {way: copy.deepcopy(entries) for way, entries in (("stated", stated),
                                                                 ("told", told))}
        for entries in mine.values():
            if rank == 0:
                entries["m"]["0"]["data"] = {"model": data}
            else:
                entries["x"]["1"]["data"] = {"features": buf.getvalue()}
        per_rank.append(mine)

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_party, args=(r, rendezvous, per_rank[r], results), daemon=True)
             for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        by_rank = {}
        for _ in procs:
            try:
                rank, status, payload = results.get(timeout=JOB_TIMEOUT)
            except queue_module.Empty:
                pytest.fail(f"parties did not report (exit codes {[p.exitcode for p in procs]})")
            assert status == "ok", f"party {rank} failed:\n{payload}"
            by_rank[rank] = payload
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()

    plain = crypten.nn.from_onnx(io.BytesIO(data))(torch.from_numpy(rows)).detach().numpy()
    for way in ("stated", "told"):
        assert np.abs(by_rank[1][way]["value"] - plain).max() < 1e-2, way
    # stated in the proposal, loading sends nothing; told by the owner, it costs rounds
    assert all(by_rank[r]["stated"]["rounds"] == 0 and by_rank[r]["stated"]["bytes"] == 0
               for r in (0, 1))
    assert all(by_rank[r]["told"]["rounds"] == 4 for r in (0, 1))


# -- the same end to end: submit states, the owner's node checks at start -----------------------


def test_a_model_published_again_after_approval_stops_the_job_at_start(make_node, tmp_path):
    alice = make_node("alice", auto_approve=False)
    bob = make_node("bob", auto_approve=False)
    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])
    job = bob.client.submit({
        "title": "inference", "parties": [alice.party.spec(), bob.party.spec()],
        "plan": {"kind": "inference", "model": {"tag": "bc-model", "rank": 0},
                 "data": {"tag": "bc-inference", "rank": 1}, "output_to": 1}})
    p = bob.client.orchestration(job["id"])["proposal"]
    model, rows = p["bindings"]
    assert architecture.describe(model["expect"]["architecture"])["parameters"] == 530
    assert rows["expect"] == {"shape": [399, 30], "labels": False, "min_rows": 1, "dp": False}
    received = wait_until(lambda: alice.client.jobs(role="party", states=["awaiting_approval"]),
                          30, "the proposal at alice")[0]
    review_material = alice.client.call("GET", f"/admin/v1/jobs/{job['id']}/review")
    assert review_material["reads"][1]["shape"] == [399, 30]

    # alice replaces her model with another graph under the same tag, then approves
    old = alice.client.assets()[0]
    alice.client.remove_asset(old["id"])
    other = tmp_path / "other.onnx"
    other.write_bytes(_mlp(width=30, hidden=8, out=2))
    alice.client.publish(other, tags=["bc-model"])
    for node in (alice, bob):
        rec = wait_until(lambda n=node: [j for j in n.client.jobs(role="party")
                                         if j["id"] == job["id"]], 20, "proposal")[0]
        node.client.approve(job["id"], rec["proposal_hash"])
    done = bob.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "failed"
    assert "'bc-model' here is not the model the job was proposed with" in done["reason"], \
        done["reason"]
    assert received["id"] == job["id"]

"""A Parley job sends what the same computation written as a plain CrypTen script sends.

Per party, rounds and bytes (CrypTen's own counters, verbose on) of a job run on real nodes
equal those of two plain CrypTen processes that know the shapes and the model's architecture
out of band, as a native user would. The Parley party resets its counters just before the job's
code runs, so its loads count; the native script resets them after ``crypten.init()``, before
loading. Anything Parley adds on the wire (a broadcast of a shape, of an architecture) shows
here as a difference.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from datetime import timedelta
from typing import Any

import numpy as np

from node.client import results
from resources import path as resource
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import write_csv

INFERENCE_BITS = 20
STATS = ["sum", "mean", "variance", "histogram"]
EDGES = [-1.0, 0.0, 1.0]


def _rows(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((25, 4)).round(3)


def _native_party(rank: int, port: int, inputs: dict[str, Any], queue: Any) -> None:
    """One party of the plain CrypTen script: the inference, then the statistics."""
    import io

    import torch

    from node import architecture
    from node.compat import crypten
    from node.runner import interface_of

    os.environ.update(DISTRIBUTED_BACKEND="gloo", RENDEZVOUS=f"tcp://127.0.0.1:{port}",
                      WORLD_SIZE="2", RANK=str(rank), TORCHELASTIC_USE_AGENT_STORE="True",
                      GLOO_SOCKET_IFNAME=interface_of("127.0.0.1") or "")
    torch.set_num_threads(1)
    crypten.init()
    crypten.cfg.communicator.verbose = True
    comm = crypten.communicator.get()
    out: dict[str, Any] = {"rank": rank}

    def stats() -> dict[str, int]:
        s = comm.get_communication_stats()
        return {"rounds": int(s["rounds"]), "bytes": int(s["bytes"])}

    # the inference: alice's model (rank 0) on bob's rows (rank 1), revealed to rank 1
    crypten.cfg.encoder.precision_bits = INFERENCE_BITS
    comm.reset_communication_stats()
    rows = inputs["data"] if rank == 1 else torch.zeros(inputs["data_shape"])
    data = crypten.cryptensor(rows, src=1)
    onnx_bytes = inputs["model"] if rank == 0 else architecture.rebuild(inputs["architecture"])
    model = crypten.nn.from_onnx(io.BytesIO(onnx_bytes))
    model.encrypt(src=0)
    value = model(data).get_plain_text(dst=1)
    out["inference"] = stats()
    out["inference_value"] = value.numpy() if value is not None else None

    # the statistics plan: rows at rank 0 and rank 1, aggregates revealed to rank 0
    crypten.cfg.encoder.precision_bits = 16
    comm.reset_communication_stats()
    x0 = crypten.cryptensor(inputs["nums"] if rank == 0 else torch.zeros(inputs["nums_shape"]),
                            src=0)
    x1 = crypten.cryptensor(inputs["nums"] if rank == 1 else torch.zeros(inputs["nums_shape"]),
                            src=1)
    x = crypten.cat([x0, x1], dim=0)
    result: dict[str, Any] = {"count": x.size(0)}
    result["sum"] = x.sum(0).get_plain_text(dst=0)
    mean = x.mean(0)
    result["mean"] = mean.get_plain_text(dst=0)
    result["variance"] = ((x - mean) * (x - mean)).mean(0).get_plain_text(dst=0)
    column = x[:, 0]
    at_least = [(column >= edge).sum() for edge in EDGES]
    counts = [at_least[i] - at_least[i + 1] for i in range(len(EDGES) - 1)]
    result["histogram"] = crypten.stack(counts).get_plain_text(dst=0)
    out["statistics"] = stats()
    queue.put(out)
    queue.close()
    queue.join_thread()
    os._exit(0)


def _native(inputs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Both parties of the plain CrypTen script, in spawned processes meeting over TCP."""
    import torch.distributed as dist

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = int(sock.getsockname()[1])
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, timeout=timedelta(seconds=120),
                          wait_for_workers=False, master_listen_fd=sock.detach())
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_native_party, args=(r, port, inputs[r], queue))
             for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        reports = [queue.get(timeout=JOB_TIMEOUT) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        del store
    return {r["rank"]: r for r in reports}


def _party_stats(client: Any, job_id: str) -> dict[int, dict[str, int]]:
    def reported() -> dict[str, Any] | None:
        parties = client.orchestration(job_id)["detail"]["parties"]
        return parties if all("stats" in q for q in parties.values()) else None

    parties = wait_until(reported, 30, "every party's stats")
    return {int(r): {"rounds": int(q["stats"]["rounds"]), "bytes": int(q["stats"]["bytes"])}
            for r, q in parties.items()}


def test_a_jobs_rounds_and_bytes_equal_plain_crypten(make_node, tmp_path):
    import torch

    from node import architecture
    from node.demo import read_csv

    alice, bob = make_node("alice"), make_node("bob")
    model_bytes = resource("alice_model.onnx").read_bytes()
    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])
    nums = {0: _rows(1), 1: _rows(2)}
    for rank, node in enumerate((alice, bob)):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", nums[rank]), tags=["nums"])
    parties = [alice.party.spec(), bob.party.spec()]

    inference = alice.client.submit({
        "title": "fingerprint: inference", "parties": parties,
        "plan": {"kind": "inference", "model": {"tag": "bc-model", "rank": 0},
                 "data": {"tag": "bc-inference", "rank": 1}, "output_to": 1},
        "crypten": {"precision_bits": INFERENCE_BITS}})
    done = alice.client.wait(inference["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    parley_inference = _party_stats(alice.client, inference["id"])
    parley_value = results(done)[1]

    statistics = alice.client.submit({
        "title": "fingerprint: statistics", "parties": parties,
        "plan": {"kind": "statistics", "data": [{"tag": "nums", "rank": 0},
                                                {"tag": "nums", "rank": 1}],
                 "stats": STATS, "histogram": {"column": 0, "edges": EDGES},
                 "output_to": 0}})
    done = alice.client.wait(statistics["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    parley_statistics = _party_stats(alice.client, statistics["id"])

    rows = torch.tensor(read_csv("bob_inference.csv")[1], dtype=torch.float32)
    shared = {"data_shape": list(rows.shape), "nums_shape": [25, 4]}
    native = _native([
        {**shared, "model": model_bytes, "nums": torch.tensor(nums[0], dtype=torch.float32)},
        {**shared, "architecture": architecture.of_model(model_bytes), "data": rows,
         "nums": torch.tensor(nums[1], dtype=torch.float32)}])

    print(f"\ninference  parley {parley_inference}\n           native "
          f"{ {r: native[r]['inference'] for r in (0, 1)} }\nstatistics parley "
          f"{parley_statistics}\n           native "
          f"{ {r: native[r]['statistics'] for r in (0, 1)} }")
    assert all(s["rounds"] > 0 and s["bytes"] > 0 for s in parley_inference.values())
    assert parley_inference == {r: native[r]["inference"] for r in (0, 1)}
    assert parley_statistics == {r: native[r]["statistics"] for r in (0, 1)}
    # the same computation: the same predictions, up to the fixed-point noise of each run
    assert np.abs(np.asarray(parley_value) - native[1]["inference_value"]).max() < 1e-2

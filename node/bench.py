"""``parley bench``: what one job costs through Parley, against plain CrypTen and plaintext.

The job is the demo's first: alice's model on bob's 399 rows. Three ways:

* **plaintext**: the model in torch, in this process;
* **plain CrypTen**: two processes (multiprocessing, spawn) that meet over TCP and run the same
  computation, the way a CrypTen script would (no nodes, no approval, no isolation);
* **Parley**: three real nodes (carol orchestrates, alice and bob compute), submit to result.

Each run reports the phases: process start (launch until torch and CrypTen are imported),
rendezvous, load (sharing data and model), compute, and for Parley the orchestration around
them. The slowest party's figure counts for each phase.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from node.client import results
from node.demo import INFERENCE_PRECISION_BITS, encrypted_inference, read_csv
from node.localnet import LocalNode
from node.runner import interface_of
from resources import path as resource


def _plain_crypten_party(rank: int, port: int, queue: Any, t_launch: float) -> None:
    t0 = time.time()
    import torch

    from node.compat import crypten

    imported = time.time()
    # the store is the launcher's, as under torchrun: every rank is its client
    os.environ.update(DISTRIBUTED_BACKEND="gloo", RENDEZVOUS=f"tcp://127.0.0.1:{port}",
                      WORLD_SIZE="2", RANK=str(rank), TORCHELASTIC_USE_AGENT_STORE="True",
                      GLOO_SOCKET_IFNAME=interface_of("127.0.0.1") or "")
    torch.set_num_threads(1)
    crypten.init()
    crypten.cfg.encoder.precision_bits = INFERENCE_PRECISION_BITS
    joined = time.time()
    model_bytes = resource("alice_model.onnx").read_bytes()
    model = crypten.nn.from_onnx(io.BytesIO(model_bytes))  # both know the model file here
    model.encrypt(src=0)
    x = read_csv("bob_inference.csv")[1] if rank == 1 else None
    shape = (399, 30)
    data = crypten.cryptensor(torch.tensor(x, dtype=torch.float32) if x is not None
                              else torch.zeros(shape), src=1)
    loaded = time.time()
    out = model(data).get_plain_text(dst=1)
    done = time.time()
    queue.put({"rank": rank, "start_s": imported - t_launch, "import_s": imported - t0,
               "rendezvous_s": joined - imported, "load_s": loaded - joined,
               "compute_s": done - loaded, "ok": out is not None if rank == 1 else True})
    queue.close()
    queue.join_thread()  # flush before the fast exit
    os._exit(0)


def _launcher_store() -> tuple[Any, int]:
    """torch's TCPStore, hosted here on a socket bound to the loopback before anyone is told
    its port (a port found free and bound later can be taken in between: EADDRINUSE)."""
    from datetime import timedelta

    import torch.distributed as dist

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = int(sock.getsockname()[1])
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, timeout=timedelta(seconds=120),
                          wait_for_workers=False, master_listen_fd=sock.detach())
    return store, port


def plain_crypten() -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    store, port = _launcher_store()
    t0 = time.time()
    procs = [ctx.Process(target=_plain_crypten_party, args=(r, port, queue, t0)) for r in (0, 1)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=120) for _ in procs]
    wall = time.time() - t0
    for p in procs:
        p.join(10)
    del store
    worst = {k: max(r[k] for r in reports) for k in ("start_s", "rendezvous_s", "load_s",
                                                      "compute_s")}
    return {**worst, "wall_s": wall}


def plaintext() -> dict[str, float]:
    from node.demo import plain_inference

    plain_inference()  # warm
    t0 = time.perf_counter()
    plain_inference()
    return {"compute_s": time.perf_counter() - t0}


def parley(runs: int) -> list[dict[str, float]]:
    from node.client import run_multiworkers

    base = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    nodes = [LocalNode(n, base / n, auto_approve=True) for n in ("alice", "bob", "carol")]
    out = []
    try:
        for node in nodes:
            node.start()
        alice, bob, carol = nodes
        for a, b in ((alice, bob), (alice, carol), (bob, carol)):
            a.pair_with(b)
        alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
        bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])
        job = run_multiworkers([alice.party, bob.party], client=carol.client,
                               bindings=[("bc-model", 0, "model"),
                                         ("bc-inference", 1, "dataset")],
                               result_to=[1], precision_bits=INFERENCE_PRECISION_BITS
                               )(encrypted_inference)
        for _ in range(runs):
            t0 = time.monotonic()
            done = carol.client.wait(carol.client.submit(job.spec)["id"], timeout=300)
            wall = time.monotonic() - t0
            results(done)
            parties = done["detail"]["parties"].values()
            t = {k: max(p["timings"].get(k, 0.0) for p in parties)
                 for k in ("imported_at_s", "rendezvous_s", "load_s", "compute_s", "total_s")}
            s = {k: sum(p["stats"].get(k, 0) for p in parties) for k in ("rounds", "bytes")}
            out.append({"start_s": t["imported_at_s"], "rendezvous_s": t["rendezvous_s"],
                        "load_s": t["load_s"], "compute_s": t["compute_s"],
                        "party_total_s": t["total_s"], "wall_s": wall,
                        "orchestration_s": wall - t["total_s"],
                        "rounds_per_party": s["rounds"] / 2, "bytes_all_parties": s["bytes"]})
    finally:
        for node in nodes:
            node.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return out


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def add_arguments(parser: Any) -> None:
    parser.add_argument("--repeat", type=int, default=3)


def main(args: Any) -> int:
    json_out, repeat = args.json, args.repeat
    report = {
        "job": "encrypted inference, 399 rows x 30 features, MLP 30-16-2, 2 parties",
        "cores": os.cpu_count(),
        "plaintext": plaintext(),
        "plain_crypten": _median([plain_crypten() for _ in range(repeat)]),
        "parley": _median(parley(repeat)),
        "runs": repeat,
    }
    if json_out:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['job']}; medians of {repeat} runs on {report['cores']} cores")
    print(f"  plaintext (torch, one process): compute {report['plaintext']['compute_s']*1e3:.1f} ms")
    rows = [("process start", "start_s"), ("rendezvous", "rendezvous_s"), ("load", "load_s"),
            ("compute", "compute_s"), ("wall, launch to result", "wall_s")]
    print(f"  {'phase':<26}{'plain CrypTen':>14}{'Parley':>10}")
    for label, key in rows:
        print(f"  {label:<26}{report['plain_crypten'][key]:>13.3f}s"
              f"{report['parley'][key]:>9.3f}s")
    p = report["parley"]
    print(f"  Parley orchestration (propose, approve, start, collect): {p['orchestration_s']:.3f}s;"
          f" {p['rounds_per_party']:.0f} rounds, {p['bytes_all_parties']/1e6:.2f} MB sent in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- a finished job, benchmarked from the app ---------------------------------------------------
NATIVE_LAYERS = {"static": False, "runtime": False, "os": False}


async def benchmark_job(orchestrator: Any, job: Any) -> dict[str, Any]:
    """A job this node sent, against the same computation as plain CrypTen and as plaintext,
    on this machine, on mock data shaped like the job's assets (the real data stays with its
    owners).

    * **Parley**: the job's own run (its phases, as its parties reported them);
    * **plain CrypTen**: the same code in the same number of party processes on this machine,
      without the jail's three layers, nodes, approvals or orchestration;
    * **plaintext**: the plan's computation in numpy (inference, statistics, logistic
      training); custom code and MLP training have no plaintext twin here.
    """
    import asyncio

    from node import proposal as proposals
    from node.errors import JobStateError
    from node.mockdata import mock_dataset, mock_model
    from node.rendezvous import RendezvousServer

    if job.state != "succeeded":
        raise JobStateError(f"job {job.id} is {job.state}; only a finished job can be "
                            f"benchmarked")
    p = job.proposal
    schemas, problems = await orchestrator.schemas_of(p)
    if problems:
        raise JobStateError("cannot shape the mock data: " + "; ".join(problems))
    parties = job.detail.get("parties", {}).values()
    phases = ("rendezvous_s", "load_s", "compute_s")
    parley_phases = {k: max((q.get("timings", {}).get(k, 0.0) for q in parties), default=0.0)
                     for k in phases}
    parley_run = {"seconds": job.detail.get("phases", {}).get("run_s"),
                  "phases": {"start_s": max((q.get("timings", {}).get("imported_at_s", 0.0)
                                             for q in parties), default=0.0), **parley_phases}}

    # mock data: one seed per binding, the same for both runs
    data: dict[tuple[str, int], dict[str, bytes]] = {}
    for seed, b in enumerate(p["bindings"]):
        schema = schemas[(b["tag"], b["rank"])]
        data[(b["tag"], b["rank"])] = ({"model": await asyncio.to_thread(mock_model, schema, seed)}
                                       if b["kind"] == "model" else mock_dataset(schema, seed))

    source, entry = proposals.job_code(p)
    world = len(p["parties"])
    server = await RendezvousServer(world).start("127.0.0.1")
    node = orchestrator.node
    t0 = time.monotonic()
    try:
        runs = []
        for rank in range(world):
            assets: dict[str, Any] = {}
            blobs: list[bytes] = []
            index: list[dict[str, Any]] = []
            for b in p["bindings"]:
                assets.setdefault(b["tag"], {})[str(b["rank"])] = {"rank": b["rank"],
                                                                   "kind": b["kind"]}
                if b["rank"] == rank:
                    for part, blob in data[(b["tag"], b["rank"])].items():
                        blobs.append(blob)
                        index.append({"tag": b["tag"], "rank": rank, "part": part,
                                      "size": len(blob)})
            spec = {"job_id": f"bench-{job.id}", "rank": rank, "world_size": world,
                    "rendezvous": server.url, "source": source, "entry": entry,
                    "assets": assets, "blobs": index, "result_to": [],
                    "reveal": {"to": list(range(world)), "everyone": True,
                               "budget": 10**9},
                    "threads": 1, "gloo_ifname": interface_of("127.0.0.1"),
                    "precision_bits": p.get("crypten", {}).get("precision_bits", 16),
                    "timeouts": {"rendezvous": 60, "op": 30},
                    "limits": {"cpu_s": 3600, "memory_bytes": 8 << 30, "log_bytes": 1 << 20},
                    "layers": NATIVE_LAYERS}
            run = await node.launcher.launch(f"bench-{job.id}-{rank}", 1)

            async def ignore(_name: str, _data: dict[str, Any]) -> None:
                return None

            runs.append(run.supervise(spec, blobs, 600, ignore))
        outcomes = await asyncio.gather(*runs)
    finally:
        await server.close()
    wall = time.monotonic() - t0
    failed = [o for o in outcomes if o.state != "succeeded"]
    if failed:
        raise JobStateError(f"the plain CrypTen run failed: {failed[0].reason}")
    native = {"seconds": wall, "phases": {
        "start_s": max(o.timings.get("imported_at_s", 0.0) for o in outcomes),
        **{k: max(o.timings.get(k, 0.0) for o in outcomes) for k in phases}}}
    plain = await asyncio.to_thread(_plaintext_twin, p, data)
    out = {"job_id": job.id, "parley": parley_run, "crypten": native, "plaintext": plain,
           "data": "mock data shaped like the job's assets", "overhead": {}}
    if parley_run["seconds"] and native["seconds"]:
        out["overhead"]["parley_vs_crypten"] = parley_run["seconds"] / native["seconds"]
    if plain.get("seconds") and native["phases"]["compute_s"]:
        out["overhead"]["crypten_vs_plaintext"] = (native["phases"]["compute_s"]
                                                   / plain["seconds"])
    return out


def _plaintext_twin(p: dict[str, Any], data: dict[tuple[str, int], dict[str, bytes]]
                    ) -> dict[str, Any]:
    """The plan's computation in numpy on the same mock data: its compute time, or why not."""
    import numpy as np

    def array(ref: dict[str, Any], part: str = "features") -> Any:
        return np.load(io.BytesIO(data[(ref["tag"], ref["rank"])][part]))

    if p["code"]["kind"] != "plan":
        return {"seconds": None, "why_not": "custom code has no plaintext twin"}
    plan = p["code"]["plan"]
    t0 = time.perf_counter()
    if plan["kind"] == "statistics":
        rows = np.vstack([array(r) for r in plan["data"]])
        rows.mean(0), rows.var(0), rows.sum(0)
        if "histogram" in plan.get("stats", []):
            np.histogram(rows[:, plan["histogram"]["column"]], plan["histogram"]["edges"])
    elif plan["kind"] == "inference":
        from onnx.reference import ReferenceEvaluator

        model = ReferenceEvaluator(data[(plan["model"]["tag"], plan["model"]["rank"])]["model"])
        x = array(plan["data"])
        t0 = time.perf_counter()
        model.run(None, {model.input_names[0]: x.astype(np.float32)})
    elif plan["model"] == "logistic":
        x = np.hstack([array(r) for r in plan["features"]])
        labels = plan["labels"]
        y = array(labels, "labels" if labels.get("part") == "labels" else "features")
        y = y.reshape(-1, 1)
        w, b = np.zeros((x.shape[1], 1)), 0.0
        for _ in range(plan.get("epochs", 30)):
            err = 1 / (1 + np.exp(-(x @ w + b))) - y
            w -= plan.get("learning_rate", 1.0) * x.T @ err / len(x)
            b -= plan.get("learning_rate", 1.0) * float(err.mean())
    else:
        return {"seconds": None, "why_not": "MLP training has no plaintext twin here"}
    return {"seconds": time.perf_counter() - t0}

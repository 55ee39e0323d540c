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


def main(json_out: bool = False, repeat: int = 3) -> int:
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

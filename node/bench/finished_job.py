"""The benchmark of one finished job, for the app (``POST orchestrations/{id}/benchmark``).

A job this node sent, against the same computation as plain CrypTen and as plaintext, on this
machine, on mock data shaped like the job's assets (the real data stays with its owners):

* **Parley**: the job's own run (its phases, as its parties reported them);
* **plain CrypTen**: the job's code in one plain CrypTen process per party on this machine,
  through the native arm of ``parley bench`` (node/bench/native.py): no nodes, approvals,
  jail or orchestration;
* **plaintext**: the plan's computation in numpy (inference, statistics, logistic training);
  custom code and MLP training have no plaintext twin here.

The answer's shape is what gui/results_view.py reads: ``{"job_id", "parley": {"seconds",
"phases"}, "crypten": {"seconds", "phases"}, "plaintext": {"seconds"} or {"seconds": None,
"why_not"}, "data", "overhead": {"parley_vs_crypten", "crypten_vs_plaintext"}}``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from node.parsing import load_npy

__all__ = ["PHASES", "benchmark_job"]

PHASES = ("rendezvous_s", "load_s", "compute_s")


async def benchmark_job(orchestrator: Any, job: Any) -> dict[str, Any]:
    import asyncio

    from node import proposal as proposals
    from node.errors import JobStateError
    from node.mockdata import mock_dataset, mock_model

    if job.state != "succeeded":
        raise JobStateError(f"job {job.id} is {job.state}; only a finished job can be "
                            f"benchmarked")
    p = job.proposal
    schemas, problems = await orchestrator.schemas_of(p)
    if problems:
        raise JobStateError("cannot shape the mock data: " + "; ".join(problems))
    parties = job.detail.get("parties", {}).values()
    parley_phases = {k: max((q.get("timings", {}).get(k, 0.0) for q in parties), default=0.0)
                     for k in PHASES}
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
    native = await asyncio.to_thread(_plain_crypten, source, entry, len(p["parties"]), data,
                                     int(p.get("crypten", {}).get("precision_bits", 16)))
    plain = await asyncio.to_thread(_plaintext_twin, p, data)
    out = {"job_id": job.id, "parley": parley_run, "crypten": native, "plaintext": plain,
           "data": "mock data shaped like the job's assets", "overhead": {}}
    if parley_run["seconds"] and native["seconds"]:
        out["overhead"]["parley_vs_crypten"] = parley_run["seconds"] / native["seconds"]
    if plain.get("seconds") and native["phases"]["compute_s"]:
        out["overhead"]["crypten_vs_plaintext"] = (native["phases"]["compute_s"]
                                                   / plain["seconds"])
    return out


def _plain_crypten(source: str, entry: str, world: int,
                   data: dict[tuple[str, int], dict[str, bytes]], precision_bits: int
                   ) -> dict[str, Any]:
    """The job's code as plain CrypTen parties on the mock data: its seconds and phases."""

    from node.bench.native_arm import NativeJob, run_native
    from node.bench.workloads import architecture_only
    from node.errors import JobStateError

    work = Path(tempfile.mkdtemp(prefix="parley-benchmark-"))
    try:
        inputs: dict[str, dict[str, dict[str, Any]]] = {}
        for index, ((tag, rank), parts) in enumerate(data.items()):
            stem = work / f"input{index}-rank{rank}"
            if "model" in parts:
                real, arch = stem.with_suffix(".onnx"), stem.with_suffix(".arch.onnx")
                real.write_bytes(parts["model"])
                arch.write_bytes(architecture_only(parts["model"]))
                entry_ = {"kind": "model", "path": real, "arch": arch}
            else:
                described = {}
                for part, blob in parts.items():
                    path = stem.with_name(f"{stem.name}-{part}.npy")
                    path.write_bytes(blob)
                    shape = list(load_npy(blob).shape)
                    described[part] = {"shape": shape, "path": path}
                entry_ = {"kind": "dataset", "parts": described}
            inputs.setdefault(tag, {})[str(rank)] = entry_
        try:
            run = run_native(NativeJob(source, entry, world, inputs, precision_bits),
                             work / "run", timeout=600)
        except Exception as exc:  # noqa: BLE001 - the app shows the reason
            message = getattr(exc, "message", None) or str(exc)
            raise JobStateError(f"the plain CrypTen run failed: {message}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    phases = run.phases()
    return {"seconds": run.wall_s, "phases": {
        "start_s": phases["start_s"], "rendezvous_s": phases["rendezvous_s"],
        "load_s": phases["load_s"],
        "compute_s": phases["compute_s"] + phases["reveal_s"]}}


def _plaintext_twin(p: dict[str, Any], data: dict[tuple[str, int], dict[str, bytes]]
                    ) -> dict[str, Any]:
    """The plan's computation in numpy on the same mock data: its compute time, or why not."""
    import numpy as np

    def array(ref: dict[str, Any], part: str = "features") -> Any:
        return load_npy(data[(ref["tag"], ref["rank"])][part])

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

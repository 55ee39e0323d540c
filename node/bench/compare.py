"""One ``parley bench`` session: the workloads natively and through Parley, interleaved.

Order: for each pair index, an A/A pair (the A/A workload natively, twice), then for every
workload one native run and one Parley run (A/B/A/B ...). Before every run the nodes are let
settle (node/bench/parley_arm.py), so that no run shares the cores with the leftovers of the
last one: a warm worker being refilled, a database being written.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.bench import figures
from node.bench.native_arm import NativeJob, NativeRun, run_native
from node.bench.parley_arm import ParleyArm, ParleyRun
from node.bench.workloads import AA_PREFERRED, Workload, select
from node.errors import BenchError
from node.parsing import load_npy

__all__ = ["KEYS", "LOOP_PROBE", "Measured", "NATIVE_ARM", "PARLEY_ARM", "PHASES", "RATIO",
           "Session", "links_of", "native_job", "native_record", "parley_record", "run", "scaling",
           "summarize", "tls_row"]

NATIVE_ARM = ("plain CrypTen 0.4.1: one `python node/bench/native.py` process per party, "
              "torch's tcp:// rendezvous at rank 0, one torch thread each, every party reading "
              "its own files; its only Parley import is node.compat (CrypTen 0.4.1 does not run "
              "on torch 2.13 without those fixes, so a user on this torch needs them too)")
LOOP_PROBE = ("each node's event loop sets a 20 ms timer, again and again; a stall is how much "
              "later than asked it fires (those over 20 ms are kept). The longest of any node "
              "from each Parley run's submit until its nodes are idle again")
PARLEY_ARM = ("real `parley node` processes on the loopback (TLS between them, approval "
              "automatic but measured, jailed party processes, the nodes' default warm "
              "workers); rank 0's node orchestrates")
RATIO = ("Parley / native, per pair; the median of the pairs with a 95% bootstrap interval "
         f"(pairs resampled, seed {figures.SEED}). whole: Parley submit -> result against a "
         "cold native launch -> result; warm: Parley last approval -> result against native "
         "after its imports -> result; compute: computing and revealing, slowest party")
PHASES = ("the slowest party's seconds in each phase. start: native, launch -> imports done; "
          "Parley, the job taking its (warm) worker -> rendezvous. return: native, the last "
          "party done -> every process ended; Parley, the last approval -> the parties taken, "
          "plus their end -> the result at the orchestrator. Parley also: approve (submit -> "
          "last approval), setup (the jail: static check, lockdown)")
KEYS = ("wall_s", "warm_s", "compute_s")  # whole, warm, compute
Say = Callable[[str], None]
Record = dict[str, Any]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Measured:
    """Everything one session measured, before any statistics."""

    pairs: dict[str, list[tuple[Record, Record]]] = field(default_factory=dict)  # native, Parley
    values: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)  # revealed results
    plaintext: dict[str, tuple[float, Any]] = field(default_factory=dict)  # seconds, result
    aa: list[tuple[Record, Record]] = field(default_factory=list)
    aa_workload: Workload | None = None
    warm_pool: dict[str, Any] | None = None
    tls: dict[str, list[tuple[Record, Record]]] = field(default_factory=dict)  # TLS, plain


def run(workloads: str | list[str] | None = None, pairs: int = 3,
        parties: tuple[int, ...] = (2, 3), quick: bool = False, out: Path | None = None,
        say: Say | None = None, native_timeout: float = 300.0,
        job_timeout: float = 600.0, tls_cost: bool = False) -> dict[str, Any]:
    """Benchmark ``workloads`` (names or groups; None: all, or the quick set) in ``pairs``
    A/B pairs; the report as a dict (what ``--json`` prints). ``out``: also write bench.json
    and bench.png there. ``say``: progress lines (default: stderr). ``tls_cost``: also every
    Parley job on nodes whose party links are plain TCP, for what TLS costs."""
    say = say or _stderr
    names = ",".join(workloads) if isinstance(workloads, list) else workloads
    try:
        chosen = select(names, tuple(parties), quick)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if not chosen:
        raise BenchError(f"no workload of {names or 'the default set'} runs at "
                         f"{' or '.join(map(str, parties))} parties")
    pairs = 1 if quick else max(1, int(pairs))
    t0, load_before = time.monotonic(), os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    try:
        session = Session(chosen, base, say, native_timeout, job_timeout, tls_cost)
        try:
            measured = session.measure(pairs, aa=not quick)
        finally:
            session.arm.stop()
            if session.plain_arm is not None:
                session.plain_arm.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report = summarize(chosen, measured, pairs, quick)
    if tls_cost:
        report["tls"] = [tls_row(w, measured.tls[w.name]) for w in chosen]
    report["machine"].update(load_before=list(load_before), load_after=list(os.getloadavg()))
    report["seconds"] = time.monotonic() - t0
    if out is not None:
        from node.bench.output import write

        write(report, Path(out))
    return report


class Session:
    """The data, the nodes and the runs of one benchmark."""

    def __init__(self, chosen: list[Workload], base: Path, say: Say, native_timeout: float,
                 job_timeout: float, tls_cost: bool = False) -> None:
        self.chosen = chosen
        self.base = base
        self.data = base / "data"
        self.say = say
        self.native_timeout = native_timeout
        self.job_timeout = job_timeout
        self.arm = ParleyArm(base / "nodes", max(w.parties for w in chosen), say)
        self.plain_arm = (ParleyArm(base / "nodes-plain-links", max(w.parties for w in chosen),
                                    say) if tls_cost else None)

    def prepare(self) -> Measured:
        from node.bench.plaintext import plaintext
        from node.bench.workloads import generate

        self.say(f"preparing {len(self.chosen)} workload(s): data, models, plaintext timings")
        self.data.mkdir()
        plain = generate(self.chosen, self.data)
        measured = Measured(plaintext={w.name: plaintext(w, plain) for w in self.chosen})
        arms = [(self.arm, "1")] + ([(self.plain_arm, "0")] if self.plain_arm else [])
        for arm, links in arms:
            before = os.environ.get("PARLEY_TLS_LINKS")
            os.environ["PARLEY_TLS_LINKS"] = links  # the node processes read it as they start
            try:
                arm.start()
            finally:
                if before is None:
                    os.environ.pop("PARLEY_TLS_LINKS", None)
                else:
                    os.environ["PARLEY_TLS_LINKS"] = before
            for w in self.chosen:
                arm.publish(w, functools.partial(w.file, self.data))
        measured.warm_pool = self.arm.warm_workers()
        return measured

    def measure(self, pairs: int, aa: bool) -> Measured:
        measured = self.prepare()
        if aa:
            measured.aa_workload = next((w for n in AA_PREFERRED for w in self.chosen
                                         if w.name == n), self.chosen[0])
        total, done = pairs * (len(self.chosen) + (1 if aa else 0)), 0
        for index in range(pairs):
            if measured.aa_workload is not None:
                a, _ = self.native(measured.aa_workload)
                b, _ = self.native(measured.aa_workload)
                measured.aa.append((a, b))
                done += 1
                self.say(f"[{done}/{total}] A/A {measured.aa_workload.name}: native "
                         f"{a['wall_s']:.2f} s, native {b['wall_s']:.2f} s")
            for w in self.chosen:
                native, native_value = self.native(w)
                parley, parley_value = self.parley(w)
                measured.pairs.setdefault(w.name, []).append((native, parley))
                measured.values.setdefault(w.name, []).append((native_value, parley_value))
                done += 1
                self.say(f"[{done}/{total}] {w.name} pair {index + 1}: native "
                         f"{native['wall_s']:.2f} s, Parley {parley['wall_s']:.2f} s "
                         f"(load {parley['load_1min']:.2f})")
                if self.plain_arm is not None:
                    parley["links"] = links_of(self.arm, parley["job_id"], w.parties)
                    plain, _ = self.parley(w, self.plain_arm)
                    measured.tls.setdefault(w.name, []).append((parley, plain))
                    self.say(f"    {w.name}: Parley with plain party links "
                             f"{plain['wall_s']:.2f} s, compute {plain['compute_s']:.3f} s "
                             f"(TLS: {parley['compute_s']:.3f} s)")
        return measured

    def native(self, w: Workload) -> tuple[Record, Any]:
        """One native run, once the nodes are idle: its record and its revealed result."""
        settled = self.arm.settle()
        load, cpu = os.getloadavg()[0], _own_cpu()
        work = self.base / "native" / w.name
        try:
            run = run_native(native_job(w, self.data), work, self.native_timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record = native_record(run)
        record["cpu"]["launcher_s"] = _own_cpu() - cpu
        return {"settle_s": settled, "load_1min": load, **record}, run.value(w.result_to)

    def parley(self, w: Workload, arm: ParleyArm | None = None) -> tuple[Record, Any]:
        arm = arm or self.arm
        settled = arm.settle()
        load, cpu, began = os.getloadavg()[0], _own_cpu(), time.time()
        run = arm.run(w, self.job_timeout)
        record = parley_record(run)
        record["cpu"]["launcher_s"] = _own_cpu() - cpu
        arm.settle()  # the job's end too: its records, the warm worker's refill
        stall = arm.longest_stall(began)
        record["loop_stall_ms"] = stall["ms"]
        record["loop_stall"] = stall
        return {"settle_s": settled, "load_1min": load, **record}, run.value


def longest_stall(runs: list[Record]) -> dict[str, Any]:
    """The longest loop stall over the Parley runs, with the CPU that the loop's thread and its
    node used in it, and how many runs had a stall over 50 ms (the target's bound)."""
    stalls = [p.get("loop_stall") or {"ms": p.get("loop_stall_ms", 0.0)} for p in runs]
    worst = max(stalls, key=lambda s: s["ms"], default={"ms": 0.0})
    return {"longest_stall_ms": worst["ms"], "loop_cpu_ms": worst.get("loop_cpu_ms", 0.0),
            "node_cpu_ms": worst.get("node_cpu_ms", 0.0),
            "runs_over_50ms": sum(s["ms"] > 50 for s in stalls), "runs": len(stalls),
            "probe": LOOP_PROBE}


def links_of(arm: ParleyArm, job_id: str, parties: int, wait_s: float = 5.0
             ) -> dict[str, int]:
    """The bytes a job's parties sent to other nodes, summed over the nodes of its
    ``parties`` ranks (a third node of the arm holds no 2-party job): ``plain`` as the relays
    read them (what plain TCP links would carry: the same gloo bytes), ``tls`` as TCP counted
    them on the wire. A node writes them as its party's links close, just after the result:
    wait for them a moment."""
    deadline = time.monotonic() + wait_s
    while True:
        links = [n.client.job(job_id, role="party").get("detail", {}).get("links", {})
                 for n in arm.nodes[:parties] if n.client is not None]
        links = [x for x in links if x]
        if all("wire_sent" in x for x in links) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return {"plain": sum(int(x.get("bytes_sent", 0)) for x in links),
            "tls": sum(int(x.get("wire_sent", 0)) for x in links)}


def tls_row(w: Workload, runs: list[tuple[Record, Record]]) -> dict[str, Any]:
    """What TLS on the party links cost one workload: with / without, per interleaved pair."""
    tls = [t for t, _ in runs]
    plain = [p for _, p in runs]
    plain_bytes = figures.median_of([t["links"]["plain"] for t in tls])
    tls_bytes = figures.median_of([t["links"]["tls"] for t in tls])
    return {
        "name": w.name, "parties": w.parties,
        "ratios": {key: figures.ratio_figure([(p[key], t[key]) for t, p in runs])
                   for key in ("wall_s", "compute_s")},
        "with": {key: figures.median_of([t[key] for t in tls]) for key in ("wall_s",
                                                                             "compute_s")},
        "without": {key: figures.median_of([p[key] for p in plain]) for key in ("wall_s",
                                                                                 "compute_s")},
        "rendezvous_s": {"with": figures.median_of([t["phases"].get("rendezvous_s") or 0.0
                                                    for t in tls]),
                         "without": figures.median_of([p["phases"].get("rendezvous_s") or 0.0
                                                       for p in plain])},
        "nodes_cpu_s": {"with": figures.median_of([t["cpu"].get("nodes_s") or 0.0
                                                   for t in tls]),
                        "without": figures.median_of([p["cpu"].get("nodes_s") or 0.0
                                                      for p in plain])},
        "bytes": {"plain": plain_bytes, "tls": tls_bytes},
        "load_1min": figures.median_of([t["load_1min"] for t in tls]),
    }


def _own_cpu() -> float:
    """CPU seconds of this process: the launcher of the native parties, the client of the
    nodes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def native_job(w: Workload, data_dir: Path) -> NativeJob:

    inputs: dict[str, dict[str, dict[str, Any]]] = {}
    for item in w.inputs:
        path = w.file(data_dir, item)
        if item.kind == "model":
            entry = {"kind": "model", "path": path, "arch": w.file(data_dir, item, ".arch")}
        else:
            shape = list(load_npy(path, mmap_mode="r").shape)
            entry = {"kind": "dataset", "parts": {"features": {"shape": shape, "path": path}}}
        inputs.setdefault(w.tag(item.name), {})[str(item.rank)] = entry
    return NativeJob(w.job_source(), "run", w.parties, inputs, w.precision_bits)


def _compute(phases: dict[str, Any]) -> float:
    """Computing and revealing: the one phase both arms can always split the same way."""
    return float(phases["compute_s"]) + float(phases.get("reveal_s") or 0.0)


def native_record(run: NativeRun) -> Record:
    return {"arm": "native", "wall_s": run.wall_s, "warm_s": run.warm_s,
            "phases": run.phases(), "compute_s": _compute(run.phases()),
            "cpu": {"parties_s": sum(r["cpu_s"] for r in run.reports),
                    "parties_job_s": sum(r["cpu_s"] - r["cpu_import_s"] for r in run.reports)},
            "stats": [{"rounds": r["rounds"], "bytes": r["bytes"]} for r in run.reports],
            "port_attempts": run.attempts}


def parley_record(run: ParleyRun) -> Record:
    phases = run.phases()
    return {"arm": "parley", "job_id": run.job.get("id"), "wall_s": run.wall_s,
            "warm_s": run.warm_s, "phases": phases, "compute_s": _compute(phases),
            "cpu": {**run.party_cpu(), **run.cpu}, "stats": run.stats(),
            "warm_workers": [bool(p.get("timings", {}).get("warm")) for p in run.parties()]}


# -- the report ---------------------------------------------------------------------------------
def summarize(chosen: list[Workload], measured: Measured, pairs: int, quick: bool
              ) -> dict[str, Any]:
    import torch

    from node.compat import crypten

    rows = [_workload_row(w, measured) for w in chosen]
    problems = [f"{r['name']}: the results differ: {r['results'].get('why')}"
                for r in rows if not r["results"]["agree"]]
    problems += [f"{r['name']}: the fingerprints differ: {r['fingerprint']['difference']}"
                 for r in rows if not r["fingerprint"]["equal"]]
    aa = None
    if measured.aa_workload is not None:
        ratios = {key: figures.ratio_figure([(a[key], b[key]) for a, b in measured.aa])
                  for key in KEYS}
        aa = {"workload": measured.aa_workload.name, "ratios": ratios,
              **figures.aa_verdict(ratios["wall_s"]),
              "runs": [{"a": a, "b": b} for a, b in measured.aa]}
    return {
        "version": 1, "quick": quick, "pairs": pairs,
        "arms": {"native": NATIVE_ARM, "parley": PARLEY_ARM}, "ratio": RATIO,
        "phases": PHASES,
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                    "torch": torch.__version__,
                    "crypten": getattr(crypten, "__version__", "0.4.1")},
        "warm_pool": measured.warm_pool,
        "loop": longest_stall([p for runs in measured.pairs.values() for _, p in runs]),
        "workloads": rows, "aa": aa, "scaling": scaling(rows),
        "checks": {"results_agree": all(r["results"]["agree"] for r in rows),
                   "fingerprints_equal": all(r["fingerprint"]["equal"] for r in rows),
                   "problems": problems},
    }


def _workload_row(w: Workload, measured: Measured) -> dict[str, Any]:
    pairs = measured.pairs[w.name]
    natives, parleys = [n for n, _ in pairs], [p for _, p in pairs]
    plain_s, plain_value = measured.plaintext[w.name]
    results = [figures.compare_results(n, p, plain_value, w.rtol)
               for n, p in measured.values[w.name]]
    prints = [figures.compare_fingerprints(n["stats"], p["stats"]) for n, p in pairs]
    return {
        "name": w.name, "title": w.title, "group": w.group, "parties": w.parties,
        "size": w.size, "rows": w.rows, "family": w.family,
        "ratios": {key: figures.ratio_figure([(n[key], p[key]) for n, p in pairs])
                   for key in KEYS},
        "native": _arm_medians(natives), "parley": _arm_medians(parleys),
        "plaintext_s": plain_s,
        "rounds": [s["rounds"] for s in natives[0]["stats"]],
        "bytes": [s["bytes"] for s in natives[0]["stats"]],
        # the first pair that disagrees, if one does
        "results": next((r for r in results if not r["agree"]), results[0]),
        "fingerprint": next((f for f in prints if not f["equal"]), prints[0]),
        "runs": [{"native": n, "parley": p} for n, p in pairs],
    }


def _arm_medians(records: list[Record]) -> dict[str, Any]:
    return {**{key: figures.median_of([r[key] for r in records]) for key in KEYS},
            "phases": figures.medians([r["phases"] for r in records]),
            "cpu": figures.medians([r["cpu"] for r in records])}


def scaling(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How time and bytes grow with the problem: the workloads of one family (two sizes or
    more), by size."""
    families = [r["family"] for r in rows if r["family"]]
    grown = [r for r in rows if r["family"] and families.count(r["family"]) > 1]
    return [{"family": r["family"], "rows": r["rows"], "workload": r["name"],
             "native_s": r["native"]["wall_s"], "parley_s": r["parley"]["wall_s"],
             "native_compute_s": r["native"]["compute_s"],
             "parley_compute_s": r["parley"]["compute_s"], "plaintext_s": r["plaintext_s"],
             "rounds": max(r["rounds"]), "bytes": sum(r["bytes"])}
            for r in sorted(grown, key=lambda r: (r["family"], r["rows"]))]

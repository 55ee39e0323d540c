"""The Parley arm: the same computation as a job on real nodes, submit to result.

Up to three ``parley node`` processes on the loopback (node/localnet.py), paired with each
other, approving automatically (a policy of kind "any" for each: approval is instant, and
still measured).
Rank 0's node orchestrates. The inputs are published at their owners' nodes once; each run
submits the workload's job source and waits for the result, then reads the job's detail: the
orchestrator's phases (approval, run) and each party's timings, rounds and bytes.

CPU seconds come from the parties' reports (``cpu_s``, when the party reports it) and from
``/proc``: the node processes themselves and every child they ran (party processes, warm
workers) over the run's window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.bench.workloads import Workload
from node.localnet import LocalNode

__all__ = ["CpuSnapshot", "NAMES", "ParleyArm", "ParleyRun", "cpu_between", "cpu_snapshot"]

NAMES = ("alice", "bob", "carol")
_TICK = os.sysconf("SC_CLK_TCK")


# -- CPU of process trees, from /proc -----------------------------------------------------------
def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of reaped children) of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK


@dataclass
class CpuSnapshot:
    roots: dict[int, tuple[float, float]]  # pid -> (own, reaped children)
    children: dict[int, float]  # live child pid -> own CPU seconds


def cpu_snapshot(roots: list[int]) -> CpuSnapshot:
    own = {}
    for pid in roots:
        stat = _stat(pid)
        if stat is not None:
            own[pid] = stat[1:]
    children = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] in own:
                children[int(entry.name)] = stat[1]
    return CpuSnapshot(own, children)


def cpu_between(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds the roots and their children used between two snapshots. A child that ended
    meanwhile is counted through its parent's reaped-children total, less what it had used
    before the window."""
    nodes = sum(after.roots[p][0] - before.roots[p][0] for p in after.roots if p in before.roots)
    reaped = sum(after.roots[p][1] - before.roots[p][1] for p in after.roots
                 if p in before.roots)
    gone = sum(cpu for pid, cpu in before.children.items() if pid not in after.children)
    live = sum(cpu - before.children.get(pid, 0.0) for pid, cpu in after.children.items())
    return {"nodes_s": nodes, "children_s": max(0.0, reaped - gone) + live}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- one run --------------------------------------------------------------------------------
@dataclass
class ParleyRun:
    wall_s: float  # submit -> the result at the orchestrator
    job: dict[str, Any]  # the orchestration, as `parley show` has it
    cpu: dict[str, float] = field(default_factory=dict)
    value: Any = None  # the result the orchestrator received from rank ``result_to``

    @property
    def approved_s(self) -> float:
        return float(self.job.get("detail", {}).get("phases", {}).get("approved_s") or 0.0)

    @property
    def warm_s(self) -> float:
        """From the last approval to the result at the orchestrator."""
        return self.wall_s - self.approved_s

    def parties(self) -> list[dict[str, Any]]:
        found = self.job.get("detail", {}).get("parties", {})
        return [found[k] for k in sorted(found, key=int)]

    def phases(self) -> dict[str, float | None]:
        """The slowest party's seconds in each phase (``reveal_s`` None where the parties do
        not report it; compute then includes the reveal)."""
        timings = [p.get("timings", {}) for p in self.parties()]
        reveal = [t.get("reveal_s") for t in timings]
        known = all(isinstance(r, (int, float)) for r in reveal)
        worst = lambda f: max(f(t) for t in timings)
        return {
            "approve_s": self.approved_s,
            "start_s": worst(lambda t: t.get("joined_at_s", 0.0) - t.get("rendezvous_s", 0.0)),
            "rendezvous_s": worst(lambda t: t.get("rendezvous_s", 0.0)),
            "setup_s": worst(lambda t: t.get("setup_s", 0.0)),
            "load_s": worst(lambda t: t.get("load_s", 0.0)),
            "compute_s": worst(lambda t: t.get("compute_s", 0.0) - t.get("load_s", 0.0)
                               - (t.get("reveal_s") or 0.0)),
            "reveal_s": worst(lambda t: t.get("reveal_s") or 0.0) if known else None,
            "return_s": self.warm_s - worst(lambda t: t.get("total_s", 0.0)),
        }

    def party_cpu(self) -> dict[str, float | None]:
        """CPU seconds the party processes reported: for the job (from the moment it took the
        worker) and over their whole life (the imports included); None where a party did not
        report it. Parties that report one figure only (``cpu_s``) report their whole life."""
        timings = [p.get("timings", {}) for p in self.parties()]
        if not all(_number(t.get("cpu_s")) for t in timings):
            return {"parties_s": None, "parties_job_s": None}
        if all(_number(t.get("cpu_import_s")) for t in timings):
            return {"parties_s": sum(t["cpu_s"] + t["cpu_import_s"] for t in timings),
                    "parties_job_s": sum(t["cpu_s"] for t in timings)}
        return {"parties_s": sum(t["cpu_s"] for t in timings), "parties_job_s": None}

    def stats(self) -> list[dict[str, int]]:
        return [{"rounds": int(p.get("stats", {}).get("rounds", 0)),
                 "bytes": int(p.get("stats", {}).get("bytes", 0))} for p in self.parties()]


class ParleyArm:
    """The nodes, started once for a whole benchmark."""

    def __init__(self, base: Path, parties: int, say: Callable[[str], None]) -> None:
        self.base = base
        self.say = say
        self.nodes = [LocalNode(name, base / name, auto_approve=True)
                      for name in NAMES[:max(2, parties)]]
        self.published: set[tuple[str, int]] = set()

    def start(self) -> None:
        t0 = time.monotonic()
        for node in self.nodes:
            node.start()
        for i, a in enumerate(self.nodes):
            for b in self.nodes[i + 1:]:
                a.pair_with(b)
        self.say(f"{len(self.nodes)} Parley nodes up and paired in "
                 f"{time.monotonic() - t0:.1f} s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def warm_workers(self) -> dict[str, Any] | None:
        """The first node's warm pool as its status reports it (None: no such report)."""
        try:
            status = self.nodes[0].api.status()
        except Exception:  # noqa: BLE001 - a figure for the report, nothing depends on it
            return None
        pool = status.get("warm_workers")
        return pool if isinstance(pool, dict) else None

    def longest_stall(self, since: float) -> dict[str, float]:
        """The longest stall of any node's event loop since ``since`` (time.time()), as the
        nodes' loop probes recorded it (node/core.py LoopProbe: a timer every 20 ms, stalls
        over 20 ms kept): its ms, and the CPU ms that the loop's thread and its whole node used
        in it; all 0 when none was over 20 ms."""
        longest = {"ms": 0.0, "loop_cpu_ms": 0.0, "node_cpu_ms": 0.0}
        for node in self.nodes:
            if node.client is None:
                continue
            for t, ms, *cpu in node.client.status().get("loop", {}).get("stalls", []):
                if float(t) >= since and float(ms) > longest["ms"]:
                    loop_ms, node_ms = (cpu + [0.0, 0.0])[:2]
                    longest = {"ms": float(ms), "loop_cpu_ms": float(loop_ms),
                               "node_cpu_ms": float(node_ms)}
        return longest

    def publish(self, w: Workload, files: Callable[[Any], Path]) -> None:
        for item in w.inputs:
            tag = w.tag(item.name)
            if (tag, item.rank) in self.published:
                continue
            client = self.nodes[item.rank].client
            assert client is not None
            # a minimum of 1 row: the microbenchmarks reveal element-wise results, as the
            # native arm does; the rows are still followed (that cost is measured), and
            # tests/test_reveal_rows.py checks the refusals
            client.publish(files(item), tags=[tag], name=f"{w.name} {item.name}",
                           min_rows=None if item.kind == "model" else 1)
            self.published.add((tag, item.rank))

    def spec(self, w: Workload) -> dict[str, Any]:
        return {"title": f"bench {w.name}", "source": w.job_source(), "entry": "run",
                "parties": [self.nodes[r].party.spec() for r in range(w.parties)],
                "bindings": [{"tag": w.tag(i.name), "rank": i.rank, "kind": i.kind}
                             for i in w.inputs],
                "result_to": [w.result_to], "crypten": {"precision_bits": w.precision_bits}}

    def run(self, w: Workload, timeout: float = 600) -> ParleyRun:
        from node.client import results
        from node.errors import JobFailed

        client = self.nodes[0].client
        assert client is not None
        spec = self.spec(w)
        before = cpu_snapshot(self.pids)
        t0 = time.monotonic()
        job = client.wait(client.submit(spec)["id"], timeout=timeout)
        wall = time.monotonic() - t0
        after = cpu_snapshot(self.pids)
        if job["state"] != "succeeded":
            raise JobFailed(f"the Parley run of {w.name} {job['state']}: {job.get('reason')}")
        return ParleyRun(wall, job, cpu_between(before, after), results(job).get(w.result_to))

    def settle(self, quiet_cpu: float = 0.03, window: float = 0.25, limit: float = 30.0
               ) -> float:
        """Wait until the nodes and their children are idle (a warm worker refilled, the
        database written), so that neither arm runs beside the other's leftovers: two
        windows in a row with less than ``quiet_cpu`` CPU seconds. The seconds waited."""
        t0 = time.monotonic()
        calm = 0
        before = cpu_snapshot(self.pids)
        while time.monotonic() - t0 < limit:
            time.sleep(window)
            after = cpu_snapshot(self.pids)
            used = sum(cpu_between(before, after).values())
            before = after
            calm = calm + 1 if used < quiet_cpu else 0
            if calm >= 2:
                break
        return time.monotonic() - t0

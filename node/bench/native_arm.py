"""The native arm: a computation run as plain CrypTen parties, launched as a user launches them.

One ``python node/bench/native.py CONFIG`` process per party, all started at once, each with
``RENDEZVOUS=tcp://127.0.0.1:PORT``, ``WORLD_SIZE``, ``RANK`` and ``DISTRIBUTED_BACKEND=gloo`` in
its environment; rank 0 hosts torch's TCP store on PORT. A port found free can be taken before
rank 0 listens on it: rank 0 then exits with a status of its own and the launch is retried on
another port. Every wait is bounded: a party that fails makes the launcher stop the others at
once, and a party still running at the deadline is killed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import NativeRunError

__all__ = ["ATTEMPTS", "NativeJob", "NativeRun", "PORT_TAKEN", "SCRIPT", "party_config",
           "run_native"]

SCRIPT = Path(__file__).with_name("native.py")
PORT_TAKEN = 75  # native.py's exit status when rank 0 could not listen
ATTEMPTS = 3


@dataclass
class NativeJob:
    """A computation and where each party's inputs are.

    ``inputs``: tag -> rank -> ``{"kind": "dataset", "parts": {part: {"shape": [...],
    "path": file}}}`` or ``{"kind": "model", "path": real model, "arch": dummy-weights model}``;
    each party is told the paths of its own files only (and a model's architecture)."""

    source: str
    entry: str
    world_size: int
    inputs: dict[str, dict[str, dict[str, Any]]]
    precision_bits: int = 16


@dataclass
class NativeRun:
    launched: float  # time.monotonic(), like the parties' stamps
    ended: float
    reports: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1

    @property
    def wall_s(self) -> float:
        """Cold: from launching the processes to every party's end, the result included."""
        return self.ended - self.launched

    @property
    def warm_s(self) -> float:
        """From the moment the last party had imported torch and CrypTen to the end."""
        return self.ended - max(r["imported"] for r in self.reports)

    def phases(self) -> dict[str, float]:
        """The slowest party's seconds in each phase."""
        worst = lambda key: max(r[key] for r in self.reports)
        return {
            "start_s": max(r["imported"] - self.launched for r in self.reports),
            "rendezvous_s": max(r["joined"] - r["imported"] for r in self.reports),
            "load_s": worst("load_s"),
            "compute_s": worst("compute_s"),
            "reveal_s": worst("reveal_s"),
            "return_s": self.ended - max(r["done"] for r in self.reports),
        }

    def value(self, rank: int) -> Any:
        return self.reports[rank].get("value")


def party_config(job: NativeJob, rank: int, report: Path) -> dict[str, Any]:
    """What party ``rank`` is told: the job, every input's shape, and only its own files."""
    inputs: dict[str, dict[str, Any]] = {}
    for tag, holders in job.inputs.items():
        for holder, entry in holders.items():
            own = int(holder) == rank
            told: dict[str, Any]
            if entry["kind"] == "model":
                told = {"kind": "model", "path": str(entry["path"] if own else entry["arch"])}
            else:
                told = {"kind": "dataset", "parts": {
                    part: {"shape": list(spec["shape"]),
                           "path": str(spec["path"]) if own else None}
                    for part, spec in entry["parts"].items()}}
            inputs.setdefault(tag, {})[str(holder)] = told
    return {"source": job.source, "entry": job.entry, "precision_bits": job.precision_bits,
            "inputs": inputs, "report": str(report)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(rank: int, world: int, port: int) -> dict[str, str]:
    from node.runner import interface_of

    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_USE_AGENT_STORE"}
    env.update(RENDEZVOUS=f"tcp://127.0.0.1:{port}", WORLD_SIZE=str(world), RANK=str(rank),
               DISTRIBUTED_BACKEND="gloo", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    ifname = interface_of("127.0.0.1")
    if ifname:  # gloo on the loopback, as Parley's parties on a loopback node
        env["GLOO_SOCKET_IFNAME"] = ifname
    return env


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _first_failure(failed: list[int], reports: list[Path], logs: list[Path]
                   ) -> tuple[int, str]:
    """The party whose failure came first (the others then lost their connection to it), and
    its error; a party killed by the launcher has no report and comes last."""
    found = []
    for rank in failed:
        try:
            report = json.loads(reports[rank].read_text())
        except (OSError, ValueError):
            continue
        if "failed" in report:
            found.append((report["failed"], rank, report.get("error", "")))
    if found:
        _, rank, why = min(found)
        return rank, why or _tail(logs[rank]) or "no message"
    return failed[0], _tail(logs[failed[0]]) or "no report"


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def run_native(job: NativeJob, work: Path, timeout: float = 300.0) -> NativeRun:
    """Run ``job`` once; ``NativeRunError`` saying which party failed and why."""
    work.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        run = _launch(job, work, timeout)
        if run is not None:
            run.attempts = attempt
            return run
    raise NativeRunError(f"rank 0 of the native run could not listen on a free port "
                         f"{ATTEMPTS} times in a row (each was taken before it bound it)")


def _launch(job: NativeJob, work: Path, timeout: float) -> NativeRun | None:
    port = _free_port()
    reports = [work / f"report-{rank}.json" for rank in range(job.world_size)]
    logs = [work / f"party-{rank}.log" for rank in range(job.world_size)]
    configs = []
    for rank in range(job.world_size):
        reports[rank].unlink(missing_ok=True)
        config = work / f"config-{rank}.json"
        config.write_text(json.dumps(party_config(job, rank, reports[rank])))
        configs.append(config)
    envs = [_environment(rank, job.world_size, port) for rank in range(job.world_size)]
    procs: list[subprocess.Popen[bytes]] = []
    launched = time.monotonic()
    try:
        for rank in range(job.world_size):
            with open(logs[rank], "wb") as log:
                procs.append(subprocess.Popen([sys.executable, str(SCRIPT), str(configs[rank])],
                                              env=envs[rank], stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT))
        deadline = launched + timeout
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break  # the others would wait for it until gloo's timeout: stop them now
            if time.monotonic() > deadline:
                late = [r for r, p in enumerate(procs) if p.poll() is None]
                raise NativeRunError(
                    f"native part{'ies' if len(late) > 1 else 'y'} rank "
                    f"{', '.join(map(str, late))} did not finish within {timeout:.0f} s; "
                    f"killed (rank {late[-1]}'s log: {_tail(logs[late[-1]]) or 'empty'})")
            time.sleep(0.005)
        ended = time.monotonic()
    finally:
        _stop(procs)
    codes = [p.returncode for p in procs]
    if codes[0] == PORT_TAKEN:
        return None
    failed = [r for r, c in enumerate(codes) if c != 0]
    if failed:
        bad, why = _first_failure(failed, reports, logs)
        raise NativeRunError(f"native party rank {bad} failed (exit status {codes[bad]}): "
                             f"{why}")
    try:
        parsed = [json.loads(r.read_text()) for r in reports]
    except (OSError, ValueError) as exc:
        raise NativeRunError(f"a native party ended without a readable report ({exc})"
                             ) from None
    return NativeRun(launched, ended, parsed)

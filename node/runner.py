"""Start, supervise and stop party processes (node/party.py), one per job on this node.

``PartyLauncher`` gives each job a party process of its own (``PartyProcess``), taken from a
small pool of warm workers started ahead of time (party.py imports torch and CrypTen before it
reads its spec; each worker serves one job only, so isolation is that of a fresh process), or
started cold when none is there. The process gets an almost empty environment: nothing of the
node's (no data dir, no token) is inherited.

The supervisor reads the party's events, enforces the whole-job time limit, and turns every
way a party can end into one outcome with a reason a person can act on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_WARM", "MIN_FREE_MEMORY", "Outcome", "PartyLauncher", "PartyProcess",
           "available_memory", "interface_of", "parties_on_host", "party_threads", "resident_bytes"]

logger = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]


def interface_of(address: str) -> str | None:
    """The network interface holding ``address`` (Linux), for GLOO_SOCKET_IFNAME: gloo then
    listens on that interface's address, not on whatever the host name resolves to (often
    127.0.0.1, which other hosts cannot reach, or the LAN address for a node that was asked to
    stay on the loopback). A loopback address gives the loopback interface. None when it
    cannot tell."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl
    import struct

    if address == "localhost":
        address = "127.0.0.1"
    loopback = None
    for _, name in socket.if_nameindex():
        request = struct.pack("256s", name.encode()[:15])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                flags_reply = fcntl.ioctl(s.fileno(), 0x8913, request)  # SIOCGIFFLAGS
                packed = fcntl.ioctl(s.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue
        if socket.inet_ntoa(packed[20:24]) == address:
            return name
        if struct.unpack_from("H", flags_reply, 16)[0] & 0x8 and loopback is None:  # IFF_LOOPBACK
            loopback = name
    return loopback if address.startswith("127.") else None


def parties_on_host(parties: list[dict[str, Any]], me: str, host: str,
                    host_of: Callable[[str], str]) -> int:
    """How many of a job's ``parties`` run on this machine (``me`` included): those whose
    node has this node's address ``host`` (``host_of`` a node id: its address in the peer
    book), counting every loopback address as one. Parties on other machines bring their
    own cores."""
    def local(address: str) -> bool:
        return address == host or (address.startswith("127.") and host.startswith("127."))

    count = sum(1 for q in parties
                if q.get("node_id") == me or (q.get("node_id") and local(host_of(q["node_id"]))))
    return max(1, count)


def party_threads(sharing: int) -> int:
    """Threads for a party process when ``sharing`` party processes (of this job and of
    others) compute on this host at once: its cores, divided between them
    (shared/PLATFORM.md: more threads than cores slows CrypTen down)."""
    return max(1, (os.cpu_count() or 1) // max(1, sharing))


@dataclass
class Outcome:
    state: str  # succeeded | failed | cancelled
    reason: str = ""
    kind: str = ""
    result: Any = None
    released: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class PartyProcess:
    """A running party: feed it its spec, read its events, end it."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, started: float) -> None:
        self.proc = proc
        self.log_path = log_path
        self.started = started
        self.warm = False  # taken from the pool: started ahead of its job
        self._cancel_reason: str | None = None
        self._first: asyncio.Future[bytes] | None = None  # its "imported" line, read early
        self.held = False  # stopped (SIGSTOP) in the middle of its import while a job runs

    @property
    def ready(self) -> bool:
        """Imported torch and CrypTen, waiting for a spec."""
        return self._first is not None and self._first.done()

    async def imported(self) -> None:
        """Wait until the process has imported (or ended); its first line is kept for
        ``supervise``."""
        if self._first is None:
            assert self.proc.stdout
            self._first = asyncio.ensure_future(self.proc.stdout.readline())
        await asyncio.wait({self._first})

    def take(self) -> None:
        """A job takes this worker now: its timings count from here."""
        self.hold(False)
        self.warm = True
        self.started = time.monotonic()

    def hold(self, stop: bool) -> None:
        """Stop (or let go on with) a worker's import: an import (about 1.5 s of CPU) must
        not take cores from a running job. Only a worker not yet ready is ever stopped."""
        if stop == self.held or self.proc.returncode is not None or (stop and self.ready):
            return
        try:
            os.kill(self.proc.pid, signal.SIGSTOP if stop else signal.SIGCONT)
            self.held = stop
        except ProcessLookupError:
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, reason: str) -> None:
        """End the party now, for ``reason`` (SIGKILL works on a stopped process too)."""
        self._cancel_reason = self._cancel_reason or reason
        self._terminate()

    def _terminate(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    async def supervise(self, spec: dict[str, Any], blobs: list[bytes], limit_s: float,
                        on_event: EventSink) -> Outcome:
        """Send the spec and the assets' bytes, follow the events until the party ends; never
        longer than ``limit_s``."""
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
            for blob in blobs:
                self.proc.stdin.write(blob)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the party died already; its exit status tells why
        timings: dict[str, float] = {"spawn_to_spec_s": time.monotonic() - self.started,
                                     "warm": float(self.warm)}
        outcome: Outcome | None = None
        try:
            outcome = await asyncio.wait_for(self._follow(on_event, timings), timeout=limit_s)
        except TimeoutError:
            self.kill(f"the job ran past its time limit of {limit_s:.0f} s")
        finally:
            if self.proc.returncode is None and outcome is not None:
                try:  # a party that reported may be finishing its exit; give it a moment
                    await asyncio.wait_for(self.proc.wait(), timeout=2)
                except TimeoutError:
                    pass
            self._terminate()
            if self.proc.stdin and not self.proc.stdin.is_closing():
                self.proc.stdin.close()
            await self.proc.wait()
        timings["total_s"] = time.monotonic() - self.started
        if self._cancel_reason and (outcome is None or outcome.state != "succeeded"):
            state = "cancelled" if self._cancel_reason.startswith("cancelled") else "failed"
            if outcome is None or outcome.kind in ("peer_lost", "peer_timeout", ""):
                outcome = Outcome(state, self._cancel_reason, kind="stopped")
        if outcome is None:
            outcome = Outcome("failed", self._exit_reason(), kind="crashed")
        outcome.timings = {**timings, **outcome.timings}
        return outcome

    async def _follow(self, on_event: EventSink, timings: dict[str, float]) -> Outcome | None:
        assert self.proc.stdout
        while True:
            try:
                if self._first is not None:
                    first, self._first = self._first, None
                    line = await first
                else:
                    line = await self.proc.stdout.readline()
            except ValueError:  # a line over the stream limit: not from a well-behaved party
                self.kill("the party sent an event larger than the node accepts")
                await self.proc.wait()
                return None
            if not line:
                await self.proc.wait()
                return None
            try:
                event = json.loads(line)
                name = str(event.pop("event"))
            except (ValueError, KeyError, TypeError):
                logger.warning("party %s sent a malformed event line", self.pid)
                continue
            if name == "result":
                timings.update(event.get("timings", {}))
                return Outcome("succeeded", "", result=event.get("value"),
                               released=bool(event.get("released")),
                               stats={**event.get("stats", {}),
                                      "revealed": event.get("revealed", 0)})
            if name == "error":
                return Outcome("failed", str(event.get("message", "the party failed")),
                               kind=str(event.get("kind", "")))
            timings[f"{name}_at_s"] = time.monotonic() - self.started  # since launch
            for key, value in event.items():
                if key.endswith("_s") and isinstance(value, (int, float)):
                    timings[key] = float(value)
            try:
                await on_event(name, event)
            except Exception:  # noqa: BLE001 - recording failed (a full disk): the party
                # goes on, and its outcome is still recorded (or says why not)
                logger.exception("party %s: its %r event could not be recorded", self.pid,
                                 name)

    def _exit_reason(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return f"the party process was killed by {name}"
        if code == 3:
            return "the party process lost its node"
        return f"the party process exited with code {code} without a result (log: {self.log_path})"


MIN_FREE_MEMORY = 1 << 30  # no new worker or party while less than this is available
MAX_WARM = 8


def available_memory() -> int | None:
    """MemAvailable (Linux), in bytes; None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resident_bytes(pid: int) -> int:
    """The resident memory of a process (Linux), 0 where it cannot tell."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PartyLauncher:
    """A fresh party process per job, from a small pool of warm workers when one is there.

    A worker is a party process started ahead of time: it imports torch and CrypTen (about
    1.5 s of CPU, about 240 MB) and waits for its spec. A job takes one, and the worker runs
    that job only and exits, so each job still gets a process of its own with its own limits
    and the whole lockdown (applied after the spec arrives); only the import leaves the job's
    critical path. A job that finds no worker ready takes one still importing, or else starts
    a cold one.

    The pool is filled when the node starts and refilled only while no party process this
    launcher handed out is running, one worker at a time, and only while at least
    ``MIN_FREE_MEMORY`` is available. A worker still importing when a job starts is stopped
    (SIGSTOP) until no job runs, unless a job takes it: a refill never competes with a job.
    ``warm=0`` turns the pool off."""

    def __init__(self, log_dir: Path, warm: int = 2) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.size = max(0, min(int(warm), MAX_WARM))
        self._workers: list[PartyProcess] = []
        self._handed: set[PartyProcess] = set()  # running a job (or a dry run)
        self._count = 0
        self._wake = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self.paused = ""  # why the pool is not being refilled, for the status bar
        self.taken = 0
        self._ended: list[asyncio.Future[None]] = []

    def start(self) -> None:
        """Begin filling the pool (on the running loop)."""
        if self.size and self._filler is None:
            self._filler = asyncio.ensure_future(self._fill())
            self._wake.set()

    def busy(self) -> bool:
        """A party process this launcher handed out is still running."""
        return bool(self._handed)

    async def _until_ended(self, run: PartyProcess) -> None:
        try:
            await run.proc.wait()
        finally:
            self._handed.discard(run)
            self._hold_imports()
            self._wake.set()  # refill once none runs

    def _hold_imports(self) -> None:
        """Workers still importing wait, stopped, while a job runs, and go on once none does."""
        busy = self.busy()
        for worker in self._alive():
            worker.hold(busy)

    async def _fill(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._alive()) < self.size:
                if self.busy():
                    self.paused = "a job is running"
                    break
                free = available_memory()
                if free is not None and free < MIN_FREE_MEMORY:
                    self.paused = f"only {free >> 20} MB of memory is available"
                    break
                self.paused = ""
                self._count += 1
                worker = await self._spawn(self.log_dir / f"warm-{os.getpid()}-{self._count}.log",
                                           threads=1)
                self._workers.append(worker)
                self._hold_imports()  # a job may have started meanwhile
                await worker.imported()  # one at a time: never a burst of imports
            if self.paused:  # look again in a while, or at the next job's end
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=5.0)
                except TimeoutError:
                    self._wake.set()

    def _alive(self) -> list[PartyProcess]:
        self._workers = [w for w in self._workers if w.proc.returncode is None]
        return self._workers

    def status(self) -> dict[str, Any]:
        alive = self._alive()
        return {"size": self.size, "ready": sum(1 for w in alive if w.ready),
                "starting": sum(1 for w in alive if not w.ready),
                "held": sum(1 for w in alive if w.held),
                "memory_bytes": sum(resident_bytes(w.pid) for w in alive),
                "taken": self.taken, "paused": self.paused}

    async def launch(self, job_id: str, threads: int) -> PartyProcess:
        """A party process for ``job_id``; the job's timings count from this moment."""
        log_path = self.log_dir / f"{job_id}.log"
        alive = self._alive()
        if alive:
            worker = min(alive, key=lambda w: not w.ready)  # a ready one first
            self._workers.remove(worker)
            self.taken += 1
            try:
                os.replace(worker.log_path, log_path)  # its open log becomes the job's
                worker.log_path = log_path
            except OSError:
                pass
            worker.take()
            run = worker
        else:
            run = await self._spawn(log_path, threads)
        self._handed.add(run)
        self._hold_imports()
        self._ended = [t for t in self._ended if not t.done()]
        self._ended.append(asyncio.ensure_future(self._until_ended(run)))
        return run

    async def _spawn(self, log_path: Path, threads: int) -> PartyProcess:
        env = {
            "PATH": os.defpath,
            "OMP_NUM_THREADS": str(threads),  # the spec sets the job's count (torch)
            "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
        }
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # owner's only
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.party",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, env=env, cwd="/", start_new_session=True,
                limit=32 << 20,
            )
        finally:
            os.close(log)
        logger.info("party process %d started (log %s)", proc.pid, log_path.name)
        return PartyProcess(proc, log_path, time.monotonic())

    async def close(self) -> None:
        for task in [self._filler, *self._ended]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._filler, *self._ended] if t is not None),
                             return_exceptions=True)
        for worker in self._workers:
            worker.kill("the node is stopping")
            await worker.proc.wait()
        self._workers.clear()

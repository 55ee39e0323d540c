"""Start, supervise and stop party processes (node/party.py), one per job on this node.

A ``Launcher`` turns a party spec into a running ``PartyProcess``. ``SpawnLauncher`` starts a
fresh interpreter per job; a warm pool can implement the same interface by starting workers
ahead of time (party.py imports torch and CrypTen before it reads its spec) and giving each
worker exactly one job, so isolation is the same. The process gets an almost empty
environment: nothing of the node's (no data dir, no token) is inherited.

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


def party_threads(world_size: int) -> int:
    """Threads per party: cores shared between the parties on this host (shared/PLATFORM.md)."""
    return max(1, (os.cpu_count() or 1) // max(1, world_size))


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
        self._cancel_reason: str | None = None

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
        timings: dict[str, float] = {"spawn_to_spec_s": time.monotonic() - self.started}
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
            await on_event(name, event)

    def _exit_reason(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return f"the party process was killed by {name}"
        if code == 3:
            return "the party process lost its node"
        return f"the party process exited with code {code} without a result (log: {self.log_path})"


class SpawnLauncher:
    """A fresh interpreter per job (the default)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        pass

    async def launch(self, job_id: str, threads: int) -> PartyProcess:
        return await self._spawn(self.log_dir / f"{job_id}.log", threads)

    async def _spawn(self, log_path: Path, threads: int) -> PartyProcess:
        env = {
            "PATH": os.defpath,
            "OMP_NUM_THREADS": str(threads),
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


class WarmLauncher(SpawnLauncher):
    """Keeps ``size`` party processes started and importing ahead of time.

    Each worker still runs exactly one job and then exits, so isolation is that of a fresh
    spawn; only the ~2 s import of torch and CrypTen moves off the job's critical path."""

    def __init__(self, log_dir: Path, size: int = 1, threads: int = 1) -> None:
        super().__init__(log_dir)
        self.size = size
        self.threads = threads
        self._ready: list[PartyProcess] = []
        self._count = 0

    async def _refill(self) -> None:
        while len(self._ready) < self.size:
            self._count += 1
            self._ready.append(await self._spawn(self.log_dir / f"warm-{os.getpid()}-"
                                                 f"{self._count}.log", self.threads))

    async def launch(self, job_id: str, threads: int) -> PartyProcess:
        while self._ready:
            worker = self._ready.pop(0)
            if worker.proc.returncode is None:
                await self._refill()
                return worker
        await self._refill()
        return await super().launch(job_id, threads)

    async def close(self) -> None:
        for worker in self._ready:
            worker.kill("the node is stopping")
            await worker.proc.wait()
        self._ready.clear()

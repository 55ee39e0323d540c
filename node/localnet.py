"""Several real nodes on this machine's loopback, each its own ``parley node`` process.

Used by ``parley demo``, ``parley bench`` and the tests: one way to start, reach and stop
a node from another process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from node.address import url_address
from node.client import NodeClient, Party
from node.errors import NodeUnreachable

__all__ = ["LocalNode", "all_party_processes", "party_pids"]


class LocalNode:
    """A ``parley node`` child process with its own data dir (the one wrapper the demo, the
    bench and the tests use).

    ``exec_prefix``: a command the node runs under, such as ``ip netns exec NS`` for a node in
    another network namespace; such a node is driven through its command line (``cli``,
    ``json``), since its admin API listens on that namespace's loopback (``client`` is None).

    ``auto_approve``: the node approves every job from itself and from each node it is paired
    with by ``pair_with``, by a standing approval of kind "any" for each (the demo's, the
    bench's and most tests' nodes): the same policies an owner sets, not a second path."""

    def __init__(self, name: str, data_dir: Path, auto_approve: bool = False,
                 extra_args: tuple[str, ...] = ("--no-mdns",), warm_workers: int | None = None,
                 exec_prefix: tuple[str, ...] = ()) -> None:
        self.name = name
        self.exec_prefix = tuple(exec_prefix)
        self.warm_workers = warm_workers
        self.data_dir = Path(data_dir)
        self.auto_approve = auto_approve
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: NodeClient | None = None
        self.peer_url = ""
        self.node_id = ""

    def start(self, timeout: float = 60) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        info_file = self.data_dir / "node.json"
        info_file.unlink(missing_ok=True)
        cmd = [*self.exec_prefix, sys.executable, "-m", "node.cli", "node", "--data-dir",
               str(self.data_dir), "--name", self.name, *self.extra_args]
        if self.peer_url:  # a restart keeps the address its peers know
            cmd += ["--port", str(url_address(self.peer_url)[1])]
        if self.warm_workers is not None:
            cmd += ["--warm-workers", str(self.warm_workers)]
        log = os.fdopen(os.open(self.data_dir / "node.log", os.O_WRONLY | os.O_CREAT |
                                os.O_APPEND, 0o600), "ab")  # the node's data dir is private
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NodeUnreachable(f"node {self.name} exited at start (code "
                                      f"{self.proc.returncode}); see {self.data_dir/'node.log'}")
            if info_file.exists():
                try:
                    info = json.loads(info_file.read_text())
                    if info.get("pid") == self.proc.pid:  # (``ip netns exec`` execs: same pid)
                        self.client = (None if self.exec_prefix
                                       else NodeClient(info["admin_url"], info["token"]))
                        self.peer_url = info["peer_url"]
                        self.node_id = info["id"]
                        if self.auto_approve:  # the jobs it sends itself
                            self.approve_all_from(self)
                        return self
                except ValueError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise NodeUnreachable(f"node {self.name} did not start within {timeout:.0f} s")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``parley ARGS --data-dir DIR`` beside this node (in its namespace, if it has one)."""
        return subprocess.run([*self.exec_prefix, sys.executable, "-m", "node.cli", *args,
                               "--data-dir", str(self.data_dir)], check=False,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def json(self, *args: str, timeout: float = 60) -> Any:
        """``cli(ARGS --json)``'s answer; NodeUnreachable with its stderr if it failed."""
        out = self.cli(*args, "--json", timeout=timeout)
        if out.returncode != 0:
            raise NodeUnreachable(f"parley {' '.join(args)} at {self.name}: {out.stderr}")
        return json.loads(out.stdout)

    def log(self, tail: int = 3000) -> str:
        path = self.data_dir / "node.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else "(no log)"

    def party_logs(self) -> str:
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((self.data_dir / "party-logs").glob("*.log")))

    @property
    def api(self) -> NodeClient:
        """``client``, or NodeUnreachable for a node not started or one in another network
        namespace (``exec_prefix``), which is driven through ``cli`` and ``json`` instead."""
        if self.client is None:
            why = (f"it runs under {' '.join(self.exec_prefix)}; use cli() or json()"
                   if self.exec_prefix else "it is not started")
            raise NodeUnreachable(f"node {self.name} has no admin API client: {why}")
        return self.client

    @property
    def party(self) -> Party:
        return Party(self.name, self.node_id)

    @property
    def address(self) -> str:
        return self.peer_url.removeprefix("https://")

    def pair_with(self, other: LocalNode) -> None:
        """Pair two nodes as their owners would: ask, compare the codes, both confirm."""
        assert self.client is not None and other.client is not None
        asked = self.client.pair(other.address)
        theirs = next(p for p in other.client.pairings() if p["id"] == asked["id"])
        if theirs["code"] != asked["code"]:
            raise NodeUnreachable(f"pairing codes differ ({asked['code']} / {theirs['code']})")
        other.client.decide_pairing(asked["id"], confirm=True)
        self.client.decide_pairing(asked["id"], confirm=True)
        if self.auto_approve:
            self.approve_all_from(other)
        if other.auto_approve:
            other.approve_all_from(self)

    def approve_all_from(self, other: LocalNode) -> None:
        """A standing approval of every job from ``other`` (this node itself, or a paired
        node): ``parley policy add OTHER any``, as an owner would set it for their own nodes."""
        if self.client is not None:
            self.client.add_policy(other.node_id, "any")
        else:
            self.json("policy", "add", other.node_id, "any")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL if it does not end in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def party_pids(data_dir: Path) -> list[int]:
    """Party processes (``python -m node.party``) of the node of ``data_dir`` that serve a job
    (not its idle warm workers, whose log is still a ``warm-`` file)."""
    info = json.loads((Path(data_dir) / "node.json").read_text())
    serving = []
    for pid in all_party_processes(parent=info["pid"]):
        try:
            if not Path(os.readlink(f"/proc/{pid}/fd/2")).name.startswith("warm-"):
                serving.append(pid)
        except OSError:
            continue
    return serving


def all_party_processes(parent: int | None = None) -> list[int]:
    """Live ``node.party`` processes on this machine, of one parent or of any (tests check
    none is left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if "-m node.party" in cmdline and state != "Z" and parent in (None, ppid):
            found.append(int(entry.name))
    return found

"""Talk to a local node's admin API from Python: the CLI's and scripts' one way in.

``NodeClient`` is synchronous (stdlib only) and turns problem documents back into
``ParleyError``. ``run_multiworkers`` is the seed's decorator: the decorated function's
source becomes a job that runs on the named parties; calling it returns the released results.

    @run_multiworkers([ALICE, BOB], client=NodeClient.for_data_dir("~/carol"),
                      bindings=[("bc-model", 0, "model"), ("bc-data", 1, "dataset")])
    def run_encrypted_inference(crypten):
        ...
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from node.errors import JobFailed, NodeUnreachable, error_from_problem
from node.paths import data_dir as default_data_dir
from node.paths import node_running
from node.wire import decode

__all__ = ["NodeClient", "Party", "TERMINAL_STATES", "job_source", "results", "run_multiworkers"]

TERMINAL_STATES = ("succeeded", "failed", "rejected", "cancelled")


@dataclass(frozen=True)
class Party:
    """A party of a job: a paired peer (or this node), by name or by node id."""

    name: str
    node_id: str = ""

    def spec(self) -> dict[str, str]:
        return {"name": self.name, **({"node_id": self.node_id} if self.node_id else {})}


class NodeClient:
    def __init__(self, admin_url: str, token: str) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.token = token

    @classmethod
    def for_data_dir(cls, data_dir: str | os.PathLike[str] | None = None) -> NodeClient:
        """The node that runs on ``data_dir`` (its node.json says where and with which token)."""
        path = default_data_dir(os.path.expanduser(str(data_dir)) if data_dir else None)
        info_file = path / "node.json"
        try:
            if not node_running(path):  # a node.json left behind by a crash
                raise OSError("no node holds the data dir's lock")
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            raise NodeUnreachable(f"no node is running for {path}; start one with "
                                  f"`parley node --data-dir {path}`") from None
        return cls(info["admin_url"], info["token"])

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                document = json.loads(exc.read())
            except ValueError:
                document = None
            raise error_from_problem(document, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise NodeUnreachable(f"the node at {self.admin_url} did not answer ({exc}); is "
                                  f"`parley node` running?") from None

    # -- owner actions ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.call("GET", "/admin/v1/status")

    def assets(self, tags: Iterable[str] = ()) -> list[dict[str, Any]]:
        query = "&".join(f"tag={urllib.parse.quote(t)}" for t in tags)
        return self.call("GET", "/admin/v1/assets" + (f"?{query}" if query else ""))["assets"]

    def publish(self, path: str | os.PathLike[str], tags: Iterable[str] = (), name: str | None
                = None, description: str = "", label_column: str | None = None,
                min_rows: int | None = None, dp: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        """Import a dataset or model. ``min_rows`` and ``dp``: a dataset's privacy settings
        (node/privacy.py; the node's defaults when not given)."""
        privacy = {k: v for k, v in (("min_rows", min_rows), ("dp", dp)) if v is not None}
        return self.call("POST", "/admin/v1/assets", {
            "path": str(Path(path).expanduser().resolve()), "tags": list(tags), "name": name,
            "description": description, "label_column": label_column,
            **({"privacy": privacy} if privacy else {})}, timeout=120)

    def jobs(self, role: str | None = None, states: Iterable[str] = ()) -> list[dict[str, Any]]:
        params = ([f"role={role}"] if role else []) + [f"state={s}" for s in states]
        return self.call("GET", "/admin/v1/jobs" + ("?" + "&".join(params) if params else ""))[
            "jobs"]

    def job(self, job_id: str, role: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"/admin/v1/jobs/{job_id}" + (f"?role={role}" if role else ""))

    def approve(self, job_id: str, proposal_hash: str, always: bool = False) -> dict[str, Any]:
        """Approve the proposal whose hash (or its first 8+ characters) the owner reviewed."""
        return self.call("POST", f"/admin/v1/jobs/{job_id}/approve",
                         {"proposal_hash": proposal_hash, "always": always})

    def reject(self, job_id: str, reason: str) -> dict[str, Any]:
        return self.call("POST", f"/admin/v1/jobs/{job_id}/reject", {"reason": reason})

    def policies(self) -> list[dict[str, Any]]:
        return self.call("GET", "/admin/v1/policies")["policies"]

    def add_policy(self, orchestrator: str, kind: str) -> dict[str, Any]:
        return self.call("POST", "/admin/v1/policies", {"orchestrator": orchestrator,
                                                        "kind": kind})

    def remove_policy(self, orchestrator: str, kind: str) -> dict[str, Any]:
        return self.call("DELETE", "/admin/v1/policies", {"orchestrator": orchestrator,
                                                          "kind": kind})

    # -- peers and trust ------------------------------------------------------------------
    def peers(self) -> list[dict[str, Any]]:
        return self.call("GET", "/admin/v1/peers")["peers"]

    def add_peer(self, address: str) -> dict[str, Any]:
        return self.call("POST", "/admin/v1/peers", {"address": address})

    def pair(self, peer: str) -> dict[str, Any]:
        """Ask a peer (name or HOST:PORT) to pair; the answer carries the code to compare."""
        return self.call("POST", "/admin/v1/pairings", {"peer": peer})

    def pairings(self) -> list[dict[str, Any]]:
        return self.call("GET", "/admin/v1/pairings")["pairings"]

    def decide_pairing(self, pairing_id: str, confirm: bool) -> dict[str, Any]:
        action = "confirm" if confirm else "reject"
        return self.call("POST", f"/admin/v1/pairings/{pairing_id}/{action}", {})

    def unpair(self, peer: str) -> dict[str, Any]:
        return self.call("DELETE", f"/admin/v1/peers/{urllib.parse.quote(peer)}")

    def search(self, tags: Iterable[str], timeout: float = 3.0) -> dict[str, Any]:
        query = "&".join(f"tag={urllib.parse.quote(t)}" for t in tags)
        return self.call("GET", f"/admin/v1/search?{query}&timeout={timeout}",
                         timeout=timeout + 10)

    def audit(self, kind: str | None = None, peer: str | None = None, job: str | None = None
              ) -> dict[str, Any]:
        """The audit log, its chain verified; the entries of one kind, peer or job."""
        query = "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in
                         (("kind", kind), ("peer", peer), ("job", job)) if v)
        return self.call("GET", "/admin/v1/audit" + (f"?{query}" if query else ""))

    def dry_run(self, source: str, entry: str = "run", time_s: float = 180) -> dict[str, Any]:
        return self.call("POST", "/admin/v1/dry-run", {"source": source, "entry": entry,
                                                       "time_s": time_s},
                         timeout=time_s + 120)

    def dry_run_job(self, job_id: str) -> dict[str, Any]:
        """A received proposal run here alone on mock data, under its own limits."""
        return self.call("POST", f"/admin/v1/jobs/{job_id}/dry-run", {}, timeout=86400)

    def update_asset(self, asset_id: str, **changes: Any) -> dict[str, Any]:
        """Change an asset's name, tags, description or (a dataset's) privacy settings."""
        return self.call("PATCH", f"/admin/v1/assets/{urllib.parse.quote(asset_id)}",
                         changes)

    def remove_asset(self, asset_id: str) -> dict[str, Any]:
        return self.call("DELETE", f"/admin/v1/assets/{urllib.parse.quote(asset_id)}")

    # -- orchestrating ------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/admin/v1/orchestrations", spec)

    def orchestration(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/admin/v1/orchestrations/{job_id}")

    def cancel(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return self.call("POST", f"/admin/v1/orchestrations/{job_id}/cancel", {"reason": reason})

    def events(self, after: int = 0, timeout: float = 0, job_id: str | None = None,
               role: str | None = None) -> dict[str, Any]:
        """Events after ``after``, waiting up to ``timeout`` s for one (a long poll)."""
        query = f"after={after}&timeout={timeout}" + (f"&job={job_id}" if job_id else "") + (
            f"&role={role}" if role else "")
        return self.call("GET", f"/admin/v1/events?{query}", timeout=timeout + 15)

    def wait(self, job_id: str, timeout: float = 900) -> dict[str, Any]:
        """The orchestration once it has ended (succeeded, failed, rejected or cancelled),
        following the node's event log rather than asking again and again."""
        deadline = time.monotonic() + timeout
        cursor = 0
        while True:
            job = self.orchestration(job_id)
            if job["state"] in TERMINAL_STATES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobFailed(f"job {job_id} is still {job['state']} after {timeout:.0f} s; "
                                f"`parley jobs` shows it, `parley cancel {job_id}` stops it")
            while remaining > 0:  # until this job's orchestration changes state
                answer = self.events(cursor, min(remaining, 25), job_id, "orchestrator")
                cursor = answer["last_seq"]
                if any(e["kind"] == "job.state" for e in answer["events"]):
                    break
                remaining = deadline - time.monotonic()


def job_source(fn: Callable[..., Any]) -> str:
    """A function's source without its decorators: what the parties review and run."""
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("def "))
    return "\n".join(lines[start:]) + "\n"


def results(job: dict[str, Any]) -> dict[int, Any]:
    """The released results of a finished orchestration, by rank (tensors as numpy arrays)."""
    if job["state"] != "succeeded":
        raise JobFailed(f"job {job['id']} {job['state']}: {job['reason']}")
    return {int(rank): decode(value) for rank, value in (job.get("result") or {}).items()}


class JobFunction(Protocol):
    """What ``run_multiworkers`` makes of a function: calling it runs the job and returns the
    results by rank; ``spec`` is the job spec it submits."""

    spec: dict[str, Any]

    def __call__(self) -> dict[int, Any]: ...


def run_multiworkers(parties: list[Party], *, client: NodeClient,
                     bindings: Iterable[tuple[str, int, str]] = (), result_to: Iterable[int] = (0,),
                     title: str = "", limits: dict[str, float] | None = None,
                     precision_bits: int | None = None, timeout: float = 900
                     ) -> Callable[[Callable[..., Any]], JobFunction]:
    """Run the decorated function as a CrypTen job on ``parties`` (rank = position).

    ``precision_bits`` sets CrypTen's fixed-point precision for the job (default 16): more bits
    for inputs with small values under large weights, fewer for very large intermediates."""

    def decorate(fn: Callable[..., Any]) -> JobFunction:
        spec = {
            "title": title or fn.__name__, "parties": [p.spec() for p in parties],
            "source": job_source(fn), "entry": fn.__name__,
            "bindings": [{"tag": t, "rank": r, "kind": k} for t, r, k in bindings],
            "result_to": list(result_to), "limits": limits or {},
        }
        if precision_bits is not None:
            spec["crypten"] = {"precision_bits": precision_bits}

        @functools.wraps(fn)
        def run() -> dict[int, Any]:
            job = client.submit(spec)
            return results(client.wait(job["id"], timeout=timeout))

        run.spec = spec  # type: ignore[attr-defined]  # a function object takes attributes
        return cast(JobFunction, run)

    return decorate

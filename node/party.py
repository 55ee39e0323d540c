"""One CrypTen party of one job, in its own process: ``python -m node.party``.

The node (node/runner.py) starts this process and talks to it through pipes only:

* stdin, first line: the party spec (JSON, see ``PartySpec`` in node/runner.py). After that
  stdin stays open as a life line: when it closes (the node died), the party exits at once.
* stdout: one JSON event per line (``imported``, ``joined``, ``loaded``, ``result``, ``error``).
  The job's own ``print`` goes to stderr, so it can never forge an event.

The process imports torch and CrypTen *before* it reads the spec. A warm pool can therefore
start workers ahead of time and hand each one a single job, without weakening isolation: a
worker never runs two jobs.

Every wait is bounded. The rendezvous uses ``timeouts.rendezvous``; every collective after it
uses ``timeouts.op`` (torch reads ``default_pg_timeout`` when each process group is made, and
CrypTen's traffic runs on groups it makes right after the rendezvous). A party that dies makes
the others fail in about 2 s (connection closed); one that freezes, within ``timeouts.op``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback
from datetime import timedelta
from typing import Any

_T0 = time.perf_counter()
_channel = os.fdopen(os.dup(1), "w", buffering=1)  # events; fd 1 is pointed at stderr below
os.dup2(2, 1)
sys.stdout = sys.stderr


def emit(event: str, **fields: Any) -> None:
    _channel.write(json.dumps({"event": event, "t": time.perf_counter() - _T0, **fields}) + "\n")
    _channel.flush()


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the node dies, even if it could not clean up."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _watch_life_line() -> None:
    """Exit when stdin closes: the node is gone or wants us gone."""

    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(3)

    threading.Thread(target=watch, name="life-line", daemon=True).start()


_die_with_parent()
_parent = os.getppid()

import torch  # noqa: E402

from node.compat import crypten  # noqa: E402
from node import jobapi, wire  # noqa: E402

_IMPORT_S = time.perf_counter() - _T0


def _classify(exc: BaseException) -> tuple[str, str]:
    """A short kind and a message for people; no traceback, no data values."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = str(exc).lower()
    if isinstance(exc, jobapi.JobApiError) or isinstance(exc, wire.WireError):
        return "job_error", text
    if isinstance(exc, RuntimeError) and (
        "connection closed" in low or "connection reset" in low or "broken pipe" in low
        or "connection refused" in low
    ):
        return "peer_lost", "lost the connection to another party (it stopped or crashed)"
    if isinstance(exc, RuntimeError) and ("timed out" in low or "timeout" in low):
        return "peer_timeout", "another party stopped answering (timed out waiting for it)"
    tb = traceback.extract_tb(exc.__traceback__)
    job_frames = [f for f in tb if f.filename == jobapi.JOB_FILENAME]
    where = f" at line {job_frames[-1].lineno} of the job" if job_frames else ""
    return "job_error", f"{type(exc).__name__}{where}: {text}"


def run(spec: dict[str, Any]) -> int:
    rank, world = int(spec["rank"]), int(spec["world_size"])
    timeouts = spec.get("timeouts", {})
    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    os.environ.update(
        DISTRIBUTED_BACKEND="gloo",
        RENDEZVOUS=spec["rendezvous"],
        WORLD_SIZE=str(world),
        RANK=str(rank),
    )
    if spec.get("gloo_ifname"):
        os.environ["GLOO_SOCKET_IFNAME"] = spec["gloo_ifname"]

    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    rendezvous_t = timedelta(seconds=float(timeouts.get("rendezvous", 60)))
    op_t = timedelta(seconds=float(timeouts.get("op", 10)))
    real_init = dist.init_process_group

    def bounded_init(*args: Any, **kwargs: Any) -> None:
        kwargs["timeout"] = rendezvous_t
        real_init(*args, **kwargs)
        c10d.default_pg_timeout = op_t  # every group CrypTen makes from here on

    dist.init_process_group = bounded_init
    c10d.default_pg_timeout = rendezvous_t

    t = time.perf_counter()
    crypten.init()
    crypten.cfg.communicator.verbose = True
    crypten.cfg.encoder.precision_bits = int(spec.get("precision_bits", 16))
    emit("joined", rendezvous_s=time.perf_counter() - t)

    t = time.perf_counter()
    api = jobapi.JobCrypten(rank=rank, world_size=world, assets=spec["assets"],
                            reveal_to=spec.get("reveal_to"))
    fn = jobapi.compile_job(spec["source"], spec["entry"])
    comm = crypten.communicator.get()
    comm.reset_communication_stats()
    emit("running", setup_s=time.perf_counter() - t)

    t = time.perf_counter()
    value = fn(api)
    compute_s = time.perf_counter() - t
    stats = comm.get_communication_stats()
    released = rank in spec.get("result_to", [])
    emit(
        "result",
        released=released,
        value=wire.encode(value) if released else None,
        timings={"import_s": _IMPORT_S, "compute_s": compute_s, "load_s": api.load_s},
        stats={"rounds": int(stats["rounds"]), "bytes": int(stats["bytes"]),
               "comm_s": float(stats["time"])},
    )
    return 0


def main() -> None:
    emit("imported", import_s=_IMPORT_S)
    line = sys.stdin.readline()
    if os.getppid() != _parent:
        os._exit(3)
    _watch_life_line()
    try:
        spec = json.loads(line)
        code = run(spec)
    except BaseException as exc:  # every failure becomes an event, never a bare traceback
        kind, message = _classify(exc)
        traceback.print_exc(file=sys.stderr)
        emit("error", kind=kind, message=message)
        code = 1
    _channel.flush()
    os._exit(code)  # skip interpreter teardown (0.77 s) and gloo's destructors


if __name__ == "__main__":
    main()

"""One CrypTen party of one job, in its own process: ``python -m node.party``.

The node (node/runner.py) starts this process with an almost empty environment and talks to
it through pipes only:

* stdin: one JSON line, the party spec (see ``PartySpec`` fields in ``run``), then the raw
  bytes of this party's approved assets, in the order and sizes the spec lists. The process
  never learns where the node keeps anything. After that, stdin stays open as a life line:
  when it closes (the node died), the party exits at once.
* stdout: one JSON event per line (``imported``, ``joined``, ``locked``, ``running``,
  ``reveal``, ``result``, ``error``). The job's own ``print`` goes to stderr (the node's log
  of this party), so it can never forge an event.

The trusted bootstrap, in order: import torch and CrypTen (before the spec, so a warm pool
can start workers ahead of time, each used for one job only); read the spec and assets;
``crypten.init()``, which meets the other parties at the store rank 0's node serves for this
job (``parley://KEY@HOST:PORT``, node/compat.py fix 6) and makes every process group and its
gloo connections, after which the store is let go and the key forgotten; the static check of
the source (layer 2); the OS lockdown (layer 4: rlimits, no_new_privs, Landlock, seccomp);
then the job's code under the runtime jail (layer 3) with reveal control. gloo listens on the
node's interface (``gloo_ifname``); a party alone (a dry run) meets nobody and listens on the
loopback.

Every wait is bounded: the rendezvous by ``timeouts.rendezvous``, every collective after it by
``timeouts.op`` (torch reads ``default_pg_timeout`` when each group is made, and CrypTen makes
its groups right after the rendezvous).
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from datetime import timedelta
from typing import Any, cast

_T0 = time.perf_counter()
_channel = os.fdopen(os.dup(1), "w", buffering=1)  # events; fd 1 is pointed at stderr below
os.dup2(2, 1)
sys.stdout = sys.stderr


_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": time.perf_counter() - _T0, **fields}) + "\n"
    with _emit_lock:  # the progress thread emits too
        _channel.write(line)
        _channel.flush()


def _report_progress(comm: Any, running: threading.Event, every_s: float = 1.0) -> None:
    """Started before lockdown; once the job runs, its rounds and bytes so far, every
    ``every_s`` (the communicator's counters: reading them is safe from another thread)."""
    def loop() -> None:
        running.wait()
        started = time.perf_counter()
        while True:
            time.sleep(every_s)
            stats = comm.get_communication_stats()
            emit("progress", rounds=int(stats["rounds"]), bytes=int(stats["bytes"]),
                 elapsed_s=round(time.perf_counter() - started, 2))

    threading.Thread(target=loop, name="parley-progress", daemon=True).start()


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
        # the node's pipe: a buffered reader (typeshed says only BinaryIO, which has no read1)
        stdin = cast(io.BufferedReader, sys.stdin.buffer)
        while stdin.read1(4096):
            pass
        os._exit(3)

    threading.Thread(target=watch, name="life-line", daemon=True).start()


_die_with_parent()
_parent = os.getppid()

import torch

from node import wire
from node.compat import crypten, end_rendezvous, use_links
from node.errors import first_line
from node.jail import ALL_LAYERS, job_api, lineage, runtime
from node.rendezvous import redact_rendezvous
from node.runner import interface_of

_IMPORT_S = time.perf_counter() - _T0
_CPU_AT_SPEC = 0.0
MAX_RESULT_BYTES = 16 << 20


def _classify(exc: BaseException) -> tuple[str, str]:
    """A short kind and a message for people; no traceback, no data values."""
    text = first_line(exc)
    low = str(exc).lower()
    tb = traceback.extract_tb(exc.__traceback__)
    job_frames = [f for f in tb if f.filename == runtime.JOB_FILENAME]
    where = f" at line {job_frames[-1].lineno} of the job" if job_frames else ""
    if type(exc).__name__ == "JailRejected":
        return "jail_rejected", f"the static check refused the job: {text}"
    if isinstance(exc, runtime.JailViolation):
        return "jail_violation", f"the jail stopped the job{where}: {text}"
    if isinstance(exc, (job_api.JobApiError, wire.WireError)):
        return "job_error", text
    if isinstance(exc, MemoryError):
        return "limit", "the job ran out of its memory limit"
    if isinstance(exc, RuntimeError) and (
        "connection closed" in low or "connection reset" in low or "broken pipe" in low
        or "connection refused" in low
    ):
        return "peer_lost", "lost the connection to another party (it stopped or crashed)"
    if isinstance(exc, RuntimeError) and ("timed out" in low or "timeout" in low):
        return "peer_timeout", "another party stopped answering (timed out waiting for it)"
    return "job_error", f"{type(exc).__name__}{where}: {text}"


def _cpu_seconds() -> float:
    """CPU time of this process so far (every thread), user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _read_assets(spec: dict[str, Any]) -> None:
    """The approved assets' bytes follow the spec line on stdin, in the spec's order."""
    for blob in spec.get("blobs", []):
        size = int(blob["size"])
        data = sys.stdin.buffer.read(size)
        if len(data) != size:
            raise job_api.JobApiError("the node closed the pipe before sending every asset")
        entry = spec["assets"][blob["tag"]][str(blob["rank"])]
        entry.setdefault("data", {})[blob["part"]] = data


def _bounded_rendezvous(spec: dict[str, Any]) -> None:
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    timeouts = spec.get("timeouts", {})
    rendezvous_t = timedelta(seconds=float(timeouts.get("rendezvous", 60)))
    op_t = timedelta(seconds=float(timeouts.get("op", 10)))
    real_init = dist.init_process_group

    def bounded_init(*args: Any, **kwargs: Any) -> None:
        kwargs["timeout"] = rendezvous_t
        if kwargs.get("world_size") == 1:  # alone (a dry run): meet nobody, listen nowhere
            kwargs.pop("init_method", None)
            kwargs["store"] = dist.HashStore()
        real_init(*args, **kwargs)
        c10d.default_pg_timeout = op_t  # every group CrypTen makes from here on

    dist.init_process_group = bounded_init
    c10d.default_pg_timeout = rendezvous_t


def _lock_down(spec: dict[str, Any]) -> dict[str, Any]:
    from node.jail import lockdown

    limits = spec.get("limits", {})
    return lockdown.lock_down(lockdown.Limits(
        cpu_s=int(limits.get("cpu_s", 3600)),
        address_space_bytes=int(limits.get("memory_bytes", 8 << 30)),
        file_size_bytes=int(limits.get("log_bytes", 1 << 20)),
        open_files=None,
        read_only_paths=lockdown.default_read_only_paths(),
    ))


def run(spec: dict[str, Any]) -> int:
    rank, world = int(spec["rank"]), int(spec["world_size"])
    layers = {**ALL_LAYERS, **spec.get("layers", {})}
    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    os.environ.update(DISTRIBUTED_BACKEND="gloo", RENDEZVOUS=spec["rendezvous"],
                      WORLD_SIZE=str(world), RANK=str(rank))
    links = spec.pop("links", None)
    if links and world > 1:  # every link through the node's TLS relay (node/links.py)
        use_links(links)
    else:
        ifname = spec.get("gloo_ifname") or (interface_of("127.0.0.1") if world == 1 else None)
        if ifname:  # gloo listens on this interface's address, not the host name's
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
    _bounded_rendezvous(spec)

    t = time.perf_counter()
    crypten.init()
    end_rendezvous()  # every process group is made: the node may stop listening
    del os.environ["RENDEZVOUS"]  # it holds the job's rendezvous key: keep it out of reach
    crypten.communicator.get().rendezvous = redact_rendezvous(spec.pop("rendezvous"))
    crypten.cfg.communicator.verbose = True
    crypten.cfg.encoder.precision_bits = int(spec.get("precision_bits", 16))
    comm = crypten.communicator.get()
    emit("joined", rendezvous_s=time.perf_counter() - t)

    t = time.perf_counter()
    source, entry = spec["source"], spec["entry"]
    if layers["static"]:
        from node.jail import static

        static.check(source, entry)
    api = job_api.JobCrypten(rank=rank, world_size=world, assets=spec["assets"],
                            dry_run=bool(spec.get("dry_run")))
    reveal_map = spec.get("reveal", {})
    reveal = runtime.RevealGuard(to=reveal_map.get("to", []),
                                 everyone=bool(reveal_map.get("everyone", False)),
                                 budget=int(reveal_map.get("budget", 1_000_000)),
                                 on_reveal=lambda dst, n, rows: emit(
                                     "reveal", dst=dst, elements=n, rows=_own(rows, rank)),
                                 alone=world == 1, **api.privacy())
    reveal.install()
    tracker = lineage.Tracker(crypten, reveal.knowledge)
    tracker.install()
    runtime.hide_shares()
    facade = runtime.crypten_facade(api.load, api.load_model, tracker, api.laplace_noise)
    print_fn = runtime.BoundedPrint(on_line=lambda line: emit("output", line=line[:1000]))
    running = threading.Event()
    _report_progress(comm, running)
    if layers["runtime"]:
        job = runtime.compile_job(source, entry, facade, print_fn)
    else:  # test builds only: each layer must hold on its own
        job = runtime.compile_unguarded(source, entry, facade)
    confinement = _lock_down(spec) if layers["os"] else {"disabled": True}
    emit("locked", confinement=confinement, setup_s=time.perf_counter() - t)
    comm.reset_communication_stats()
    emit("running")
    running.set()

    t = time.perf_counter()
    value = job()
    compute_s = time.perf_counter() - t
    stats = comm.get_communication_stats()
    released = rank in spec.get("result_to", [])
    encoded = wire.encode(value) if released else None
    if len(json.dumps(encoded)) > MAX_RESULT_BYTES:
        raise wire.WireError(f"the job's result is larger than {MAX_RESULT_BYTES >> 20} MB; "
                             f"return aggregates, not raw data")
    emit(
        "result",
        released=released,
        value=encoded,
        revealed=reveal.used,
        timings={"import_s": _IMPORT_S, "compute_s": compute_s, "load_s": api.load_s,
                 "reveal_s": reveal.seconds, "cpu_s": _cpu_seconds() - _CPU_AT_SPEC,
                 "cpu_import_s": _CPU_AT_SPEC},
        stats={"rounds": int(stats["rounds"]), "bytes": int(stats["bytes"]),
               "comm_s": float(stats["time"])},
    )
    return 0


def _own(rows: dict[str, Any], rank: int) -> dict[str, Any]:
    """The rows of this party's own datasets that a reveal to others covered: its node keeps
    them, to refuse a later reveal that differs from this one in too few rows."""
    return {key: value for key, value in rows.items() if lineage.split_key(key)[1] == rank}


def main() -> None:
    emit("imported", import_s=_IMPORT_S)
    try:
        line = sys.stdin.buffer.readline()
        if os.getppid() != _parent:
            os._exit(3)
        global _CPU_AT_SPEC
        _CPU_AT_SPEC = _cpu_seconds()  # what the job costs counts from here (a warm worker
        # imported long before)
        spec = json.loads(line)
        _read_assets(spec)
        _watch_life_line()
        code = run(spec)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an event
        kind, message = _classify(exc)
        traceback.print_exc(file=sys.stderr)
        emit("error", kind=kind, message=message)
        code = 1
    _channel.flush()
    os._exit(code)  # skip interpreter teardown (0.77 s) and gloo's destructors


if __name__ == "__main__":
    main()

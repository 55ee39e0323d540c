"""One party of a plain CrypTen computation, started the way a CrypTen user starts one.

    RENDEZVOUS=tcp://127.0.0.1:PORT WORLD_SIZE=2 RANK=0 DISTRIBUTED_BACKEND=gloo \\
        python native.py CONFIG.json

One OS process per party; rank 0 hosts torch's TCP store at PORT (``crypten.init()``, torch's
``tcp://`` rendezvous) and the others connect to it. One torch thread per party. This is the
native arm of ``parley bench`` and of the benchmark of a finished job (node/bench/): nothing of
Parley runs here except ``from node.compat import crypten``, because CrypTen 0.4.1 neither
imports nor decodes correctly on torch 2.13 without those fixes, and a CrypTen user on this
torch needs the same ones.

The computation is a function ``def run(crypten)`` or ``def run(crypten, torch)``: the very
source Parley's arm submits as a job. Its inputs come from ``crypten.load(tag, src)`` and
``crypten.load_model(tag)``, which here are the few lines a CrypTen user writes: the owner
reads its own ``.npy`` or ``.onnx`` file from disk; the others use zeros of the known shape, or
the model's architecture with dummy weights; ``crypten.cryptensor(x, src=owner)`` and
``model.encrypt(src=owner)`` share them. No shape or architecture crosses the wire.

CONFIG.json (one per party, naming only that party's own files)::

    {"source": "def run(crypten): ...", "entry": "run", "precision_bits": 16,
     "report": "/where/the/report/goes.json",
     "inputs": {TAG: {RANK: {"kind": "dataset",
                             "parts": {"features": {"shape": [n, d], "path": FILE or null}}}
                       | {"kind": "model", "path": FILE}}}}

(a model's FILE is the real model at its owner, the architecture with dummy weights elsewhere).

The report (JSON, written before exit): ``time.monotonic()`` stamps (one clock for every process
on a machine) at start, after the imports, after the rendezvous and at the end; the seconds
spent loading, computing and revealing; CPU seconds (``getrusage``: user + system) of the whole
process and of its imports; rounds and
bytes this party sent (CrypTen's counters, reset after ``crypten.init()``); the value the
function returned, or the error. Exit status: 0 done, 1 failed, 75 rank 0 could not listen on
PORT (taken meanwhile: the launcher tries another).
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import json  # after the stamp above: the process's first moment
import os
import resource
import sys
import traceback
from typing import Any

import numpy as np
import torch

from node.compat import crypten  # CrypTen 0.4.1 made to work on torch 2.13

IMPORTED = time.monotonic()
PORT_TAKEN = 75


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CPU_IMPORT = cpu_seconds()


class NativeLoader:
    """``crypten`` for the computation: CrypTen itself, plus ``load`` and ``load_model`` over
    this party's files."""

    def __init__(self, rank: int, inputs: dict[str, Any]) -> None:
        self.rank = rank
        self.inputs = inputs
        self.load_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(crypten, name)

    def _holder(self, tag: str, src: int | None) -> tuple[int, dict[str, Any]]:
        holders = self.inputs[tag]
        if src is None:
            if len(holders) != 1:
                raise ValueError(f"'{tag}' is held at ranks {sorted(holders)}: say which")
            src = int(next(iter(holders)))
        return int(src), holders[str(int(src))]

    def load(self, tag: str, src: int | None = None, part: str = "features",
             standardize: bool = False) -> Any:
        t0 = time.perf_counter()
        owner, holder = self._holder(tag, src)
        spec = holder["parts"][part]
        if self.rank == owner:
            array = np.load(spec["path"], allow_pickle=False).astype(np.float64)
            if standardize:  # the owner's own statistics, on its own columns
                std = array.std(axis=0)
                array = (array - array.mean(axis=0)) / np.where(std > 0, std, 1.0)
            plain = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        else:
            plain = torch.zeros(spec["shape"], dtype=torch.float32)
        shared = crypten.cryptensor(plain, src=owner)
        self.load_s += time.perf_counter() - t0
        return shared

    def load_model(self, tag: str) -> Any:
        t0 = time.perf_counter()
        owner, holder = self._holder(tag, None)
        with open(holder["path"], "rb") as f:  # the real model at its owner, dummy elsewhere
            model = crypten.nn.from_onnx(f)
        model.encrypt(src=owner)
        self.load_s += time.perf_counter() - t0
        return model


class RevealClock:
    """Seconds spent in ``get_plain_text`` (decrypting), kept apart from computing."""

    def __init__(self) -> None:
        self.seconds = 0.0
        real = crypten.mpc.MPCTensor.get_plain_text
        clock = self

        def timed(tensor: Any, dst: int | None = None) -> Any:
            t0 = time.perf_counter()
            try:
                return real(tensor, dst=dst)
            finally:
                clock.seconds += time.perf_counter() - t0

        crypten.mpc.MPCTensor.get_plain_text = timed


def plain(value: Any) -> Any:
    """The returned value as JSON: a tensor as its shape and its values (flattened), containers
    item by item."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "values": value.detach().double().flatten().tolist()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return str(value)


def compute(config: dict[str, Any], report: dict[str, Any]) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    crypten.init()  # meets the others at rank 0's TCP store
    report["joined"] = time.monotonic()
    crypten.cfg.communicator.verbose = True
    crypten.cfg.encoder.precision_bits = int(config.get("precision_bits", 16))
    comm = crypten.communicator.get()
    comm.reset_communication_stats()

    namespace: dict[str, Any] = {}
    exec(compile(config["source"], "<computation>", "exec"), namespace)  # noqa: S102 - the job
    function = namespace[config["entry"]]
    loader = NativeLoader(rank, config["inputs"])
    reveal = RevealClock()
    wants_torch = function.__code__.co_argcount > 1
    t0 = time.perf_counter()
    value = function(loader, torch) if wants_torch else function(loader)
    took = time.perf_counter() - t0
    report["done"] = time.monotonic()
    stats = comm.get_communication_stats()
    report.update(load_s=loader.load_s, reveal_s=reveal.seconds,
                  compute_s=took - loader.load_s - reveal.seconds,
                  rounds=int(stats["rounds"]), bytes=int(stats["bytes"]),
                  comm_s=float(stats["time"]), value=plain(value))


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    report: dict[str, Any] = {"rank": int(os.environ.get("RANK", "-1")), "started": STARTED,
              "imported": IMPORTED, "import_s": IMPORTED - STARTED}
    code = 0
    try:
        compute(config, report)
    except BaseException as exc:  # noqa: BLE001 - every failure goes into the report
        report["failed"] = time.monotonic()  # the first party to fail is the cause
        lines = str(exc).strip().splitlines()
        report["error"] = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        taken = "address already in use" in str(exc).lower() or "eaddrinuse" in str(exc).lower()
        code = PORT_TAKEN if taken and report["rank"] == 0 and "joined" not in report else 1
        traceback.print_exc()
    report.update(cpu_s=cpu_seconds(), cpu_import_s=CPU_IMPORT)  # the whole process; the imports
    tmp = config["report"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, config["report"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as Parley's parties do: no interpreter teardown, no gloo destructors


if __name__ == "__main__":
    main()

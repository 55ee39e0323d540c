"""The jail under attack: the escape corpus, benign jobs, and each layer on its own.

Every run is a real party process started by a real node's launcher (dry-run path: one party,
this node's store), exactly the layers a job gets. Proofs are effects, not exceptions: the
marker file does not exist, the canary's secret is in no result and no log, the listener saw
no connection, the budget held. The last section checks the runtime layer's compile step and
the job's ``__import__`` in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.core import Node
from node.jail import ALL_LAYERS, static
from node.runner import PartyLauncher
from tests.jail_corpus import ATTACKS, BENIGN, Attack

SECRET = "CANARY-7f3a9c-DO-NOT-LEAK"
ALL = ALL_LAYERS
# What a proposal's reveal map would say: decrypt to rank 0 only, at most 1000 elements
# (the over-budget attack asks for 1200).
REVEAL = {"to": [0], "everyone": False, "budget": 1000}
LOG_CAP = 70_000  # BoundedPrint's 64,000 bytes plus the party's own lines


class Owner:
    """A node (in this process, on its own loop thread) whose dry runs are the attack surface."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.node: Node = self.call(self._make(data_dir))

    async def _make(self, data_dir: Path) -> Node:
        node = Node(data_dir, "owner", launcher=PartyLauncher(data_dir / "logs", warm=1))
        await node.start()  # every attack runs in a warm worker, as jobs do
        return node

    def call(self, coro: Any, timeout: float = 240) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def dry_run(self, source: str, layers: dict[str, bool] | None = None,
                time_s: float = 10) -> dict[str, Any]:
        """``time_s``: an attack that spins or grows is stopped at 10 s; a benign job is given
        60 s, its limit no test of speed (two test runs at once took it past 10 s)."""
        return self.call(self.node.dry_run(source, "run", layers=layers or ALL, reveal=REVEAL,
                                           time_s=time_s))

    def close(self) -> None:
        self.call(self.node.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    import torch

    from node.compat import onnx_bytes_from_pytorch

    base = tmp_path_factory.mktemp("owner")
    owner = Owner(base / "node")
    rng = np.random.default_rng(3)
    np.save(base / "secret.npy", rng.normal(size=(4, 3)).astype(np.float32) + 1000.0)
    np.save(base / "features.npy", rng.normal(size=(6, 3)).astype(np.float32))
    rows = ["a,b,c,y"] + [f"{r[0]:.3f},{r[1]:.3f},{r[2]:.3f},{int(r[0] > 0)}"
                          for r in rng.normal(size=(12, 3))]
    (base / "labelled.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    (base / "model.onnx").write_bytes(onnx_bytes_from_pytorch(model.eval(), torch.zeros(1, 3)))
    store = owner.node.store
    store.import_npy(base / "secret.npy", tags=["secret"])
    store.import_npy(base / "features.npy", tags=["features"])
    store.import_csv(base / "labelled.csv", tags=["labelled"], label_column="y")
    store.import_onnx(base / "model.onnx", tags=["model"])
    yield owner
    owner.close()


@pytest.fixture
def traps(tmp_path: Path) -> Iterator[dict[str, Any]]:
    canary = tmp_path / "canary.txt"
    canary.write_text(SECRET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    yield {"marker": tmp_path / "marker", "canary": canary, "listener": listener,
           "port": listener.getsockname()[1]}
    listener.close()


def fill(attack: Attack, traps: dict[str, Any]) -> str:
    return attack.source.replace("{marker}", str(traps["marker"])).replace(
        "{canary}", str(traps["canary"])).replace("{port}", str(traps["port"])).replace(
        "{{", "{").replace("}}", "}")


def party_logs(owner: Owner) -> str:
    return "".join(p.read_text(errors="replace")
                   for p in (owner.node.data_dir / "logs").glob("*.log"))


def assert_no_effect(out: dict[str, Any], traps: dict[str, Any], owner: Owner) -> None:
    assert not traps["marker"].exists(), "the attack created its marker file"
    assert SECRET not in json.dumps(out), "the canary's secret reached the result"
    assert SECRET not in party_logs(owner), "the canary's secret reached the party log"
    try:
        conn, _ = traps["listener"].accept()
        conn.close()
        pytest.fail("the attack opened a connection")
    except TimeoutError:
        pass
    assert "1000." not in json.dumps(out.get("result")), "a secret value reached the result"
    assert "1000." not in party_log_of_last_run(owner), "a secret value reached the log"


def party_log_of_last_run(owner: Owner) -> str:
    logs = sorted((owner.node.data_dir / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-2].read_text(errors="replace") if len(logs) > 1 else ""


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
@pytest.mark.real
def test_attack_has_no_effect(owner: Owner, traps: dict[str, Any], attack: Attack) -> None:
    out = owner.dry_run(fill(attack, traps))
    report = os.environ.get("PARLEY_CORPUS_REPORT")  # figures for notes: who stopped what
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({"attack": attack.name, "category": attack.category,
                                "state": out["state"], "kind": out["kind"],
                                "reason": out["reason"][:160]}) + "\n")
    assert_no_effect(out, traps, owner)
    if attack.contained:  # defused: what leaves the party shows no share, the log is capped
        assert "MPCTensor(" not in json.dumps(out["result"])
        assert len(party_log_of_last_run(owner)) < LOG_CAP
    else:
        assert out["state"] != "succeeded", f"{attack.name} ran to the end: {out}"


def test_corpus_is_big_enough() -> None:
    assert len(ATTACKS) >= 60
    assert len({a.category for a in ATTACKS}) >= 10
    assert len(BENIGN) >= 10


@pytest.mark.parametrize("name", sorted(BENIGN))
@pytest.mark.real
def test_benign_job_runs_unchanged(owner: Owner, name: str) -> None:
    out = owner.dry_run(BENIGN[name], time_s=60)
    assert out["state"] == "succeeded", f"{name}: {out['reason']}"
    assert out["result"] is not None


def test_static_check_alone_stops_what_it_claims(traps: dict[str, Any]) -> None:
    """Layer 2 alone: every source-level trick is refused before anything runs."""
    refused = 0
    for attack in ATTACKS:
        if attack.category in ("import", "dunder", "eval", "human"):
            with pytest.raises(static.JailRejected):
                static.check(fill(attack, traps), "run")
            refused += 1
    assert refused >= 25


RUNTIME_ALONE = ["subclasses-walk", "tensor-class-init-globals", "globals-of-api-function",
                 "module-dict", "getattr-call", "format-field-access", "fstring-conversion",
                 "share-attribute", "eval", "exec", "open-write", "open-read", "torch-load",
                 "torch-ops", "raw-communicator", "dunder-import", "attribute-store",
                 "reveal-to-everyone", "print-share",
                 # the job's __import__, by every route; f-strings' new surface
                 "builtins-dict-import", "import-torch-statement", "from-torch-import",
                 "import-submodule-as", "fstring-import", "builtins-import-through-frame",
                 "builtins-import-through-function", "tensor-type-imports-by-name",
                 "fstring-dunder", "fstring-spec-dunder", "fstring-format-method",
                 "fstring-spec-field", "fstring-share-spec"]


@pytest.mark.parametrize("name", RUNTIME_ALONE)
@pytest.mark.real
def test_runtime_layer_alone(owner: Owner, traps: dict[str, Any], name: str) -> None:
    """Layer 3 with the static check and the OS lockdown switched off (a test build)."""
    attack = next(a for a in ATTACKS if a.name == name)
    out = owner.dry_run(fill(attack, traps), layers={"static": False, "runtime": True,
                                                       "os": False})
    assert_no_effect(out, traps, owner)
    assert out["state"] == "failed" or attack.contained, out
    assert "MPCTensor(" not in json.dumps(out["result"])


OS_ALONE = ["open-write", "open-read", "socket-through-distributed", "subclasses-walk"]


@pytest.mark.parametrize("name", OS_ALONE)
@pytest.mark.real
def test_os_layer_alone(owner: Owner, traps: dict[str, Any], name: str) -> None:
    """Layer 4 with the static check and the runtime jail switched off: the process itself
    cannot write files, read outside the install, make sockets or start programs."""
    confinement = owner.node.confinement
    if name == "open-read" and not isinstance(confinement.get("landlock"), int):
        pytest.skip(f"Landlock is not available here: {confinement.get('landlock')}")
    attack = next(a for a in ATTACKS if a.name == name)
    out = owner.dry_run(fill(attack, traps), layers={"static": False, "runtime": False,
                                                       "os": True})
    assert_no_effect(out, traps, owner)
    assert out["state"] == "failed"
    assert out["confinement"] and not out["confinement"].get("disabled")


@pytest.mark.real
def test_without_any_layer_the_corpus_would_bite(owner: Owner, traps: dict[str, Any]) -> None:
    """The harness can fail: with every layer off, the same attack does leave its marker."""
    attack = next(a for a in ATTACKS if a.name == "open-write")
    owner.dry_run(fill(attack, traps), layers={"static": False, "runtime": False, "os": False})
    assert traps["marker"].exists()


@pytest.mark.parametrize("kind", ["inference", "train-logistic", "train-mlp", "statistics"])
@pytest.mark.real
def test_rendered_plans_pass_every_layer(owner: Owner, kind: str) -> None:
    """What a node renders from a plan is ordinary jailed code: it must pass and run."""
    from node import plans

    plan = {
        "inference": {"kind": "inference", "model": {"tag": "model", "rank": 0},
                      "data": {"tag": "features", "rank": 0}, "output_to": 0},
        "train-logistic": {"kind": "train", "model": "logistic",
                           "features": [{"tag": "labelled", "rank": 0}],
                           "labels": {"tag": "labelled", "rank": 0, "part": "labels"},
                           "epochs": 3, "output_to": 0},
        "train-mlp": {"kind": "train", "model": "mlp", "hidden": 4,
                      "features": [{"tag": "labelled", "rank": 0}],
                      "labels": {"tag": "labelled", "rank": 0, "part": "labels"},
                      "epochs": 2, "learning_rate": 0.1, "output_to": 0},
        "statistics": {"kind": "statistics", "data": [{"tag": "features", "rank": 0}],
                       "stats": ["count", "sum", "mean", "variance", "histogram"],
                       "histogram": {"column": 1, "edges": [-3, 0, 3]}, "output_to": 0},
    }[kind]
    source, entry = plans.render(plans.validate(plan, 1))
    static.check(source, entry)
    out = owner.call(owner.node.dry_run(source, entry, reveal=REVEAL, time_s=60))
    assert out["state"] == "succeeded", out["reason"]
    if kind == "statistics":
        assert out["result"]["count"] == 6
    elif kind.startswith("train"):
        from node.wire import decode

        assert 0.0 <= float(decode(out["result"])["accuracy"]) <= 1.0


@pytest.mark.real
def test_confinement_is_recorded(owner: Owner) -> None:
    out = owner.dry_run(BENIGN["statistics"], time_s=60)
    assert out["state"] == "succeeded", out["reason"]
    assert out["confinement"]["rlimits"]
    assert "seccomp" in out["confinement"] and "landlock" in out["confinement"]


# -- the runtime layer's __import__ and compile step, in this process --------------------------
def _compile(source: str, facade: Any = None) -> Any:
    from node.jail import runtime

    api = facade if facade is not None else runtime.Facade("crypten", {})
    return runtime.compile_job(source, "run", api, print)


def test_job_builtins_import_hands_back_nothing() -> None:
    """torch's C++ side calls the job frame's __import__ for its side effect only; what it
    returns is None, and anything but an already imported torch module is the jail's error."""
    import sys

    from node.jail import runtime

    imp = runtime._safe_builtins(print)["__import__"]
    assert imp is runtime.jail_import
    assert imp("torch") is None
    assert imp("torch.storage") is None
    assert imp("torch", {}, {}, ["load", "save"], 0) is None
    not_imported = next(n for n in ("torch.utils.tensorboard", "torch.utils.bottleneck",
                                    "torch.nowhere") if n not in sys.modules)
    for args in [("os",), ("json",), ("builtins",), ("sys",), ("importlib",), ("crypten",),
                 ("node.jail.runtime",), (not_imported,), ("torch", None, None, (), 1),
                 (b"torch",), ("torchvision",), ("torch_evil",)]:
        with pytest.raises(runtime.JailViolation, match="imports are not allowed in jobs"):
            imp(*args)
    assert not_imported not in sys.modules, "a refused import still ran the module"


def test_c_code_importing_from_the_job_frame_gets_only_torch() -> None:
    """What torch's C++ side does (PyImport_ImportModule while the job's frame is current),
    done by a C function a test facade hands the job: any other module is refused."""
    import ctypes

    from node.jail import runtime

    c_import = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p)(
        ("PyImport_ImportModule", ctypes.pythonapi))
    facade = runtime.Facade("crypten", {"c_import": c_import})
    for name in ("os", "json", "subprocess", "torch_evil"):
        job = _compile(f"def run(crypten):\n    return crypten.c_import(b'{name}')\n", facade)
        with pytest.raises(runtime.JailViolation, match=f"asked for '{name}'"):
            job()
    job = _compile("def run(crypten):\n    return crypten.c_import(b'torch.storage')\n", facade)
    assert job().__name__ == "torch.storage"   # torch's own import works, in C


@pytest.mark.parametrize("source", [
    "def run(crypten):\n    return __import__('os')\n",
    "def run(crypten):\n    return __builtins__['__import__']('os')\n",
    "def run(crypten):\n    return f\"{__builtins__}\"\n",
    "def run(crypten):\n    return [__name__ for _ in range(1)]\n",
    "def run(crypten):\n    _secret = 1\n    return _secret\n",
    "def run(crypten):\n    import torch\n    return torch\n",
    "def run(crypten):\n    from torch import load\n    return load\n",
    "def run(crypten):\n    import os.path as p\n    return p\n",
], ids=["dunder-import", "builtins", "builtins-in-fstring", "module-name", "underscore-local",
        "import", "from-import", "import-as"])
def test_runtime_compile_refuses_underscore_names_and_imports(source: str) -> None:
    """The runtime layer on its own (no static check) refuses these before the job runs."""
    from node.jail import runtime

    with pytest.raises(runtime.JailViolation, match="line [23]: "):
        _compile(source)


def test_runtime_layer_runs_fstrings_and_reads_layer_parameters() -> None:
    from node.compat import crypten
    from node.jail import runtime

    job = _compile("def run(crypten):\n"
                   "    layer = crypten.nn.Linear(3, 2)\n"
                   "    w = layer.weight\n"
                   "    for _ in range(1):\n"
                   "        t = torch.full((2,), 0.25)\n"
                   "    return [w.tolist(), layer.bias.tolist(), f'{t.sum():.2f}|{t!r:>5}|{3=}']\n",
                   runtime.Facade("crypten", {"nn": runtime.Facade("crypten.nn", {
                       "Linear": crypten.nn.Linear})}))
    weight, bias, text = job()
    assert len(weight) == 2 and len(weight[0]) == 3 and len(bias) == 2
    assert text == "0.50|tensor([0.2500, 0.2500])|3=3"
    layer = crypten.nn.Linear(3, 2)
    for name in ("_parameters", "named_parameters", "register_parameter", "set_parameter",
                 "state_dict", "load_state_dict"):
        with pytest.raises(runtime.JailViolation):
            runtime.guard(layer, name)


def test_guard_explains_none_from_a_reveal_to_another_rank() -> None:
    from node.jail import runtime

    with pytest.raises(runtime.JailViolation, match="is None at every other rank"):
        runtime.guard(None, "item")


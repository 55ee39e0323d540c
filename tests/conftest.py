"""Shared fixtures: real nodes on the loopback, and a guard that no party process survives."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Every node the tests start logs storage work done on its event loop (node/db.py off_loop);
# make_node fails a test whose nodes did any.
os.environ.setdefault("PARLEY_LOOP_CHECK", "1")

from node.localnet import LocalNode, all_party_processes  # noqa: E402
from tests.inprocess import AppNode, app_node  # noqa: E402

JOB_TIMEOUT = 120

# Fixtures that start real processes (nodes, parties): a test that uses one is marked
# ``real``. ``make test`` runs every test; ``pytest -m "not real"`` the fast rest, which may
# start no process at all (``_only_real_tests_start_processes``).
REAL_FIXTURES = frozenset({"make_node"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


@pytest.fixture(autouse=True)
def _only_real_tests_start_processes(request: pytest.FixtureRequest,
                                     monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test not marked ``real`` that starts a process fails, naming what it started."""
    if request.node.get_closest_marker("real"):
        yield
        return
    started: list[str] = []
    popen_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
        started.append(str(args)[:120])
        popen_init(self, args, *rest, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    yield
    assert not started, f"this test started {started}: mark it @pytest.mark.real"


def load_factor() -> float:
    """How much slower than an idle machine this one runs now: runnable processes per core
    (1 when idle). Another test run, a build or a benchmark on the same machine slows every
    process of ours the same way."""
    try:
        return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except OSError:
        return 1.0


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``
    seconds of an idle machine: the time allowed grows with the load (``load_factor``) while
    waiting, so a busy machine makes the test slower, not red."""
    start = time.monotonic()
    allowed = timeout * load_factor()
    while True:
        value = predicate()
        if value:
            return value
        waited = time.monotonic() - start
        if waited > allowed:
            allowed = max(allowed, timeout * load_factor())
            if waited > allowed:
                pytest.fail(f"timed out after {waited:.0f} s waiting for {what} (allowed "
                            f"{timeout:.0f} s on an idle machine, load {os.getloadavg()[0]:.1f})")
        time.sleep(interval)


@pytest.fixture
async def node_app(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[AppNode]:
    """An in-process node (tests/inprocess.py): the admin API's rules without processes."""
    found = await app_node(tmp_path / "owner", aiohttp_client)
    yield found
    await found.node.close()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., LocalNode]]:
    """Start real ``parley node`` processes; all are stopped and checked at teardown."""
    started: list[LocalNode] = []

    def make(name: str, auto_approve: bool = True, data_dir: Path | None = None,
             pair: bool = True, warm_workers: int | None = 1, args: tuple[str, ...] = (),
             min_rows: int | None = 1) -> LocalNode:
        """A node, paired with every node this test started before (unless pair=False).
        One warm worker unless told: a test's nodes mostly run one job each (None: the
        product's default). ``args``: more ``parley node`` options. Datasets published here
        let a reveal aggregate any number of rows (``--min-rows 1``): tests of other things
        use a few rows; tests/test_reveal_rows.py starts its nodes with the default."""
        more = args if "--min-rows" in args or min_rows is None else ("--min-rows",
                                                                       str(min_rows), *args)
        node = LocalNode(name, data_dir or tmp_path / name, auto_approve=auto_approve,
                         warm_workers=warm_workers, extra_args=("--no-mdns", *more))
        node.start()
        others = list(started)
        started.append(node)  # stopped at teardown even if pairing fails below
        if pair:
            for other in others:
                node.pair_with(other)
        return node

    yield make
    for node in started:
        node.stop()
    wait_until(lambda: not parties_writing_under(tmp_path), 15,
               "every party process to end (none may be left behind)")
    on_loop = [f"{node.name}: {line.split('storage on the event loop: ', 1)[1]}"
               for node in started for line in node.log(tail=1 << 20).splitlines()
               if "storage on the event loop" in line]
    assert not on_loop, "storage work on a node's event loop:\n" + "\n".join(on_loop)


def parties_writing_under(root: Path) -> list[int]:
    """Party processes whose log (stderr) is a file under ``root``: this test's parties, and
    not those of anything else running on the machine at the same time."""
    mine = []
    for pid in all_party_processes():
        try:
            if os.readlink(f"/proc/{pid}/fd/2").startswith(str(root)):
                mine.append(pid)
        except OSError:
            continue  # it ended meanwhile
    return mine


@contextmanager
def one_party_crypten(folder: Path) -> Iterator[Any]:
    """CrypTen initialised in this process as a one-party world (rendezvous file in
    ``folder``); the environment that crypten.init() writes is restored afterwards so it
    leaks into no other test."""
    from node.compat import crypten

    keys = ("DISTRIBUTED_BACKEND", "RENDEZVOUS", "WORLD_SIZE", "RANK")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(DISTRIBUTED_BACKEND="gloo", RENDEZVOUS=f"file://{folder / 'rendezvous'}",
                      WORLD_SIZE="1", RANK="0")
    crypten.init()
    try:
        yield crypten
    finally:
        crypten.uninit()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


"""Warm party workers, the limit on jobs at once, and threads per party, on real nodes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from node.client import results
from node.localnet import all_party_processes, party_pids
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import LONG_JOB, spec, write_csv

SUM_JOB = '''
def run(crypten):
    total = crypten.load("nums", 0) + crypten.load("nums", 1)
    for _ in range(20):
        total = total * 1.0
    return total.sum().get_plain_text(dst=0)
'''


def _two_nodes(make_node, tmp_path: Path, **kwargs):
    alice, bob = make_node("alice", **kwargs), make_node("bob", **kwargs)
    for node, value in ((alice, 1.0), (bob, 2.0)):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", np.full((10, 4), value)),
                            tags=["nums"])
    return alice, bob


def _sum_job(alice, bob) -> dict:
    return spec([alice, bob], SUM_JOB, [("nums", 0, "dataset"), ("nums", 1, "dataset")])


def _ready(node, n: int) -> None:
    wait_until(lambda: node.client.status()["warm_workers"]["ready"] == n, 90,
               f"{node.name}'s pool to hold {n} ready worker(s)")


def test_the_pool_is_full_from_the_start_and_serves_the_first_job(make_node, tmp_path):
    alice, bob = _two_nodes(make_node, tmp_path, warm_workers=None)  # the default: 2
    for node in (alice, bob):
        _ready(node, 2)
    pool = alice.client.status()["warm_workers"]
    assert pool["size"] == 2 and pool["starting"] == 0
    assert 100 << 20 < pool["memory_bytes"] < 2 << 30  # two imported interpreters
    workers = set(all_party_processes(parent=_node_pid(alice)))
    assert len(workers) == 2 and not party_pids(alice.data_dir)  # idle, serving no job

    job = alice.client.submit(_sum_job(alice, bob))
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(10 * 4 * 3.0, abs=1e-2)
    for party in done["detail"]["parties"].values():
        t = party["timings"]
        assert t["warm"] == 1.0  # the first job of a fresh node is warm too
        # its timings count from the moment the job took the worker: the import is not in it
        assert t["spawn_to_spec_s"] < t["import_s"]
        assert party["stats"]["threads"] == max(1, (os.cpu_count() or 1) // 2)
    started = [e for e in alice.client.audit(kind="run", job=job["id"])["entries"]
               if e["fields"].get("event") == "started"]
    assert started and started[0]["fields"]["warm"] is True
    # the job ran in one of the workers (its log renamed for the job), which then exited:
    # each job gets a process of its own
    assert (alice.data_dir / "party-logs" / f"{job['id']}.log").exists()
    wait_until(lambda: not party_pids(alice.data_dir), 15, "the job's party to exit")
    _ready(alice, 2)  # refilled once no job runs
    now = set(all_party_processes(parent=_node_pid(alice)))
    assert len(now) == 2 and len(workers - now) == 1
    assert alice.client.status()["warm_workers"]["taken"] == 1

    out = subprocess.run([sys.executable, "-m", "node.cli", "status", "--data-dir",
                          str(alice.data_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "warm workers 2 of 2 ready" in out.stdout
    assert f"at most {max(2, os.cpu_count() or 1)} at once" in out.stdout
    assert "event loop   longest stall" in out.stdout


def test_without_a_pool_every_party_starts_cold(make_node, tmp_path):
    alice, bob = _two_nodes(make_node, tmp_path, warm_workers=0)
    assert alice.client.status()["warm_workers"]["size"] == 0
    job = alice.client.submit(_sum_job(alice, bob))
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    for party in done["detail"]["parties"].values():
        assert party["timings"]["warm"] == 0.0
        assert party["timings"]["imported_at_s"] >= party["timings"]["import_s"]
    assert not all_party_processes(parent=_node_pid(alice))


def test_a_node_runs_no_more_jobs_at_once_than_allowed_and_queues_the_rest(make_node,
                                                                            tmp_path):
    alice, bob = _two_nodes(make_node, tmp_path, args=("--max-jobs", "1"))
    assert alice.client.status()["parties"]["max"] == 1
    jobs = [alice.client.submit(_sum_job(alice, bob))["id"] for _ in range(3)]
    done = [alice.client.wait(j, timeout=JOB_TIMEOUT) for j in jobs]
    for d in done:
        assert d["state"] == "succeeded", d["reason"]
        assert results(d)[0] == pytest.approx(120.0, abs=1e-2)
    # the orchestrator showed the waiting ones as queued
    seen = {e["data"]["state"] for j in jobs
            for e in alice.client.events(0, 0, j, "orchestrator")["events"]
            if e["kind"] == "job.state"}
    assert "queued" in seen
    # and at each node, a party started only after the one before it ended
    for node in (alice, bob):
        entries = [e["fields"] for e in node.client.audit(kind="run")["entries"]]
        running = 0
        for e in entries:
            running += {"started": 1, "succeeded": -1, "failed": -1, "cancelled": -1}.get(
                e.get("event"), 0)
            assert running <= 1, entries
        assert any(e.get("event") == "queued" for e in entries)


def test_a_queued_job_can_be_cancelled(make_node, tmp_path):
    alice, bob = _two_nodes(make_node, tmp_path, args=("--max-jobs", "1"))
    long_job = spec([alice, bob], LONG_JOB, [("nums", 1, "dataset")], time_s=300)
    first = alice.client.submit(long_job)["id"]
    wait_until(lambda: alice.client.orchestration(first)["state"] == "running", 60,
               "the first job to run")
    second = alice.client.submit(_sum_job(alice, bob))["id"]
    wait_until(lambda: alice.client.orchestration(second)["state"] == "queued", 60,
               "the second job to be queued")
    assert bob.client.job(second, role="party")["state"] == "queued"
    assert bob.client.status()["parties"] == {"running": 1, "max": 1, "queued": 1}
    alice.client.cancel(second, "not needed")
    done = alice.client.wait(second, timeout=30)
    assert done["state"] == "cancelled"
    wait_until(lambda: bob.client.job(second, role="party")["state"] == "cancelled", 30,
               "bob's queued party to be cancelled")
    assert bob.client.status()["parties"]["queued"] == 0
    assert alice.client.orchestration(first)["state"] == "running"
    alice.client.cancel(first, "done testing")
    assert alice.client.wait(first, timeout=30)["state"] == "cancelled"


def _node_pid(node) -> int:
    return node.pid


def test_only_parties_on_the_same_machine_divide_its_cores():
    from node.runner import parties_on_host, party_threads

    hosts = {"n-bob": "192.168.1.11", "n-carol": "192.168.1.10", "n-dave": "127.0.0.1"}
    parties = [{"node_id": n} for n in ("n-alice", "n-bob", "n-carol")]
    # alice and carol share 192.168.1.10; bob brings his own machine
    assert parties_on_host(parties, "n-alice", "192.168.1.10", hosts.get) == 2
    assert parties_on_host(parties[:2], "n-alice", "192.168.1.10", hosts.get) == 1
    # every loopback address is this machine
    assert parties_on_host([{"node_id": "n-alice"}, {"node_id": "n-dave"}], "n-alice",
                           "127.0.0.2", hosts.get) == 2
    cores = os.cpu_count() or 1
    assert party_threads(1) == cores and party_threads(cores * 4) == 1


def _process_state(pid: int) -> str:
    """R, S, T (stopped), ... as /proc/PID/stat has it."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.real
async def test_a_worker_importing_while_a_job_runs_waits_until_the_job_ends(tmp_path):
    import asyncio

    from node.runner import PartyLauncher

    launcher = PartyLauncher(tmp_path / "logs", warm=2)
    launcher.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while not (launcher.status()["ready"] >= 1 and launcher.status()["starting"] == 1):
        # the first worker ready, the second spawned and importing
        assert loop.time() < deadline, f"no worker importing beside a ready one: " \
                                       f"{launcher.status()}"
        await asyncio.sleep(0.02)
    run = await launcher.launch("job-1", threads=1)  # a job takes the ready one
    importing = [w for w in launcher._alive() if not w.ready]
    assert len(importing) == 1, launcher.status()
    # the import stops while the job runs: it takes no core from the job (the stop is a
    # signal: the kernel delivers it a moment later)
    assert importing[0].held
    while _process_state(importing[0].pid) != "T":
        assert loop.time() < deadline, "the importing worker was never stopped"
        await asyncio.sleep(0.01)
    assert launcher.status()["held"] == 1
    assert _process_state(run.pid) != "T"
    run.kill("the test's job is over")
    await run.proc.wait()
    while not importing[0].ready:  # no job runs: it goes on and finishes its import
        assert loop.time() < deadline, "the held worker never finished its import"
        await asyncio.sleep(0.05)
    assert not importing[0].held and _process_state(importing[0].pid) != "T"
    for worker in launcher._alive():
        worker.kill("the test is over")
        await worker.proc.wait()
    launcher._filler.cancel()

"""What a job opens on the network, between real nodes on the loopback.

Every listening socket of the nodes and their party processes is on the node's address (the
nodes here are started with host 127.0.0.1) or on the job's party-local loopback addresses
(node/links.py: a party's gloo, its node's relay ends), during the rendezvous and while the
job computes, and none is left once the job has ended; and someone else who connects to the
job's rendezvous address (rank 0's link relay) can neither read it nor break the job.

A job is held in its rendezvous by stopping bob's party (SIGSTOP) as soon as it is spawned,
before it has even imported torch: alice's party then waits for it, so the test has all the
time it needs, and continuing bob's party lets the job finish.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
from pathlib import Path

import numpy as np
import pytest

from node.client import NodeClient, results
from node.localnet import LocalNode, party_pids
from node.rendezvous import RENDEZVOUS_MAGIC
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import LONG_JOB

SUM_JOB = '''
def run(crypten):
    return (crypten.load("nums", 0) + crypten.load("nums", 1)).sum().get_plain_text(dst=0)
'''

def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket ``pid`` holds open in the LISTEN state, read
    from /proc: its socket descriptors, matched by inode in the network namespace's tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)  # 32-bit words, each in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def write_csv(path: Path, values: np.ndarray) -> Path:
    rows = ["a,b"] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(rows) + "\n")
    return path


def two_nodes(make_node, tmp_path: Path) -> tuple[LocalNode, LocalNode]:
    alice, bob = make_node("alice"), make_node("bob")
    for node in (alice, bob):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv", np.ones((3, 2))),
                            tags=["nums"])
    return alice, bob


def submit(alice: LocalNode, bob: LocalNode, source: str, **limits: float) -> str:
    return alice.client.submit({
        "title": "network test", "source": source, "entry": "run",
        "parties": [alice.party.spec(), bob.party.spec()],
        "bindings": [{"tag": "nums", "rank": r, "kind": "dataset"} for r in (0, 1)],
        "result_to": [0], "limits": limits})["id"]


def stop_first_party(node: LocalNode) -> int:
    """SIGSTOP ``node``'s party the moment it is spawned (importing torch takes seconds)."""
    def spawned() -> list[int]:
        return party_pids(node.data_dir)

    (pid,) = wait_until(spawned, 60, f"{node.name}'s party to be spawned", interval=0.005)
    os.kill(pid, signal.SIGSTOP)
    return pid


def rendezvous_port(client: NodeClient, job_id: str) -> int:
    def address() -> str:
        return client.orchestration(job_id)["detail"].get("rendezvous", "")

    return int(str(wait_until(address, 30, "rank 0's rendezvous address")).rsplit(":", 1)[1])


def party_states(client: NodeClient, job_id: str) -> dict[str, dict]:
    return client.orchestration(job_id)["detail"].get("parties", {})


def job_listeners(nodes: list[LocalNode]) -> dict[str, set[tuple[str, int]]]:
    """Listening sockets of each node process and each of its party processes."""
    out = {}
    for node in nodes:
        out[f"{node.name}'s node"] = listening_sockets(node.pid)
        for pid in party_pids(node.data_dir):
            out[f"{node.name}'s party {pid}"] = listening_sockets(pid)
    return out


def party_local(nodes: list[LocalNode], job_id: str) -> dict[str, tuple[str, set[str]]]:
    """Each node's party-local addresses for the job (node/links.py): the party's (c), and
    all three (c - 1: its relay's ends; c + 1: only ever compared)."""
    out = {}
    for node in nodes:
        address = node.client.job(job_id, role="party")["detail"]["links"]["party_local"]
        head, last = address.rsplit(".", 1)
        out[node.name] = (address, {f"{head}.{int(last) + d}" for d in (-1, 0, 1)})
    return out


def test_every_listener_of_a_job_is_on_the_nodes_address(make_node, tmp_path):
    alice, bob = two_nodes(make_node, tmp_path)
    job_id = submit(alice, bob, LONG_JOB, time_s=120)
    stopped = stop_first_party(bob)
    try:
        port = rendezvous_port(alice.client, job_id)
        wait_until(lambda: party_pids(alice.data_dir), 30, "alice's party")
        in_rendezvous = job_listeners([alice, bob])
        assert ("127.0.0.1", port) in in_rendezvous["alice's node"]
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_until(lambda: all(p["state"] == "running" for p in
                           party_states(alice.client, job_id).values()) and
               len(party_states(alice.client, job_id)) == 2, JOB_TIMEOUT,
               "both parties to be running")
    computing = job_listeners([alice, bob])
    local = party_local([alice, bob], job_id)
    alice.client.cancel(job_id, "the test has seen what it needed")
    alice.client.wait(job_id, timeout=30)

    every_local = set().union(*(addresses for _, addresses in local.values()))
    everything = {(who, a) for seen in (in_rendezvous, computing) for who, addrs in seen.items()
                  for a in addrs}
    elsewhere = sorted((who, a) for who, a in everything
                       if a[0] != "127.0.0.1" and a[0] not in every_local)
    assert not elsewhere, f"listening beyond the node's address 127.0.0.1: {elsewhere}"
    # a party listens on its own party-local address only, and only its node's relay there
    for who, (address, _) in everything:
        name = who.split("'", 1)[0]
        if "party" in who:
            assert address == local[name][0], (who, address)
        elif address != "127.0.0.1":
            assert address in local[name][1], (who, address)
    # the test saw what it is about: gloo's listeners in both parties while they compute...
    for party in [k for k in computing if "party" in k]:
        assert computing[party], f"{party} listened on nothing while computing"
    assert len([k for k in computing if "party" in k]) == 2
    # ...the relay (the rendezvous address) while the links are up, and nothing of the job
    # once it has ended
    assert ("127.0.0.1", port) in computing["alice's node"]

    def left() -> list:
        return [(n.name, a) for n in (alice, bob) for a in listening_sockets(n.pid)
                if a[0] in every_local or a[1] == port]

    wait_until(lambda: not left(), 10, "the job's listeners to close")


def test_torch_tcp_store_listens_on_every_interface():
    """Why the rendezvous is Parley's own: torch's store, asked for 127.0.0.1, listens on
    every interface (here in this test's process)."""
    import datetime

    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, 2, True, datetime.timedelta(seconds=5),
                          wait_for_workers=False)
    addresses = {a for a, p in listening_sockets(os.getpid()) if p == store.port}
    assert addresses and addresses <= {"::", "0.0.0.0"}, addresses


def test_an_outsider_at_the_rendezvous_can_neither_read_nor_break_the_job(make_node, tmp_path):
    import datetime

    import torch.distributed as dist

    alice, bob = two_nodes(make_node, tmp_path)
    job_id = submit(alice, bob, SUM_JOB)
    stopped = stop_first_party(bob)
    flood: list[socket.socket] = []
    try:
        port = rendezvous_port(alice.client, job_id)
        wait_until(lambda: party_pids(alice.data_dir), 30, "alice's party")
        # torch's own client, as anyone would try first
        with pytest.raises(dist.DistError):
            dist.TCPStore("127.0.0.1", port, 2, False, datetime.timedelta(seconds=2))
        # by hand: the rendezvous address is TLS (rank 0's link relay) and says nothing
        # first; anything but a TLS handshake ends the connection
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.settimeout(1)
            with pytest.raises(TimeoutError):
                raw.recv(4096)
            raw.settimeout(10)
            raw.sendall(RENDEZVOUS_MAGIC + os.urandom(64))
            assert raw.recv(4096) == b""
        # TLS without a certificate the job's nodes pinned: refused in the handshake
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with client.wrap_socket(raw) as tls:
                    if tls.recv(4096) == b"":
                        raise ConnectionError("closed")
        # and a flood of connections that never say anything, held through the rendezvous
        flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    finally:
        os.kill(stopped, signal.SIGCONT)
    try:
        done = alice.client.wait(job_id, timeout=JOB_TIMEOUT)
    finally:
        for sock in flood:
            sock.close()
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(12.0, abs=1e-3)
    # the rendezvous address (the relay) stops listening as the job ends
    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_until(refused, 10, "the job's relay to stop listening")
    # alice's audit log counts the connections that were not from the job's nodes
    refusals = [e["fields"] for e in alice.client.audit()["entries"]
                if e["kind"] == "refusal" and e["fields"].get("job") == job_id]
    assert refusals and max(r["connections"] for r in refusals) >= 3, refusals
    # the job's key is written nowhere: no log, no event, no job record, on either node
    key_in_url = re.compile(rb"parley://[0-9a-f]{32,}@")
    for node in (alice, bob):
        for path in node.data_dir.rglob("*"):
            if path.is_file():
                assert not key_in_url.search(path.read_bytes()), \
                    f"the job's rendezvous key is in {path}"


def test_a_dry_run_listens_on_the_loopback_only(make_node, tmp_path):
    """A dry run is a one-party world: it meets nobody, so its party opens no rendezvous at
    all, and gloo's own listener stays on the loopback."""
    import threading

    alice = make_node("alice", pair=False)
    alice.client.publish(write_csv(tmp_path / "a.csv", np.ones((3, 2))), tags=["nums"])
    source = LONG_JOB.replace('"nums", 1', '"nums", 0')
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(alice.client.dry_run(source,
                                                                                time_s=60)))
    thread.start()
    try:
        (pid,) = wait_until(lambda: party_pids(alice.data_dir), 30, "the dry run's party")
        seen = wait_until(lambda: listening_sockets(pid), 30, "gloo's listener in the party")
    finally:
        for pid in party_pids(alice.data_dir):
            os.kill(pid, signal.SIGKILL)
        thread.join(60)
    assert {address for address, _ in seen} == {"127.0.0.1"}, seen
    assert answer["state"] == "failed"  # killed by the test, once it had seen what it needed

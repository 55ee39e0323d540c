"""What a 2-party job puts on the wire, captured on the loopback: no input, in any encoding.

All the traffic of the job is captured with a raw socket on ``lo`` (tests/sniff.py): the peer API
between alice's and bob's nodes, the parties' rendezvous (served by alice's node) and their gloo
links, and the admin API between this test and the nodes. Bob's private values must not appear
in it as float32 or float64 (little- or big-endian), as CrypTen's fixed-point int64 (value *
2**16, little-endian), as the text of their CSV cells, or as whole CSV rows; the peer API must be
TLS records from its first byte to its last, and no plaintext peer request may appear.

An absence proves something only if the check can fail, so it is shown failing twice: the same
job made to return the raw rows instead of their sum (found in the admin API's answer), and a
bare gloo pair (the parties' transport, outside the jail) sending the rows in every encoding the
matcher knows. A third test holds a reveal to one rank to the same standard on the party links:
only shares may cross them (gloo's reduce once put half of them there in plaintext; node/compat.py
fix 5 reveals by direct sends).

Another test run may share this loopback. Patterns of 8 bytes or more are searched in every
captured byte. The 4-byte float32 patterns are searched only in the flows of this job (its nodes'
peer and admin ports, its rendezvous port, and the gloo ports its parties announced): in megabytes
of someone else's ciphertext and random shares a 4-byte pattern would turn up by chance (about one
in 2**32 per position), and the values are fresh random numbers per run, so another run's own
leak-check control cannot collide with them either.
"""

from __future__ import annotations

import base64
import re
import socket
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sniff import Capture, FlowKey, LoopbackSniffer, can_capture

from node.client import results
from node.localnet import LocalNode
from tests.conftest import JOB_TIMEOUT
from tests.test_jobs import spec

REPO = Path(__file__).resolve().parents[1]
ROWS, COLS = 5, 4
FIXED_POINT_SCALE = 1 << 16  # CrypTen's default precision_bits = 16

_NO_CAPTURE = can_capture()
pytestmark = [pytest.mark.real,  # every test here starts real processes
              pytest.mark.skipif(_NO_CAPTURE is not None,
                                 reason=f"no loopback capture here: {_NO_CAPTURE}")]


# -- the private data and its encodings --------------------------------------------------------
@dataclass(frozen=True)
class Secret:
    """Bob's private table: values, the CSV text as written, and each cell's text."""

    values: np.ndarray  # (ROWS, COLS) float64, every value exactly representable (see below)
    cells: list[list[str]]
    text: str
    seed: int

    @property
    def rows(self) -> list[str]:
        return self.text.splitlines()[1:]


def make_secret() -> Secret:
    """20 fresh values in +-[4096, 8192) with 10 fractional bits (N / 2**10 with N odd).

    23 significant bits: float32 holds them exactly and CrypTen's fixed point (value * 2**16)
    is an exact integer, so each encoding below is the one a party really holds. Their float
    bytes carry a full, random mantissa and their CSV cells are 15-16 characters: no pattern
    is a run of zeros or another common byte sequence.
    """
    seed = int(np.random.SeedSequence().entropy % (1 << 63))
    rng = np.random.default_rng(seed)
    n = rng.integers(1 << 22, 1 << 23, size=(ROWS, COLS)) | 1
    sign = rng.choice([-1, 1], size=(ROWS, COLS))
    values = sign * n / 1024.0
    cells = [[repr(float(v)) for v in row] for row in values]
    text = "w,x,y,z\n" + "".join(",".join(row) + "\n" for row in cells)
    assert (values.astype(np.float32) == values).all()
    return Secret(values, cells, text, seed)


@dataclass(frozen=True)
class Finding:
    encoding: str
    what: str  # the value (or row) found
    flow: FlowKey
    offset: int

    def __str__(self) -> str:
        src, sport, dst, dport = self.flow
        return f"{self.encoding} of {self.what} in {src}:{sport} -> {dst}:{dport} at {self.offset}"


ENCODINGS = {
    "float32 LE": lambda v: struct.pack("<f", v),
    "float32 BE": lambda v: struct.pack(">f", v),
    "float64 LE": lambda v: struct.pack("<d", v),
    "float64 BE": lambda v: struct.pack(">d", v),
    "fixed-point int64 LE": lambda v: struct.pack("<q", round(v * FIXED_POINT_SCALE)),
}


def patterns(secret: Secret) -> list[tuple[str, str, bytes]]:
    """(encoding, what, bytes) for every value in every encoding, and every CSV row."""
    out = []
    for value, cell in zip(secret.values.ravel(), (c for row in secret.cells for c in row)):
        for name, encode in ENCODINGS.items():
            out.append((name, cell, encode(float(value))))
        out.append(("CSV text", cell, cell.encode()))
    out += [("CSV row", row, row.encode()) for row in secret.rows]
    for _, what, pattern in out:  # only float32 is short; it is searched in this job's flows
        assert len(pattern) >= 8 or len(pattern) == 4, what
    return out


def find_inputs(streams: dict[FlowKey, bytes], secret: Secret,
                short_scope: set[FlowKey] | None = None) -> list[Finding]:
    """Every place an encoding of ``secret`` occurs. Patterns under 8 bytes are searched only
    in ``short_scope`` (None: everywhere)."""
    found = []
    for encoding, what, pattern in patterns(secret):
        for flow, data in streams.items():
            if len(pattern) < 8 and short_scope is not None and flow not in short_scope:
                continue
            at = data.find(pattern)
            if at >= 0:
                found.append(Finding(encoding, what, flow, at))
    return found


# -- what belongs to this job -------------------------------------------------------------------
def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def gloo_ports(capture: Capture, host: str, rendezvous_port: int) -> set[int]:
    """The ports the parties' gloo listeners announced through the rendezvous store.

    Each rank publishes its listening address in the store as a ``sockaddr_in``: family 2
    (little-endian), the port (big-endian), the IPv4 address; as base64 in the JSON messages
    of Parley's rendezvous (node/rendezvous.py)."""
    store = b"".join(capture.streams()[k] for k in capture.touching({rendezvous_port})
                     if host in (k[0], k[2]))
    values = store + b"".join(base64.b64decode(m.group(1))
                              for m in re.finditer(rb'"v":"([A-Za-z0-9+/=]*)"', store))
    address = re.escape(socket.inet_aton(host))
    return {int.from_bytes(m.group(1), "big")
            for m in re.finditer(rb"\x02\x00(..)" + address, values, re.S)}


def flows_at(capture: Capture, host: str, ports: set[int]) -> set[FlowKey]:
    """Directions with an endpoint ``host:port`` for one of ``ports``."""
    return {k for k in capture.flows
            if (k[0] == host and k[1] in ports) or (k[2] == host and k[3] in ports)}


def tls_problem(data: bytes) -> str | None:
    """None when ``data`` is TLS records from its first byte to its last; else what is wrong."""
    if not data:
        return None
    if data[0] != 0x16 or data[1:3] not in (b"\x03\x01", b"\x03\x03"):
        return f"does not start with a TLS handshake record: {data[:16]!r}"
    at = 0
    while at < len(data):
        header = data[at:at + 5]
        if len(header) < 5:
            return f"a cut TLS record header at byte {at}"
        kind, version, length = header[0], header[1:3], int.from_bytes(header[3:5], "big")
        if kind not in (20, 21, 22, 23) or version not in (b"\x03\x01", b"\x03\x03") \
                or length > (1 << 14) + 256:
            return f"byte {at} is not a TLS record header: {data[at:at + 16]!r}"
        at += 5 + length
    if at != len(data):
        return f"the last TLS record is cut ({at - len(data)} bytes missing)"
    return None


def party_local(address: str) -> tuple[str, str, str]:
    """The three loopback addresses of one job's party (node/links.py): the relay's forwarders
    (c - 1), the party's gloo devices (c), and the address that only compares higher (c + 1)."""
    head, last = address.rsplit(".", 1)
    return tuple(f"{head}.{int(last) + d}" for d in (-1, 0, 1))  # type: ignore[return-value]


def announced_devices(streams: dict[FlowKey, bytes], flows: set[FlowKey]) -> set[tuple[str, int]]:
    """Every IPv4 gloo device address that went through the store in ``flows`` (base64 in
    the JSON of Parley's rendezvous, or raw): gloo's ``Rank`` record holds a sockaddr_in."""
    store = b"".join(streams[k] for k in flows)
    values = store + b"".join(base64.b64decode(m.group(1))
                              for m in re.finditer(rb'"v":"([A-Za-z0-9+/=]*)"', store))
    found = set()
    for m in re.finditer(rb"\x88\x00\x00\x00\x00\x00\x00\x00\x02\x00(..)(....)", values, re.S):
        found.add((socket.inet_ntoa(m.group(2)), int.from_bytes(m.group(1), "big")))
    return found


@dataclass
class JobTraffic:
    capture: Capture
    peer: set[FlowKey]
    admin: set[FlowKey]
    rendezvous: set[FlowKey]  # the store's own port, where the parties meet it
    relay: set[FlowKey]  # node to node: the job's link relays (node/links.py)
    local: set[FlowKey]  # a party and its own node, on the job's party-local addresses
    party_local: set[str]

    @property
    def links(self) -> set[FlowKey]:
        return self.relay | self.local | self.rendezvous

    @property
    def job_flows(self) -> set[FlowKey]:
        return self.peer | self.admin | self.links

    def describe(self, finding: Finding) -> str:
        kinds = [k for k in ("peer", "admin", "rendezvous", "relay", "local")
                 if finding.flow in getattr(self, k)]
        return f"{finding} [{', '.join(kinds) or 'not this job'}]"


def classify(capture: Capture, nodes: list[LocalNode], done: dict) -> JobTraffic:
    host = nodes[0].address.rsplit(":", 1)[0]
    assert all(n.address.rsplit(":", 1)[0] == host for n in nodes)
    links = [n.client.job(done["id"], role="party")["detail"].get("links", {}) for n in nodes]
    assert all(link.get("tls") for link in links), f"a party ran without TLS links: {links}"
    addresses = {a for link in links for a in party_local(link["party_local"])}
    relay_ports = {int(link["relay_port"]) for link in links}
    return JobTraffic(
        capture,
        peer=flows_at(capture, host, {port_of(n.peer_url) for n in nodes}),
        admin=flows_at(capture, "127.0.0.1", {port_of(n.client.admin_url) for n in nodes}),
        rendezvous=flows_at(capture, host, {port_of(done["detail"]["rendezvous"])}),
        relay=flows_at(capture, host, relay_ports),
        local={k for k in capture.flows if k[0] in addresses or k[2] in addresses},
        party_local=addresses,
    )


def wire_problems(capture: Capture, flows: set[FlowKey]) -> list[str]:
    """What in ``flows`` is not TLS from its first byte to its last (a flow whose start the
    capture missed counts as a problem too)."""
    streams = capture.streams()
    problems = []
    for key in sorted(k for k in flows if streams[k]):
        if not capture.flows[key].saw_syn:
            problems.append(f"{key}: began before the capture")
            continue
        problem = tls_problem(streams[key])
        if problem is not None:
            problems.append(f"{key}: {problem}")
    return problems


def check_links(capture: Capture, traffic: JobTraffic, crypten_bytes: int) -> None:
    """Every byte between the job's nodes is TLS, and the job's party traffic went there.

    * every flow of the peer API (but connections kept alive from an earlier job, checked
      there) and of the link relays, and whatever used the rendezvous address rank 0's node
      gave out, is TLS records from its first byte to its last;
    * every gloo device any party announced in the store listens on a party-local address
      (loopback only, one per job's party), never on the node's address;
    * the party-local legs (a party and its own node) carry at least the bytes CrypTen
      counted, and so do the relays: the job's gloo traffic crossed between the nodes inside
      TLS and nowhere else.
    """
    streams = capture.streams()
    kept_alive = {k for k in traffic.peer if not capture.flows[k].saw_syn}  # from an earlier job
    problems = wire_problems(capture, (traffic.peer - kept_alive) | traffic.relay
                             | traffic.rendezvous)
    assert not problems, "not TLS between the nodes:\n" + "\n".join(problems[:20])
    devices = announced_devices(streams, traffic.local)
    assert devices, "no gloo device announced through the store on the party-local legs"
    outside = {d for d in devices if d[0] not in traffic.party_local}
    assert not outside, f"gloo devices outside the party-local addresses: {sorted(outside)}"
    relayed = sum(len(streams[k]) for k in traffic.relay)
    local = sum(len(streams[k]) for k in traffic.local)
    assert relayed >= crypten_bytes and local >= crypten_bytes, (relayed, local, crypten_bytes)


SUM_JOB = '''
def run(crypten):
    return crypten.load("secret", 1).sum().get_plain_text(dst=0)
'''

RAW_JOB = '''
def run(crypten):
    return crypten.load("secret", 1).get_plain_text(dst=0)
'''


def test_two_party_job_traffic_carries_no_input_and_the_peer_api_is_tls(make_node, tmp_path):
    """Bob's 20 values, loaded by his party and summed with alice's: nothing of them on the wire.

    The capture runs from before the nodes start (so every peer connection is seen from its
    first byte: pairing, proposal, approval, start, result) until the job has finished. Then,
    as the proof that the check can fail in this very setting, the same two nodes run a job that
    returns the raw rows to rank 0 instead of their sum: the rows are then on the loopback, in
    the admin API's plain-HTTP answer to this test (which by design only listens on 127.0.0.1),
    and the same matcher finds every value there, while the peer API that carried the same
    result is still TLS throughout. (What the party links carry for such a reveal is the next
    test's subject.)
    """
    secret = make_secret()
    csv = tmp_path / "bob-private.csv"
    csv.write_text(secret.text)
    context = f"(values from seed {secret.seed}; CSV in {csv})"

    sniffer = LoopbackSniffer().start()
    try:
        alice, bob = make_node("alice"), make_node("bob")
        bob.client.publish(csv, tags=["secret"])
        job = alice.client.submit(spec([alice, bob], SUM_JOB, [("secret", 1, "dataset")]))
        done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    finally:
        capture = sniffer.stop()
    assert done["state"] == "succeeded", done["reason"]
    assert float(results(done)[0]) == pytest.approx(secret.values.sum(), rel=1e-6)
    assert capture.drops == 0, f"the capture dropped {capture.drops} packets: it proves nothing"

    traffic = classify(capture, [alice, bob], done)
    streams = capture.streams()
    # The capture saw every kind of traffic of this job (else an absence would mean nothing).
    for kind in ("peer", "admin", "relay", "local"):
        flows = getattr(traffic, kind)
        assert any(streams[k] for k in flows), f"no {kind} traffic captured: {sorted(flows)}"
    check_links(capture, traffic, crypten_bytes(alice, bob, done))

    leaks = find_inputs(streams, secret, short_scope=traffic.job_flows)
    assert not leaks, f"private input on the wire {context}:\n" + "\n".join(
        traffic.describe(f) for f in leaks[:20])

    for key in sorted(k for k in traffic.peer if streams[k]):
        assert capture.flows[key].saw_syn, f"peer flow {key} began before the capture"
        problem = tls_problem(streams[key])
        assert problem is None, f"peer API flow {key}: {problem}"
    assert sum(len(streams[k]) for k in traffic.peer) > 10_000  # proposal, start, result
    for request in (b"POST /peer", b"GET /peer", b"PUT /peer", b"DELETE /peer"):
        plain = [k for k, data in streams.items() if request in data]
        assert not plain, f"plaintext {request!r} on the loopback in {plain}"

    # -- the control: the same job releasing the raw rows puts them on the (admin) wire ------
    done, capture, traffic = captured_job(alice, bob, RAW_JOB)
    np.testing.assert_array_equal(results(done)[0], secret.values.astype(np.float32))
    streams = capture.streams()
    answers = {k: streams[k] for k in traffic.admin if k[1] == port_of(alice.client.admin_url)}
    in_answer = find_inputs(answers, secret)
    assert {f.what for f in in_answer if f.encoding == "CSV text"} == \
        {c for row in secret.cells for c in row}, f"the matcher missed released values {context}"
    for key in traffic.peer:
        if capture.flows[key].saw_syn:  # (a kept-alive connection began in the first window)
            assert tls_problem(streams[key]) is None, f"peer API flow {key} is not TLS"
    check_links(capture, traffic, crypten_bytes(alice, bob, done))
    assert not find_inputs({k: streams[k] for k in traffic.peer | traffic.relay}, secret)


def crypten_bytes(alice: LocalNode, bob: LocalNode, done: dict) -> int:
    """The most bytes CrypTen counted at one party: what gloo carried, at least (its counter
    at each party counts the elements exchanged, each way)."""
    return max(int(n.client.job(done["id"], role="party")["detail"].get("stats", {}).get(
        "bytes", 0)) for n in (alice, bob))


def captured_job(alice: LocalNode, bob: LocalNode, source: str) -> tuple[dict, Capture,
                                                                         JobTraffic]:
    """Run ``source`` on alice (rank 0) and bob (rank 1, holding "secret") under a capture."""
    with LoopbackSniffer() as sniffer:
        job = alice.client.submit(spec([alice, bob], source, [("secret", 1, "dataset")]))
        done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    capture = sniffer.stop()
    assert done["state"] == "succeeded", done["reason"]
    assert capture.drops == 0, f"the capture dropped {capture.drops} packets: it proves nothing"
    return done, capture, classify(capture, [alice, bob], done)




def test_a_reveal_to_rank_0_puts_no_plaintext_on_the_party_links(make_node, tmp_path):
    """get_plain_text(dst=0) must release the values to rank 0 only: rank 1 sends its shares,
    nothing else. Bob's 20 values revealed to alice (rank 0): no encoding of any of them may
    cross the party links (gloo, rendezvous); they reach this test only in alice's admin API
    answer."""
    secret = make_secret()
    csv = tmp_path / "bob-private.csv"
    csv.write_text(secret.text)
    alice, bob = make_node("alice"), make_node("bob")
    bob.client.publish(csv, tags=["secret"])
    done, capture, traffic = captured_job(alice, bob, RAW_JOB)
    np.testing.assert_array_equal(results(done)[0], secret.values.astype(np.float32))
    streams = capture.streams()
    links = traffic.links
    assert any(streams[k] for k in traffic.local), "no party-local traffic captured"
    check_links(capture, traffic, crypten_bytes(alice, bob, done))
    leaks = find_inputs({k: streams[k] for k in links}, secret)
    cells = [c for row in secret.cells for c in row]
    assert not leaks, (
        f"a reveal to rank 0 put plaintext on a party link: elements "
        f"{sorted({cells.index(f.what) for f in leaks if f.what in cells})} of 0..19 as "
        f"{sorted({f.encoding for f in leaks})}, e.g. {traffic.describe(leaks[0])}")


# -- a bare gloo pair that sends the input in the clear -------------------------------------
LEAKY_PAIR = textwrap.dedent('''
    import os, sys
    from datetime import timedelta
    import numpy as np
    import torch
    import torch.distributed as dist

    rank, port, csv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=timedelta(seconds=30))
    count = 6
    if rank == 1:
        from node.compat import crypten
        x = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float32)
        as_bytes = lambda a: torch.from_numpy(np.frombuffer(a.tobytes(), dtype=np.uint8).copy())
        fixed = crypten.encoder.FixedPointEncoder(precision_bits=16).encode(torch.from_numpy(x))
        payloads = [torch.from_numpy(x), torch.from_numpy(x.astype(np.float64)), fixed,
                    as_bytes(x.astype(">f4")), as_bytes(x.astype(">f8")),
                    as_bytes(np.frombuffer(open(csv, "rb").read(), dtype=np.uint8))]
        assert len(payloads) == count
        for p in payloads:  # in the clear: what a party must never do
            p = p.flatten().contiguous()
            dist.send(torch.tensor([p.numel(), {torch.float32: 0, torch.float64: 1,
                                                torch.int64: 2, torch.uint8: 3}[p.dtype]]), 0)
            dist.send(p, 0)
    else:
        dtypes = [torch.float32, torch.float64, torch.int64, torch.uint8]
        for _ in range(count):
            head = torch.zeros(2, dtype=torch.int64)
            dist.recv(head, 1)
            dist.recv(torch.zeros(int(head[0]), dtype=dtypes[int(head[1])]), 1)
    dist.barrier()
    dist.destroy_process_group()
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_matcher_catches_an_input_sent_in_the_clear_over_gloo(tmp_path):
    """The negative control for the binary encodings: a test-only "job" of two bare
    torch.distributed processes on gloo over the loopback (the parties' transport, with none of
    Parley's jail, which would refuse this) where rank 1 sends its CSV rows to rank 0 in the
    clear: as float32, float64, CrypTen's fixed-point int64 (its own encoder), big-endian
    float32/float64 bytes and the CSV text. The same sniffer and matcher must find every value
    in every encoding, and every row."""
    secret = make_secret()
    csv = tmp_path / "leaked.csv"
    csv.write_text(secret.text)
    port = free_port()
    with LoopbackSniffer() as sniffer:
        procs = [subprocess.Popen([sys.executable, "-c", LEAKY_PAIR, str(rank), str(port),
                                   str(csv)], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for rank in (0, 1)]
        try:
            outs = [p.communicate(timeout=60)[0].decode(errors="replace") for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    capture = sniffer.stop()
    assert capture.drops == 0
    # Rank 0 listens for the store; gloo's own links are found as in the real job.
    links = flows_at(capture, "127.0.0.1", gloo_ports(capture, "127.0.0.1", port))
    assert links, "no gloo link captured"
    found = find_inputs({k: capture.streams()[k] for k in links}, secret)
    every_cell = {c for row in secret.cells for c in row}
    for encoding in [*ENCODINGS, "CSV text"]:
        assert {f.what for f in found if f.encoding == encoding} == every_cell, \
            f"the matcher missed {encoding} (seed {secret.seed})"
    assert {f.what for f in found if f.encoding == "CSV row"} == set(secret.rows)
    # the checks that a real job's links pass (check_links) flag such a pair: not TLS, and
    # its devices announced on the node's address, not on a party-local one
    streams = capture.streams()
    problems = wire_problems(capture, links)
    assert len(problems) == sum(1 for k in links if streams[k]), problems
    assert all("does not start with a TLS handshake record" in p for p in problems), problems
    devices = announced_devices(streams, flows_at(capture, "127.0.0.1", {port}))
    assert {d[0] for d in devices} == {"127.0.0.1"}, devices
    # and these links are exactly where the leak is: not in the rendezvous store
    assert not find_inputs({k: capture.streams()[k] for k in flows_at(
        capture, "127.0.0.1", {port})}, secret)


# -- the generator seeds: on plain gloo links, in the clear ----------------------------------
SEEDS_PAIR = textwrap.dedent('''
    import json, os, sys
    import torch
    rank, port = int(sys.argv[1]), int(sys.argv[2])
    os.environ.update(GLOO_SOCKET_IFNAME="lo", RENDEZVOUS=f"tcp://127.0.0.1:{port}",
                      WORLD_SIZE="2", RANK=str(rank), DISTRIBUTED_BACKEND="gloo")
    from node.compat import crypten
    crypten.init()
    cpu = torch.device("cpu")
    print(json.dumps({k: crypten.generators[k][cpu].initial_seed()
                      for k in ("prev", "next", "global")}), flush=True)
    # End as a party ends: gloo's threads, torn down by the interpreter's exit while the peer
    # closes its end, can abort the process ("terminate called without an active exception").
    os._exit(0)
''')


def test_plain_gloo_links_carry_crypten_s_generator_seeds(tmp_path):
    """Why the party links are TLS (the issue this answers): ``crypten.init()`` between two
    bare processes on plain gloo puts the pairwise and global generator seeds on the wire as
    int64, and a recorder finds them there. In a real job every byte between the nodes is a
    TLS record (``check_links``), so no such plaintext is there to find; the only plaintext
    legs are a party's with its own node, on loopback addresses of its own."""
    import json

    port = free_port()
    with LoopbackSniffer() as sniffer:
        procs = [subprocess.Popen([sys.executable, "-c", SEEDS_PAIR, str(rank), str(port)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for rank in (0, 1)]
        try:
            outs = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-2000:] for _, e in outs]
    capture = sniffer.stop()
    assert capture.drops == 0
    seeds = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]
    assert seeds[0]["next"] == seeds[1]["prev"] and seeds[0]["global"] == seeds[1]["global"]
    links = flows_at(capture, "127.0.0.1", gloo_ports(capture, "127.0.0.1", port))
    wire = b"".join(capture.streams()[k] for k in links)
    for name, seed in (("rank 0's next (rank 1's prev)", seeds[0]["next"]),
                       ("rank 1's next (rank 0's prev)", seeds[1]["next"]),
                       ("the global seed", seeds[0]["global"])):
        assert struct.pack("<Q", seed) in wire, f"{name} is not on the plain gloo links"
    assert wire_problems(capture, links), "plain gloo links passed for TLS"

"""Discovery on real python-zeroconf: separate processes on the loopback, and namespaces as hosts.

Every zeroconf instance here runs on 127.0.0.1 or inside a network namespace this file creates:
never on the machine's real interfaces (PLATFORM.md). Node ids carry the pid, so a concurrent
test run on the same loopback cannot satisfy or spoil these assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import Namespace, NamespacesUnavailable, switched_namespaces
from zeroconf import ServiceInfo

from discovery import (
    DEFAULT_HOST_TTL,
    SERVICE_TYPE,
    Browser,
    NameConflict,
    PeerEvent,
    Publisher,
    build_txt,
    make_zeroconf,
    parse_fields,
    parse_peer,
    parse_txt_rdata,
)
from discovery.browser import refresh_offsets

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ["127.0.0.1"]
# Host TTL for the publishers of the expiry test: a killed one must vanish within about this.
# Short, yet leaving the survivors three refresh queries a second apart (a starved CPU must not
# fake a death). The other tests keep the production default, so only a goodbye can remove.
SHORT_TTL = 6
PID = os.getpid()

Event = dict[str, Any]


class PeerProcess:
    """A ``python -m discovery publish`` process (publishes and browses); its events as JSON."""

    def __init__(
        self,
        node_id: str,
        name: str,
        port: int,
        *,
        interfaces: list[str] | None = LOOPBACK,
        prefix: list[str] | None = None,
        ttl: int = DEFAULT_HOST_TTL,
        extra: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.name = name
        self.port = port
        cmd = [
            *(prefix or []),
            sys.executable,
            "-m",
            "discovery",
            "-v",
            "publish",
            "--id",
            node_id,
            "--name",
            name,
            "--port",
            str(port),
            "--ttl",
            str(ttl),
            *(extra or []),
        ]
        for address in interfaces or []:
            cmd += ["--interface", address]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: list[tuple[float, Event]] = []
        self.stderr: list[str] = []
        self.group: list[PeerProcess] = [self]  # whose logs to show when a wait fails
        self._cond = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append((time.monotonic(), json.loads(line)))
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def wait_for(self, what: str, predicate: Callable[[Event], bool], timeout: float) -> Event:
        """The first event (past or future) matching ``predicate``; fail after ``timeout``."""

        def find() -> Event | None:
            return next((e for _, e in self.events if predicate(e)), None)

        with self._cond:
            found = self._cond.wait_for(find, timeout)
        if found is None:
            logs = "\n".join(
                f"--- {p.name} stderr:\n" + "\n".join(p.stderr[-25:]) for p in self.group
            )
            pytest.fail(
                f"{self.name}: timed out after {timeout:g} s waiting for {what}\n"
                f"events: {[e for _, e in self.events]}\n{logs}"
            )
        return found

    def wait_peer(self, kind: str, other: PeerProcess, timeout: float = 10, **fields: Any) -> Event:
        def match(e: Event) -> bool:
            peer = e.get("peer", {})
            return (
                e["event"] == kind
                and peer.get("node_id") == other.node_id
                and all(peer.get(k) == v for k, v in fields.items())
            )

        return self.wait_for(f"{kind} {other.name} {fields}", match, timeout)

    def peer_events(self, node_id: str) -> list[Event]:
        return [e for _, e in self.events if e.get("peer", {}).get("node_id") == node_id]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """A clean stop: end of input makes it send goodbyes and exit."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0, "\n".join(self.stderr[-25:])

    def close(self) -> None:
        """Stop it whatever state it is in: SIGTERM (goodbyes), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[Callable[..., PeerProcess]]:
    """Start peer processes; every one is killed at teardown, whatever happened."""
    started: list[PeerProcess] = []

    def make(node_id: str, name: str, port: int, **kwargs: Any) -> PeerProcess:
        started.append(PeerProcess(node_id, name, port, **kwargs))
        started[-1].group = started
        return started[-1]

    yield make
    for peer in started:
        peer.close()


# -- 1. separate processes on the loopback ---------------------------------------------------


@pytest.mark.real
def test_loopback_peers_appear_update_and_say_goodbye(spawn: Callable[..., PeerProcess]) -> None:
    alice = spawn(f"t{PID}-alice", "alice", 7101)
    bob = spawn(f"t{PID}-bob", "bob", 7102)
    carol = spawn(f"t{PID}-carol", "carol", 7103)
    everyone = (alice, bob, carol)

    for me in everyone:
        for other in everyone:
            if other is not me:
                me.wait_peer(
                    "added",
                    other,
                    name=other.name,
                    port=other.port,
                    host="127.0.0.1",
                    protocol=1,
                    catalog_version=0,
                    source="mdns",
                )

    alice.send("cv 7")
    for me in (bob, carol):
        me.wait_peer("updated", alice, catalog_version=7, name="alice")
    alice.send("name Alice L.")
    for me in (bob, carol):
        me.wait_peer("updated", alice, catalog_version=7, name="Alice L.")

    bob.stop()
    for me in (alice, carol):
        event = me.wait_peer("removed", bob, timeout=5)
        assert event["reason"] == "goodbye", me.events

    for me in everyone:
        assert me.peer_events(me.node_id) == [], "a node must not list itself"
    # No one still running was ever dropped.
    for me in (alice, carol):
        assert not [
            e
            for e in me.peer_events(carol.node_id if me is alice else alice.node_id)
            if e["event"] == "removed"
        ]


@pytest.mark.real
def test_loopback_killed_peer_expires_then_returns(spawn: Callable[..., PeerProcess]) -> None:
    alice = spawn(f"t{PID}-alice2", "alice", 7201, ttl=SHORT_TTL)
    bob = spawn(f"t{PID}-bob2", "bob", 7202, ttl=SHORT_TTL)
    carol = spawn(f"t{PID}-carol2", "carol", 7203, ttl=SHORT_TTL)
    for me, others in ((alice, (bob, carol)), (bob, (alice, carol))):
        for other in others:
            me.wait_peer("added", other)
    carol.wait_for("its own announcement", lambda e: e["event"] == "ready", 10)

    carol.proc.send_signal(signal.SIGKILL)  # no goodbye
    killed_at = time.monotonic()
    carol.proc.wait(timeout=10)
    gone = {}
    for me in (alice, bob):
        event = me.wait_peer("removed", carol, timeout=SHORT_TTL + 10)
        assert event["reason"] == "expired", me.events
        gone[me.name] = next(t for t, e in me.events if e is event) - killed_at
    print(f"\nSIGKILLed peer removed after {gone} s (host TTL {SHORT_TTL} s)")

    # The same node restarts right away (its expired records may still sit in the caches).
    carol_again = spawn(carol.node_id, "carol", 7213, ttl=SHORT_TTL)
    for me in (alice, bob):
        me.wait_peer("added", carol_again, port=7213)
    # alice and bob never lost each other while carol came and went.
    assert not [e for e in alice.peer_events(bob.node_id) if e["event"] == "removed"]
    assert not [e for e in bob.peer_events(alice.node_id) if e["event"] == "removed"]


async def test_a_node_under_a_new_instance_name_stays_one_peer() -> None:
    """Renamed, then restarted before its old records expired: one peer, updated, not removed."""
    zc_a, zc_b = make_zeroconf(LOOPBACK), make_zeroconf(LOOPBACK)
    node_id = f"t{PID}-renamed"
    browser = Browser(zc_a)
    old = Publisher(zc_b, node_id=node_id, name="old name", port=7801, addresses=LOOPBACK)
    new = Publisher(zc_b, node_id=node_id, name="new name", port=7801, addresses=LOOPBACK)
    assert old.instance_name != new.instance_name

    async def next_event() -> PeerEvent:
        while (event := await browser.events.get()).record.node_id != node_id:
            pass
        return event

    try:
        await browser.start()
        await old.start()
        assert (await asyncio.wait_for(next_event(), 10)).kind == "added"
        await new.start()
        event = await asyncio.wait_for(next_event(), 10)
        assert (event.kind, event.record.name) == ("updated", "new name")
        await old.close()  # the stale instance goes: the node itself stays
        await new.update(catalog_version=5)  # a later event proves the goodbye was handled
        event = await asyncio.wait_for(next_event(), 10)
        assert (event.kind, event.record.catalog_version) == ("updated", 5), event
        assert browser.peers[node_id].name == "new name"
    finally:
        await browser.close()
        await new.close()
        await zc_a.async_close()
        await zc_b.async_close()


async def test_late_answers_after_a_goodbye_do_not_bring_a_peer_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """zeroconf sends answers queued before a goodbye after it; a restart is still believed."""
    caplog.set_level(logging.DEBUG, logger="discovery")
    zc_a, zc_b, zc_c = (make_zeroconf(LOOPBACK) for _ in range(3))
    zc_d = None
    node_id = f"t{PID}-ghost"
    browser = Browser(zc_a, resolve_timeout=1.5)
    kwargs: dict[str, Any] = {
        "node_id": node_id,
        "name": "ghost",
        "port": 7901,
        "addresses": LOOPBACK,
    }
    gone = Publisher(zc_b, **kwargs)

    async def next_event() -> PeerEvent:
        while (event := await browser.events.get()).record.node_id != node_id:
            pass
        return event

    try:
        await browser.start()
        await gone.start()
        assert (await asyncio.wait_for(next_event(), 10)).kind == "added"
        # An answer queued before the goodbye (not byte-identical to the announcements, which
        # zeroconf would drop as a duplicate packet).
        late_answer = zc_c.zeroconf.generate_service_broadcast(gone._make_info(), 119)
        await gone.close()
        assert (await asyncio.wait_for(next_event(), 10)).reason == "goodbye"

        zc_c.zeroconf.async_send(late_answer)  # what a responder's delayed queue sends

        def rejected() -> bool:
            messages = (r.getMessage() for r in caplog.records)
            return any("back after its goodbye but silent" in m for m in messages)

        deadline = time.monotonic() + 10
        news: list[PeerEvent] = []  # about this node (other test runs may share the loopback)
        while not rejected() and not news:
            assert time.monotonic() < deadline, "the late answer was never looked at"
            await asyncio.sleep(0.05)
            news += [e for e in _drain(browser.events) if e.record.node_id == node_id]
        assert news == [], "a ghost came back"
        assert node_id not in browser.peers

        # A real restart moments later: a new process (whose empty cache holds no late answer;
        # zeroconf refuses to register a name its own cache still lists).
        zc_d = make_zeroconf(LOOPBACK)
        back = Publisher(zc_d, **kwargs)
        await back.start()
        assert (await asyncio.wait_for(next_event(), 10)).kind == "added"
        await back.close()
    finally:
        await browser.close()
        for zc in (zc_a, zc_b, zc_c, zc_d):
            if zc is not None:
                await zc.async_close()


async def test_live_peer_is_refreshed_past_its_ttl() -> None:
    """A quiet but live peer stays listed: the browser re-queries its SRV before it lapses."""
    ttl = 4
    zc_a, zc_b = make_zeroconf(LOOPBACK), make_zeroconf(LOOPBACK)
    node_id = f"t{PID}-quiet"
    browser = Browser(zc_a)
    quiet = Publisher(
        zc_b, node_id=node_id, name="quiet", port=7701, addresses=LOOPBACK, host_ttl=ttl
    )
    try:
        await browser.start()
        await quiet.start()
        while (event := await asyncio.wait_for(browser.events.get(), 10)).record.node_id != node_id:
            pass
        first_seen = event.record.last_seen
        deadline = time.monotonic() + 3 * ttl
        # Only answers to refresh queries can move last_seen this far past the announcement.
        while (peer := browser.peers.get(node_id)) and peer.last_seen < first_seen + 0.9 * ttl:
            assert time.monotonic() < deadline, "no refresh answered within 3 TTLs"
            await asyncio.sleep(0.1)
        assert peer is not None, f"a live peer expired: {browser.events}"
        removed = [e for e in _drain(browser.events) if e.record.node_id == node_id]
        assert removed == []
    finally:
        await browser.close()
        await quiet.close()
        await zc_a.async_close()
        await zc_b.async_close()


def _drain(queue: asyncio.Queue[PeerEvent]) -> list[PeerEvent]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@pytest.mark.parametrize("ttl", [1, 2, 3, 4, 5, 10, 19, 20, 120, 4500])
def test_refresh_queries_leave_the_responder_time_to_answer(ttl: int) -> None:
    """Retries at least a second apart (responders repeat a record at most once a second)."""
    offsets = refresh_offsets(ttl)
    assert offsets == sorted(offsets) and ttl / 2 <= offsets[0] and offsets[-1] < ttl
    assert all(b - a >= 1 for a, b in itertools.pairwise(offsets))
    if ttl >= 20:
        assert offsets == [ttl * 0.80, ttl * 0.85, ttl * 0.90, ttl * 0.95]  # RFC 6762 5.2


# -- 2. TXT records from anyone ----------------------------------------------------------------


def _rdata(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


GOOD = {"id": "n-0123456789abcdef", "name": "alice", "port": "7001", "proto": "1", "cv": "3"}


def _with(**changes: str | bytes | None) -> dict[str, Any]:
    props: dict[str, Any] = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            props.pop(key)
        else:
            props[key] = value
    return props


def test_good_txt_parses() -> None:
    raw = _rdata(*(f"{k}={v}".encode() for k, v in GOOD.items()))
    props = parse_txt_rdata(raw)
    assert props is not None
    record = parse_peer(props, ["fe80::1", "10.0.0.5", "bogus", "127.0.0.1"])
    assert record is not None
    assert (record.node_id, record.name, record.port, record.protocol, record.catalog_version) == (
        "n-0123456789abcdef",
        "alice",
        7001,
        1,
        3,
    )
    assert record.host == "10.0.0.5" and record.addresses == ("10.0.0.5", "127.0.0.1", "fe80::1")
    assert build_txt("n-0123456789abcdef", "alice", 7001, 3) == GOOD


@pytest.mark.parametrize(
    "props",
    [
        _with(id=None),
        _with(id=""),
        _with(id="x" * 129),
        _with(id="has space"),
        _with(name=None),
        _with(name="n" * 64),
        _with(name="n" * 5000),
        _with(name=b"\xff\xfealice"),
        _with(name="ali\nce"),
        _with(name="\u202eecila"),  # right-to-left override: a disguised name
        _with(port="70a1"),
        _with(port="-1"),
        _with(port="+7001"),
        _with(port=" 7001"),
        _with(port="0"),
        _with(port="99999"),
        _with(port=None),
        _with(proto="one"),
        _with(cv="9" * 40),
        _with(cv="1.5"),
        {b"id": None, b"name": None, b"port": None, b"proto": None, b"cv": None},
        {**_with(), "extra": object()},
        {},
    ],
    ids=lambda p: repr(p)[:60],
)
def test_malformed_txt_is_ignored(props: dict[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="discovery")
    assert parse_fields(props) is None
    assert parse_peer(props, ["10.0.0.5"]) is None
    assert any("ignored" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x05id=x",  # a length that runs past the end
        b"\xff",
        _rdata(b"id=n-1", b"name=\xc3", b"port=7001", b"proto=1", b"cv=0"),  # cut UTF-8
        _rdata(b"\xff\xfe=1", b"=", b"", b"port"),
        b"\x00" * 300,
    ],
)
def test_malformed_txt_rdata_is_ignored(raw: bytes) -> None:
    props = parse_txt_rdata(raw)
    assert props is None or parse_fields(props) is None


def test_txt_first_key_wins_and_no_address_is_ignored() -> None:
    props = parse_txt_rdata(
        _rdata(*(f"{k}={v}".encode() for k, v in GOOD.items()), b"ID=evil", b"port=1")
    )
    assert props is not None and parse_fields(props) == parse_fields(GOOD)
    assert parse_peer(GOOD, []) is None and parse_peer(GOOD, ["not-an-address"]) is None


async def test_browser_ignores_malformed_services_on_the_wire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hostile services on the link: the browser lists only the good one and keeps running."""
    caplog.set_level(logging.DEBUG, logger="discovery")
    bad = {
        "noid": _with(id=None),
        "badport": _with(id=f"t{PID}-badport", port="seven"),
        "hugename": _with(id=f"t{PID}-hugename", name="N" * 200),
        "notutf8": _with(id=f"t{PID}-notutf8", name=b"\xff\xfe\xfd"),
    }
    sender, listener = make_zeroconf(LOOPBACK), make_zeroconf(LOOPBACK)
    browser = Browser(listener)
    good = Publisher(sender, node_id=f"t{PID}-good", name="good", port=7301, addresses=LOOPBACK)
    try:
        await browser.start()
        infos = [
            ServiceInfo(
                SERVICE_TYPE,
                f"t{PID}-{label}.{SERVICE_TYPE}",
                port=7001,
                properties=props,
                server=f"t{PID}-{label}.local.",
                parsed_addresses=LOOPBACK,
            )
            for label, props in bad.items()
        ]

        async def register(info: ServiceInfo) -> None:
            await (await sender.async_register_service(info))

        await asyncio.gather(good.start(), *(register(info) for info in infos))

        def ignored() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "TXT record ignored" in r.getMessage()]

        deadline = time.monotonic() + 10
        while not (f"t{PID}-good" in browser.peers and len(ignored()) >= len(bad)):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            await asyncio.sleep(0.05)
        assert [i for i in browser.peers if i.startswith(f"t{PID}-")] == [f"t{PID}-good"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await browser.close()
        await good.close()
        await sender.async_close()
        await listener.async_close()


async def test_second_publisher_for_the_same_node_is_refused() -> None:
    first_zc, second_zc = make_zeroconf(LOOPBACK), make_zeroconf(LOOPBACK)
    kwargs: dict[str, Any] = {
        "node_id": f"t{PID}-twice",
        "name": "twice",
        "port": 7401,
        "addresses": LOOPBACK,
    }
    first = Publisher(first_zc, **kwargs)
    try:
        await first.start()
        with pytest.raises(NameConflict, match="running twice"):
            await Publisher(second_zc, **kwargs).start()
    finally:
        await first.close()
        await first_zc.async_close()
        await second_zc.async_close()


async def test_browser_events_reach_an_async_callback() -> None:
    seen: asyncio.Queue[PeerEvent] = asyncio.Queue()

    async def on_event(event: PeerEvent) -> None:
        await seen.put(event)

    zc_a, zc_b = make_zeroconf(LOOPBACK), make_zeroconf(LOOPBACK)
    me = f"t{PID}-cb-me"
    browser = Browser(zc_a, own_node_id=me, on_event=on_event)
    mine = Publisher(zc_a, node_id=me, name="me", port=7501, addresses=LOOPBACK)
    other = Publisher(zc_b, node_id=f"t{PID}-cb-other", name="other", port=7502, addresses=LOOPBACK)
    try:
        await browser.start()
        await asyncio.gather(mine.start(), other.start())

        async def next_event(kind: str) -> PeerEvent:
            while True:
                event = await seen.get()
                if event.record.node_id.startswith(f"t{PID}-cb") and event.kind == kind:
                    return event

        added = await asyncio.wait_for(next_event("added"), 10)
        assert added.record.node_id == f"t{PID}-cb-other"
        await other.update(catalog_version=2)
        updated = await asyncio.wait_for(next_event("updated"), 10)
        assert updated.record.catalog_version == 2
        await other.update(addresses=["127.0.0.2"])  # a new DHCP lease, say
        moved = await asyncio.wait_for(next_event("updated"), 10)
        assert (moved.record.host, moved.record.addresses) == ("127.0.0.2", ("127.0.0.2",))
        await other.close()
        removed = await asyncio.wait_for(next_event("removed"), 10)
        assert (removed.record.node_id, removed.reason) == (f"t{PID}-cb-other", "goodbye")
        assert me not in browser.peers
    finally:
        await browser.close()
        await mine.close()
        await zc_a.async_close()
        await zc_b.async_close()


# -- 3. three hosts in network namespaces --------------------------------------------------


@pytest.fixture
def three_hosts() -> Iterator[list[Namespace]]:
    """Three namespaces on one bridge, deleted afterwards (spawn's processes die first)."""
    try:
        with switched_namespaces(3) as hosts:
            yield hosts
    except NamespacesUnavailable as exc:
        pytest.skip(f"no network namespaces here: {exc}")
    leftover = [name for name in _netns_list() if name.startswith(f"parley-{PID}-")]
    assert not leftover, f"namespaces left behind: {leftover}"


def _netns_list() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=10
    )
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.real
def test_three_namespaces_see_each_other(
    three_hosts: list[Namespace], spawn: Callable[..., PeerProcess]
) -> None:
    """The default Zeroconf() (every interface) inside each namespace, as on a real LAN.

    The third host starts before its network is up (a laptop whose Wi-Fi joins later): it is
    found, at its LAN address, once the address appears.
    """
    late = three_hosts[2]
    _ip("-n", late.name, "addr", "del", f"{late.address}/24", "dev", late.ifname)
    peers = [
        spawn(
            f"t{PID}-ns{i}",
            f"host{i}",
            7600 + i,
            interfaces=None,
            prefix=host.exec_prefix(),
            extra=["--follow-interfaces", "0.2"],
        )
        for i, host in enumerate(three_hosts, start=1)
    ]
    ready = peers[2].wait_for("ready", lambda e: e["event"] == "ready", 10)
    assert ready["addresses"] == ["127.0.0.1"]  # nothing else yet: seen by this host only
    for me, other in ((peers[0], peers[1]), (peers[1], peers[0])):
        me.wait_peer("added", other, host=three_hosts[peers.index(other)].address)
    _ip("-n", late.name, "addr", "add", f"{late.address}/24", "dev", late.ifname)

    for me in peers:
        ready = me.wait_for("ready", lambda e: e["event"] == "ready", 10)
        for other, host in zip(peers, three_hosts):
            if other is not me:
                # The first word about a peer is its LAN address, never a loopback one.
                first = me.wait_for(
                    f"news of {other.name}",
                    lambda e, o=other: e.get("peer", {}).get("node_id") == o.node_id,
                    10,
                )
                assert first["event"] == "added", first
                assert first["peer"]["addresses"] == [host.address], first
                assert (first["peer"]["port"], first["peer"]["name"]) == (other.port, other.name)
    peers[0].stop()
    for me in peers[1:]:
        assert me.wait_peer("removed", peers[0], timeout=5)["reason"] == "goodbye"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

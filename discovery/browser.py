"""Watch the link for other Parley nodes and report them as added, updated and removed.

How a peer leaves, and why this module does more than wrap ``AsyncServiceBrowser``:

* Goodbye (the peer closed its Publisher): TTL-0 records arrive, python-zeroconf reports
  ``ServiceStateChange.Removed`` at once, and we emit ``removed`` (reason ``"goodbye"``).
* Death without goodbye (SIGKILL, power cut, cable pulled): zeroconf's own answer is cache
  expiry of the PTR record, and on receipt it raises every PTR TTL below 1125 s to 1125 s
  (``_DNS_PTR_MIN_TTL``, a guard against query storms), while publishers use 4500 s. A dead
  peer would stay listed for 19 to 75 minutes. So the Browser follows the liveness of each peer's
  SRV record itself (host TTL, 120 s by default), as RFC 6762 section 5.2 asks of a querier
  with an interest in a record: it re-queries at 80, 85, 90 and 95% of the TTL (one second
  apart for TTLs under 20 s, see ``refresh_offsets``), a live peer answers and refreshes the
  cache, and when the record lapses the peer is ``removed`` (reason ``"expired"``). A dead peer
  thus disappears one host TTL after its last answer. (Measured on the loopback: plain
  zeroconf dropped a SIGKILLed publisher after 1127 s; this Browser after 4.6 s with a 5 s host
  TTL and 119.6 s with the default 120 s.)
* Late answers: a responder sends answers it queued before its goodbye after it, which would
  bring the peer back at every browser for a host TTL. A service that reappears within 3 s of
  its goodbye is believed only if it answers a query sent after those 3 s.

One node is one peer: ``peers`` and the events are keyed by node id. A node renamed and
restarted before its old records expired shows up under a second service name; the newer
instance speaks for it, and the old one leaves without an event.

Zeroconf's callbacks only enqueue: each service name gets at most one worker task at a time
(later notifications for the same name coalesce into it), and every task is kept referenced
until it ends. Nothing here blocks the loop; resolution waits at most ``resolve_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Literal, Self

# The DNS classes are re-exported by zeroconf's package root (kept there for compatibility)
# but left out of its __all__; the root is still the stable place to take them from.
from zeroconf import (  # type: ignore[attr-defined]
    DNSAddress,
    DNSOutgoing,
    DNSQuestion,
    DNSRecord,
    DNSService,
    DNSText,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from discovery.errors import DiscoveryError
from discovery.record import SERVICE_TYPE, PeerRecord, parse_peer, parse_txt_rdata

logger = logging.getLogger(__name__)

# RFC 1035 numbers (zeroconf keeps its own copies private).
_TYPE_A = 1
_TYPE_PTR = 12
_TYPE_TXT = 16
_TYPE_AAAA = 28
_TYPE_SRV = 33
_CLASS_IN = 1
_QUERY_FLAGS = 0  # QR bit clear: a query
# RFC 6762 5.2: refresh at 80%, 85%, 90%, 95% of the TTL, plus 0-2% random jitter.
_REFRESH_AT = (0.80, 0.85, 0.90, 0.95)
# RFC 6762 14: a responder multicasts a record at most once a second (zeroconf delays a repeat
# by a second), so refresh queries closer together than this are wasted.
_RESPONDER_GAP_S = 1.0
# A responder sends answers it queued before a goodbye after it (zeroconf delays multicast
# answers up to ~1.6 s), which re-adds the withdrawn service at every browser. A service that
# reappears this soon after its goodbye is believed only if it answers a query sent once this
# window has passed.
_GHOST_WINDOW_MS = 3000.0

EventKind = Literal["added", "updated", "removed"]


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """One change in the set of visible peers.

    ``reason`` says why a peer was removed: ``"goodbye"`` (it withdrew), ``"expired"`` (it
    stopped answering), ``"replaced"`` (its service now claims another node id), ``"invalid"``
    (it now publishes a TXT record we cannot read). Closing the Browser sends nothing.
    """

    kind: EventKind
    record: PeerRecord
    reason: str = ""


EventCallback = Callable[[PeerEvent], Awaitable[None]]


class Browser:
    """Browse ``_parley._tcp`` on an AsyncZeroconf the caller owns (and closes).

    Events go to ``on_event`` when given (awaited one at a time, in order), else into the
    ``events`` queue. ``peers`` is the current view keyed by node id. Services whose TXT ``id``
    is ``own_node_id`` are ignored. ``resolve_timeout`` bounds the wait for a new service's
    records (seconds); ``check_interval`` is the longest the liveness check sleeps (it wakes
    earlier when a refresh or an expiry is due).
    """

    def __init__(
        self,
        aiozc: AsyncZeroconf,
        *,
        own_node_id: str | None = None,
        on_event: EventCallback | None = None,
        resolve_timeout: float = 3.0,
        check_interval: float = 1.0,
    ) -> None:
        self._aiozc = aiozc
        self._own_node_id = own_node_id
        self._on_event = on_event
        self._resolve_timeout_ms = resolve_timeout * 1000
        self._check_interval = check_interval
        self.events: asyncio.Queue[PeerEvent] = asyncio.Queue()

        self._service_browser: AsyncServiceBrowser | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._names: set[str] = set()  # service names the PTR says exist
        # Every resolved service, and for each node id the one service that speaks for it
        # (a node renamed and restarted before its old records expired has two for a while).
        self._records: dict[str, PeerRecord] = {}  # service name -> its record
        self._owner: dict[str, str] = {}  # node id -> service name reported to the caller
        self._own_names: set[str] = set()
        self._pending: dict[str, ServiceStateChange] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempted: dict[str, float] = {}  # name -> SRV 'created' at the last resolve
        self._goodbye_at: dict[str, float] = {}  # name -> when its goodbye came (ms)
        # name -> (SRV created, refresh queries sent for it, jitter in ms)
        self._refresh: dict[str, tuple[float, int, float]] = {}
        self._wake = asyncio.Event()

    @property
    def peers(self) -> dict[str, PeerRecord]:
        return {node_id: self._records[name] for node_id, name in self._owner.items()}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._aiozc.zeroconf.loop is not self._loop:
            raise DiscoveryError(
                "the AsyncZeroconf runs on another event loop; create it with make_zeroconf() "
                "inside the loop that runs the Browser"
            )
        self._service_browser = AsyncServiceBrowser(
            self._aiozc.zeroconf, [SERVICE_TYPE], handlers=[self._on_service_state_change]
        )
        self._spawn(self._liveness_loop(), "discovery-liveness")
        if self._on_event is not None:
            self._spawn(self._dispatch_loop(), "discovery-dispatch")

    async def close(self) -> None:
        """Stop browsing and end every task this Browser started. Sends no events."""
        if self._closed:
            return
        self._closed = True
        if self._service_browser is not None:
            await self._service_browser.async_cancel()
        tasks = [*self._tasks, *self._workers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- zeroconf's callback: enqueue only ---------------------------------------------------

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if self._closed:
            return
        if state_change is ServiceStateChange.Removed:
            self._names.discard(name)
            self._attempted.pop(name, None)
            self._goodbye_at[name] = current_time_millis()
        else:
            self._names.add(name)
        self._schedule(name, state_change)

    def _schedule(self, name: str, state_change: ServiceStateChange) -> None:
        # The latest word about a name wins, except that "updated" does not hide "added".
        if not (
            state_change is ServiceStateChange.Updated
            and self._pending.get(name) is ServiceStateChange.Added
        ):
            self._pending[name] = state_change
        if name not in self._workers:
            assert self._loop is not None
            task = self._loop.create_task(self._work(name), name="discovery-resolve")
            self._workers[name] = task

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- workers -----------------------------------------------------------------------------

    async def _work(self, name: str) -> None:
        try:
            while name in self._pending and not self._closed:
                state_change = self._pending.pop(name)
                try:
                    if state_change is ServiceStateChange.Removed:
                        # The PTR went: a goodbye (or, after 19+ minutes, plain PTR expiry).
                        self._own_names.discard(name)
                        self._forget(name, "goodbye")
                    else:
                        await self._resolve(name, state_change is ServiceStateChange.Added)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad peer must not stop discovery
                    logger.exception("discovery: handling %s failed", name[:80])
        finally:
            self._workers.pop(name, None)

    async def _resolve(self, name: str, new_instance: bool) -> None:
        zc = self._aiozc.zeroconf
        srv = self._live_srv(name, current_time_millis())
        self._attempted[name] = srv.created if srv is not None else current_time_millis()
        window_ends = self._goodbye_at.get(name, -_GHOST_WINDOW_MS) + _GHOST_WINDOW_MS
        if current_time_millis() < window_ends and not await self._answers_fresh_query(
            name, window_ends
        ):
            logger.debug("discovery: %s is back after its goodbye but silent", name[:80])
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zc, self._resolve_timeout_ms):
            logger.debug("discovery: %s did not resolve in time", name[:80])
            return
        if self._closed or name not in self._names:
            return
        now = current_time_millis()
        props = self._live_txt(name, now)
        addresses = info.parsed_addresses()
        if info.server:
            # After an address change the superseded A record lingers for a second (cache
            # flush, TTL cut to 1 s): leave it out unless it is all there is.
            flushed = _flushed_addresses(self._aiozc.zeroconf, info.server, now)
            addresses = [a for a in addresses if a not in flushed] or addresses
        record = parse_peer(props if props is not None else info.properties, addresses)
        if record is None:
            self._forget(name, "invalid")
            return
        if self._own_node_id is not None and record.node_id == self._own_node_id:
            self._own_names.add(name)
            return
        self._store(name, record, new_instance)

    def _store(self, name: str, record: PeerRecord, new_instance: bool) -> None:
        before = self._records.get(name)
        if before is not None and before.node_id != record.node_id:
            self._forget(name, "replaced")
        self._records[name] = record
        self._wake.set()  # the liveness loop may need to wake earlier for this record
        owner = self._owner.get(record.node_id)
        if owner is None:
            self._owner[record.node_id] = name
            self._emit(PeerEvent("added", record))
        elif owner == name:
            if before is None or not before.same_as(record):
                self._emit(PeerEvent("updated", record))
        elif new_instance:
            # A new instance for a known node (renamed and restarted): it speaks from now on;
            # the old one is left to its goodbye or its expiry, which then go unreported.
            logger.debug("discovery: node %s now at %s", record.node_id[:12], name[:80])
            self._owner[record.node_id] = name
            self._refresh.pop(owner, None)
            if not self._records[owner].same_as(record):
                self._emit(PeerEvent("updated", record))

    def _forget(self, name: str, reason: str) -> None:
        """Drop a service; if it spoke for a node, hand over to another live one or report."""
        self._refresh.pop(name, None)
        record = self._records.pop(name, None)
        if record is None or self._owner.get(record.node_id) != name:
            return
        others = [(n, r) for n, r in self._records.items() if r.node_id == record.node_id]
        if not others:
            del self._owner[record.node_id]
            self._emit(PeerEvent("removed", record, reason))
            return
        heir, heir_record = max(others, key=lambda item: item[1].last_seen)
        self._owner[record.node_id] = heir
        if not heir_record.same_as(record):
            self._emit(PeerEvent("updated", heir_record))

    def _emit(self, event: PeerEvent) -> None:
        logger.debug(
            "discovery: %s %s (%s) %s",
            event.kind,
            event.record.node_id[:12],
            event.record.name,
            event.reason,
        )
        self.events.put_nowait(event)

    async def _dispatch_loop(self) -> None:
        assert self._on_event is not None
        while True:
            event = await self.events.get()
            try:
                await self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # the owner's handler must not stop discovery
                logger.exception("discovery: event handler failed on %s", event.kind)

    # -- liveness ----------------------------------------------------------------------------

    async def _liveness_loop(self) -> None:
        while True:
            delay = self._check_liveness(current_time_millis())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _check_liveness(self, now: float) -> float:
        """Refresh, expire and rediscover; returns the seconds until the next thing is due."""
        due = now + self._check_interval * 1000
        speaking = set(self._owner.values())
        for name in list(self._records):
            if name in self._pending:
                # zeroconf's news about this name is queued for its worker: a goodbye removes
                # the SRV before the worker runs, and must not be mistaken for an expiry.
                continue
            srv = self._live_srv(name, now)
            if srv is None:
                self._forget(name, "expired")
                continue
            self._note_sign_of_life(name, srv, now)
            if name in speaking:  # a superseded instance is left to expire
                due = min(due, self._maybe_refresh(name, srv, now))
            else:
                due = min(due, srv.get_expiration_time(100))
        for name, at in list(self._goodbye_at.items()):
            if now - at >= _GHOST_WINDOW_MS:
                del self._goodbye_at[name]
        # A peer that restarts right after it expired re-announces records the cache may still
        # hold (expired, not yet purged): zeroconf then reports nothing, so look for it here.
        for name in self._names - self._records.keys() - self._own_names - self._workers.keys():
            srv = self._live_srv(name, now)
            if srv is not None and srv.created > self._attempted.get(name, 0.0):
                self._schedule(name, ServiceStateChange.Updated)
        return max(0.02, (due - now) / 1000)

    def _maybe_refresh(self, name: str, srv: DNSRecord, now: float) -> float:
        """Send the refresh query that is due, if any; returns when the next thing is due (ms)."""
        created, sent, jitter = self._refresh.get(name, (-1.0, 0, 0.0))
        if created != srv.created:
            created, sent, jitter = srv.created, 0, random.uniform(0.0, 20.0 * srv.ttl)
        offsets = refresh_offsets(srv.ttl)
        expires = created + srv.ttl * 1000
        if sent < len(offsets) and now >= created + offsets[sent] * 1000 + jitter:
            self._send_refresh_query(name)
            sent += 1
        self._refresh[name] = (created, sent, jitter)
        if sent < len(offsets):
            return min(expires, created + offsets[sent] * 1000 + jitter)
        return expires

    async def _answers_fresh_query(self, name: str, not_before: float) -> bool:
        """Query a service's SRV at ``not_before``; True once an answer to it is cached."""
        await asyncio.sleep(max(0.0, not_before - current_time_millis()) / 1000)
        asked = current_time_millis()
        deadline = asked + self._resolve_timeout_ms
        self._send_refresh_query(name)
        while current_time_millis() < deadline:
            srv = self._live_srv(name, current_time_millis())
            if srv is not None and srv.created >= asked:
                return True
            await asyncio.sleep(0.05)
        return False

    def query_now(self) -> None:
        """Ask the link for every Parley service now (after joining a new network, say)."""
        out = DNSOutgoing(_QUERY_FLAGS, multicast=True)
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        self._aiozc.zeroconf.async_send(out)

    def _send_refresh_query(self, name: str) -> None:
        out = DNSOutgoing(_QUERY_FLAGS, multicast=True)
        out.add_question(DNSQuestion(name, _TYPE_SRV, _CLASS_IN))
        out.add_question(DNSQuestion(name, _TYPE_TXT, _CLASS_IN))
        self._aiozc.zeroconf.async_send(out)

    def _note_sign_of_life(self, name: str, srv: DNSRecord, now: float) -> None:
        seen = time.time() - max(0.0, now - srv.created) / 1000
        record = self._records[name]
        if seen > record.last_seen + 0.5:
            self._records[name] = replace(record, last_seen=seen)

    def _live_srv(self, name: str, now: float) -> DNSService | None:
        return _longest_lived(self._aiozc.zeroconf, name, _TYPE_SRV, now)  # type: ignore[return-value]

    def _live_txt(self, name: str, now: float) -> dict[str, bytes | None] | None:
        txt = _longest_lived(self._aiozc.zeroconf, name, _TYPE_TXT, now)
        if not isinstance(txt, DNSText):
            return None
        return parse_txt_rdata(txt.text)


def refresh_offsets(ttl: float) -> list[float]:
    """Seconds after a record arrived at which to query it again while it stays unanswered.

    RFC 6762 5.2 says 80, 85, 90 and 95% of the TTL. Below a 20 s TTL those points fall less
    than a second apart and a responder would answer only the first; there the retries go one
    second apart instead, the last one a second before expiry, none before half the TTL.
    """
    if ttl * (_REFRESH_AT[1] - _REFRESH_AT[0]) >= _RESPONDER_GAP_S:
        return [ttl * fraction for fraction in _REFRESH_AT]
    gaps = [_RESPONDER_GAP_S * k for k in range(len(_REFRESH_AT), 0, -1)]
    offsets = [ttl - gap for gap in gaps if ttl - gap >= ttl / 2]
    return offsets or [ttl / 2]


def _flushed_addresses(zc: Zeroconf, server: str, now: float) -> set[str]:
    flushed = set()
    for type_, family in ((_TYPE_A, socket.AF_INET), (_TYPE_AAAA, socket.AF_INET6)):
        for record in zc.cache.async_all_by_details(server, type_, _CLASS_IN):
            if isinstance(record, DNSAddress) and record.ttl <= 1 and not record.is_expired(now):
                with contextlib.suppress(ValueError, OSError):
                    flushed.add(socket.inet_ntop(family, record.address))
    return flushed


def _longest_lived(zc: Zeroconf, name: str, type_: int, now: float) -> DNSRecord | None:
    """The unexpired record that will live longest.

    After a change, the superseded record stays cached for one more second (RFC 6762 10.2
    cache flush) with a fresher ``created``; the longest-lived record is the current one.
    """
    best: DNSRecord | None = None
    for record in zc.cache.async_all_by_details(name, type_, _CLASS_IN):
        if record.is_expired(now):
            continue
        if best is None or record.get_expiration_time(100) > best.get_expiration_time(100):
            best = record
    return best

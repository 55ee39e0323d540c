"""A job's party links inside TLS between nodes: the rendezvous store and every gloo pair.

torch's CPU gloo has only a plain TCP transport (no TLS device in the wheel). So a party
never talks to another machine itself: its gloo device listens on a *party-local* loopback
address (``127.a.b.c``, random per job, reachable from this machine only), and every byte
to or from another party goes through its own node's ``LinkRelay``, which carries it to the
other party's node over TLS 1.3, both sides presenting their node certificates and each
pinning the other's (the peer book's pins, the same as the peer API). A relay accepts a TLS
connection only from the nodes of the parties of its job, and then connects only to what
its own party of that job announced (its gloo devices; the job's store on rank 0's node).

Addresses: gloo publishes each device's address in the store (the ``Rank`` record: hostname,
a 136-byte ``Address``, pair ids). The party's store client (node/compat.py) tells its relay
about its own devices, and for every other rank's record asks its relay for a local
forwarder and substitutes its address. Which side of a pair dials is decided by comparing
addresses; the substitutes keep it consistent: the lower rank dials. Process groups of some
of the ranks number their ranks afresh, so a party names its global rank in its records
(``parley-rank-N`` in place of the machine's host name, which thus stays off the wire too).
Its forwarder sits on ``127.a.b.(c-1)`` (below the device, so gloo dials), and the higher rank
sees ``127.a.b.(c+1)`` (above, so gloo waits for the connection).

Each relay runs its own asyncio loop on a thread of the node process, never on the node's
event loop. The legs between a party and its own relay are loopback TCP on the party-local
addresses: they never leave the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

__all__ = ["ADDRESS_BYTES", "AF_INET", "HANDSHAKE_S", "HEADER_MAX", "LinkClient", "LinkRelay",
           "READY", "hostname_of", "job_peers", "neighbour", "parse_rank_record",
           "party_local_address", "tcp_bytes", "with_address", "with_hostname"]

if TYPE_CHECKING:  # the party imports this module: it needs none of the node's TLS machinery
    from node import identity as ident

logger = logging.getLogger(__name__)

HEADER_MAX = 4096
HANDSHAKE_S = 10.0
READY = b"parley-links/1\n"


def party_local_address() -> str:
    """A random loopback address ``127.a.b.c`` with ``c`` in 2..253, for one job's party."""
    return (f"127.{1 + secrets.randbelow(254)}.{secrets.randbelow(256)}."
            f"{2 + secrets.randbelow(252)}")


def neighbour(address: str, step: int) -> str:
    parts = address.split(".")
    parts[3] = str(int(parts[3]) + step)
    return ".".join(parts)


class _RelaySSLObject(ssl.SSLObject):
    """The server side of a relay's TLS: a handshake that fails, or that a client completes
    with a certificate not pinned for the job, is counted as refused and aborted."""

    def do_handshake(self) -> None:
        relay = getattr(self.context, "relay", None)
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError:
            if relay is not None:
                relay.refused += 1
            raise
        der = self.getpeercert(binary_form=True)
        if relay is not None and (not der or hashlib.sha256(der).hexdigest() not in relay.pins):
            relay.refused += 1
            raise ssl.SSLError("the client is not a node of this job's parties")


class _RelayServerContext(ssl.SSLContext):
    relay: Any = None
    sslobject_class = _RelaySSLObject


def _tls_server_context(identity: ident.NodeIdentity, pems: list[str]) -> ssl.SSLContext:
    ctx = _RelayServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    for pem in pems:
        ctx.load_verify_locations(cadata=pem)
    return ctx


class LinkRelay:
    """One job's links on one node (see the module docstring).

    ``peers``: rank -> (certificate sha256, certificate PEM) of the node of every other rank
    of the job. ``host``: the node's address, where the relay's TLS listener binds.
    """

    def __init__(self, identity: ident.NodeIdentity, job_id: str, rank: int,
                 peers: Mapping[int, tuple[str, str]], host: str) -> None:
        from node import tls

        self.identity = identity
        self.job_id = job_id
        self.rank = rank
        self.peers = dict(peers)
        self.pins = {pin for pin, _ in self.peers.values()}
        self.host = host
        self.local = party_local_address()
        self.low, self.high = neighbour(self.local, -1), neighbour(self.local, 1)
        self.token = secrets.token_hex(32)
        self.tls_port = 0
        self.control_port = 0
        self.store_target: tuple[str, int] | None = None  # rank 0's node: its store
        self.refused = 0
        self.bytes_sent = self.bytes_received = 0  # to and from other nodes (plaintext bytes)
        self.wire_sent = self.wire_received = 0  # the same on the wire: TLS, as TCP counted it
        self._devices: set[int] = set()  # ports of our party's gloo devices (on self.local)
        self._forwarders: dict[tuple[int, int], int] = {}  # (rank, device port) -> local port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[Any]] = set()
        self._changed: asyncio.Condition | None = None
        self._server_ctx = _tls_server_context(identity, [pem for _, pem in self.peers.values()])
        self._server_ctx.relay = self  # type: ignore[attr-defined]
        self._client_ctx = {r: tls.client_ssl_context(identity, expected_cert_sha256=pin)
                            for r, (pin, _) in self.peers.items()}

    # -- life cycle (from any thread) ----------------------------------------------------------
    def start(self) -> LinkRelay:
        """Start the relay's thread and listeners; returns once they listen (blocking: call
        it from a worker thread, not the node's loop)."""
        ready: dict[str, Any] = {}
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                ready["error"] = exc
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"links-{self.job_id[:8]}",
                                        daemon=True)
        self._thread.start()
        started.wait(30)
        if "error" in ready:
            raise ready["error"]
        return self

    def add_store_forwarder(self, host: str, port: int) -> int:
        """A local port on ``self.low`` that carries the party's store connection to rank 0's
        relay at ``host:port``."""
        return self._call(self._forwarder(0, None, f"{host}:{port}"))

    def close(self, settle_s: float = 1.0) -> None:
        """Stop; links still open get ``settle_s`` to see their ends close first (the party
        has ended: its sockets are closing), so that the byte counts are whole."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            self._call(self._settle(settle_s))
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- on the relay's loop ---------------------------------------------------------------
    async def _settle(self, limit: float) -> None:
        if self._pipes:
            await asyncio.wait(list(self._pipes), timeout=limit)

    async def _listen(self) -> None:
        self._changed = asyncio.Condition()
        tls = await asyncio.start_server(self._serve_tls, self.host, 0, ssl=self._server_ctx,
                                         ssl_handshake_timeout=HANDSHAKE_S)
        control = await asyncio.start_server(self._serve_control, self.low, 0)
        self._servers += [tls, control]
        self.tls_port = tls.sockets[0].getsockname()[1]
        self.control_port = control.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve_control(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        """The party's requests (JSON lines), after the job's link token."""
        self._writers.add(writer)
        try:
            first = await asyncio.wait_for(reader.readline(), HANDSHAKE_S)
            if not hmac.compare_digest(first.strip(), self.token.encode()):
                self.refused += 1
                return
            while line := await reader.readline():
                request = json.loads(line)
                op = request.get("op")
                if op == "device":  # our party's gloo device listens on self.local:port
                    assert self._changed is not None
                    async with self._changed:
                        self._devices.add(int(request["port"]))
                        self._changed.notify_all()
                    answer: dict[str, Any] = {}
                elif op == "link":
                    port = await self._forwarder(int(request["rank"]), int(request["port"]),
                                                 str(request["relay"]))
                    answer = {"host": self.low, "port": port}
                else:
                    answer = {"error": "unknown operation"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError, KeyError, TypeError, TimeoutError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _forwarder(self, rank: int, device: int | None, relay: str) -> int:
        """A listener on ``self.low`` whose connections go, inside TLS pinned to ``rank``'s
        node, to its relay at ``relay`` and on to ``device`` (a gloo device port of that
        party; None: the job's store)."""
        key = (rank, -1 if device is None else device)
        if key in self._forwarders:
            return self._forwarders[key]
        if rank not in self._client_ctx:
            raise KeyError(f"rank {rank} is not another party of this job")
        host, _, port = relay.rpartition(":")
        header = {"job": self.job_id, "to": "store"} if device is None else {
            "job": self.job_id, "to": "gloo", "port": device}
        line = json.dumps(header).encode() + b"\n"
        ctx = self._client_ctx[rank]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            try:
                far_reader, far_writer = await asyncio.wait_for(asyncio.open_connection(
                    host.strip("[]"), int(port), ssl=ctx), HANDSHAKE_S)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                logger.warning("job %s: could not reach rank %d's node for a link: %s",
                               self.job_id, rank, exc)
                self._writers.discard(writer)
                writer.close()
                return
            try:  # the other relay speaks first once TLS is up (see _serve_tls)
                if await asyncio.wait_for(far_reader.readexactly(len(READY)),
                                          HANDSHAKE_S) != READY:
                    raise ValueError("not a link relay")
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                for w in (writer, far_writer):
                    self._writers.discard(w)
                    w.close()
                return
            far_writer.write(line)
            await self._pipe(reader, writer, far_reader, far_writer)

        server = await asyncio.start_server(serve, self.low, 0)
        self._servers.append(server)
        self._forwarders[key] = server.sockets[0].getsockname()[1]
        return self._forwarders[key]

    async def _serve_tls(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """Another node's relay: only the job's nodes, only to our party's devices or the
        job's store (the TLS handshake, done before this, checked the client's pin; a
        handshake that fails counts as refused, one that takes over ``HANDSHAKE_S`` is
        dropped)."""
        self._writers.add(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der or hashlib.sha256(der).hexdigest() not in self.pins:  # (checked already)
            self.refused += 1
            self._writers.discard(writer)
            writer.close()
            return
        try:
            writer.write(READY)  # the client sends its header once it has this
            line = await asyncio.wait_for(reader.readuntil(b"\n"), HANDSHAKE_S)
            header = json.loads(line[:HEADER_MAX])
            if header.get("job") != self.job_id:
                raise ValueError("another job")
            if header.get("to") == "store" and self.store_target is not None:
                target = self.store_target
            elif header.get("to") == "gloo":
                port = int(header["port"])
                assert self._changed is not None
                async with self._changed:  # our party may announce it a moment later
                    await asyncio.wait_for(self._changed.wait_for(
                        lambda: port in self._devices), HANDSHAKE_S)
                target = (self.local, port)
            else:
                raise ValueError("no such link")
            near_reader, near_writer = await asyncio.open_connection(*target)
        except (OSError, ValueError, KeyError, TypeError, TimeoutError,
                asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.refused += 1
            self._writers.discard(writer)
            writer.close()
            return
        await self._pipe(near_reader, near_writer, reader, writer)

    async def _pipe(self, near_reader: asyncio.StreamReader, near_writer: asyncio.StreamWriter,
                    far_reader: asyncio.StreamReader, far_writer: asyncio.StreamWriter) -> None:
        """Copy both ways until either side closes; then close both."""
        self._writers |= {near_writer, far_writer}
        me = asyncio.current_task()
        if me is not None:
            self._pipes.add(me)
            me.add_done_callback(self._pipes.discard)
        try:  # its own descriptor: TCP's counts stay readable after the transport closes
            wire = socket.socket(fileno=os.dup(far_writer.get_extra_info("socket").fileno()))
        except (OSError, AttributeError):
            wire = None

        # from here on the bytes go from one transport to the other in the protocols'
        # callbacks: no task switch and no buffer copy per message (a StreamReader loop cost
        # about twice the CPU)
        done = asyncio.get_running_loop().create_future()
        outward = _Splice(self, True, done)  # reads the party, writes the other node
        inward = _Splice(self, False, done)
        outward.join(near_writer.transport, far_writer.transport, inward)
        inward.join(far_writer.transport, near_writer.transport, outward)
        for reader, protocol in ((near_reader, outward), (far_reader, inward)):
            protocol.source.set_protocol(protocol)
            leftover = bytes(reader._buffer)  # read with the header, not yet passed on
            reader._buffer.clear()
            if leftover:
                protocol.data_received(leftover)
            if reader.at_eof():
                protocol.connection_lost(None)
            protocol.source.resume_reading()  # a StreamReader may have paused it
        try:
            await done
        except asyncio.CancelledError:
            pass
        if wire is not None:
            sent, received = tcp_bytes(wire)
            wire.close()
            self.wire_sent += sent
            self.wire_received += received
        for writer in (near_writer, far_writer):
            self._writers.discard(writer)
            writer.close()


class _Splice(asyncio.Protocol):
    """One direction of a link: what ``source`` delivers is written to ``sink``; when the
    sink's buffer fills, the source stops being read until it drains."""

    def __init__(self, relay: LinkRelay, outward: bool, done: asyncio.Future[None]) -> None:
        self.relay, self.outward, self.done = relay, outward, done
        self.source: Any = None
        self.sink: Any = None
        self.partner: _Splice | None = None  # the other direction (it reads our sink)

    def join(self, source: Any, sink: Any, partner: _Splice) -> None:
        self.source, self.sink, self.partner = source, sink, partner

    def data_received(self, data: bytes) -> None:
        if self.outward:
            self.relay.bytes_sent += len(data)
        else:
            self.relay.bytes_received += len(data)
        self.sink.write(data)

    def eof_received(self) -> bool:
        return False  # close: gloo's links end whole

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    # our source's transport is the partner's sink: when it is full, stop reading what
    # the partner writes into it
    def pause_writing(self) -> None:
        if self.partner is not None and self.partner.source is not None:
            self.partner.source.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None and self.partner.source is not None:
            self.partner.source.resume_reading()


def tcp_bytes(sock: Any) -> tuple[int, int]:
    """(bytes acknowledged, bytes received) of a TCP connection so far: Linux's TCP_INFO
    (tcpi_bytes_acked and tcpi_bytes_received, since 4.1); (0, 0) where it cannot tell."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return 0, 0
    if len(info) < 136:
        return 0, 0
    return int.from_bytes(info[120:128], "little"), int.from_bytes(info[128:136], "little")


def job_peers(parties: list[dict[str, Any]], my_rank: int, my_node: str,
              my_cert: tuple[str, str], peer_cert: Any) -> dict[int, tuple[str, str]]:
    """rank -> (pin, PEM) of the node of every other party of a job; ``peer_cert(node_id)``
    gives a paired peer's (pin, PEM)."""
    out = {}
    for party in parties:
        rank = int(party["rank"])
        if rank == my_rank:
            continue
        node_id = party.get("node_id")
        out[rank] = my_cert if node_id == my_node else peer_cert(node_id)
    return out


# -- the party's side (no torch here; node/compat.py calls these) ------------------------------
AF_INET = 2
ADDRESS_BYTES = 136  # gloo's tcp Address: a sockaddr_storage and a sequence number


def parse_rank_record(value: bytes) -> tuple[int, str, int] | None:
    """(offset of the address, IPv4 host, port) of a gloo ``Rank`` record, else None."""
    if len(value) < 16:
        return None
    name = int.from_bytes(value[:8], "little")
    if name > 1024 or len(value) < 16 + name + ADDRESS_BYTES:
        return None
    at = 8 + name
    if int.from_bytes(value[at:at + 8], "little") != ADDRESS_BYTES:
        return None
    at += 8
    if (len(value) - at - ADDRESS_BYTES) % 8:
        return None
    if int.from_bytes(value[at:at + 2], "little") != AF_INET:
        return None
    port = int.from_bytes(value[at + 2:at + 4], "big")
    return at, socket.inet_ntoa(value[at + 4:at + 8]), port


def hostname_of(value: bytes) -> str:
    """The host name in a gloo ``Rank`` record (parse it with ``parse_rank_record`` first)."""
    return value[8:8 + int.from_bytes(value[:8], "little")].decode(errors="replace")


def with_hostname(value: bytes, name: str) -> bytes:
    """The record with its host name replaced (gloo uses it only to tell which ranks share
    a machine)."""
    raw = name.encode()
    return len(raw).to_bytes(8, "little") + raw + value[8 + int.from_bytes(value[:8], "little"):]


def with_address(value: bytes, at: int, host: str, port: int) -> bytes:
    """The record with its device address replaced (sequence number and the rest kept)."""
    sockaddr = (AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big")
                + socket.inet_aton(host))
    return value[:at] + sockaddr + value[at + len(sockaddr):]


class LinkClient:
    """The party's connection to its relay's control port (before lockdown only)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self._sock = socket.create_connection((host, port), timeout=30)
        self._file = self._sock.makefile("rwb")
        self._file.write(token.encode() + b"\n")
        self._lock = threading.Lock()

    def ask(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            self._file.write(json.dumps(request).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        if not line:
            raise ConnectionError("the node's link relay closed the connection")
        answer = json.loads(line)
        if "error" in answer:
            raise ConnectionError(f"the node's link relay refused: {answer['error']}")
        return answer

    def close(self) -> None:
        self._file.close()
        self._sock.close()

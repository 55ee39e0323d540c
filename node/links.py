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
event loop; that loop accepts, does the TLS handshakes (an ``SSLObject`` over memory BIOs,
driven by hand) and the link headers. Once a link's header is through, its bytes move on a
thread of its own (``_Pump``: one poll loop, encrypting and sending in one step per message),
which costs about a tenth less CPU per message than asyncio's TLS transport did and keeps the
bytes off every event loop. The legs between a party and its own relay are loopback TCP on
the party-local addresses: they never leave the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

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
    ctx.num_tickets = 0  # links are never resumed
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
        self._socks: set[socket.socket] = set()  # on the relay's loop, closed as it stops
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pumps: set[_Pump] = set()  # links whose header is through: a thread each
        self._count_lock = threading.Lock()
        self._wake = socket.socketpair()  # a byte on it ends every pump
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
        from node.address import format_address

        return self._call(self._forwarder(0, None, format_address(host, port)))

    def close(self, settle_s: float = 1.0) -> None:
        """Stop; links still open get ``settle_s`` to see their ends close first (the party
        has ended: its sockets are closing), so that the byte counts are whole."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            deadline = time.monotonic() + settle_s
            for pump in list(self._pumps):
                pump.join(max(0.0, deadline - time.monotonic()))
            self._wake[1].send(b"x")  # the pumps still running end now
            for pump in list(self._pumps):
                pump.join(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        for sock in self._wake:
            sock.close()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- on the relay's loop: listeners, handshakes and headers --------------------------------
    async def _listen(self) -> None:
        self._changed = asyncio.Condition()
        tls = _listening(self.host)
        control = _listening(self.low)
        self.tls_port = tls.getsockname()[1]
        self.control_port = control.getsockname()[1]
        self._accept(tls, self._serve_tls)
        self._accept(control, self._serve_control)

    def _accept(self, listener: socket.socket, handler: Any) -> None:
        """Accept on ``listener`` (a raw, non-blocking socket) for as long as the relay runs;
        each connection goes to ``handler(sock)`` in a task of its own."""
        loop = asyncio.get_running_loop()
        self._socks.add(listener)

        async def accept() -> None:
            while True:
                try:
                    sock, _ = await loop.sock_accept(listener)
                except OSError:
                    return  # closed: the relay stops
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._socks.add(sock)
                self._spawn(handler(sock))

        self._spawn(accept())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self, *socks: socket.socket | None) -> None:
        for sock in socks:
            if sock is not None:
                self._socks.discard(sock)
                sock.close()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for sock in list(self._socks):
            sock.close()
        self._socks.clear()

    async def _serve_control(self, sock: socket.socket) -> None:
        """The party's requests (JSON lines), after the job's link token."""
        loop = asyncio.get_running_loop()
        lines = _Lines(sock)
        try:
            async with asyncio.timeout(HANDSHAKE_S):
                first = await lines.readline()
            if not hmac.compare_digest(first.strip(), self.token.encode()):
                self.refused += 1
                return
            while line := await lines.readline():
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
                await loop.sock_sendall(sock, json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError, KeyError, TypeError, TimeoutError):
            return
        finally:
            self._drop(sock)

    async def _forwarder(self, rank: int, device: int | None, relay: str) -> int:
        """A listener on ``self.low`` whose connections go, inside TLS pinned to ``rank``'s
        node, to its relay at ``relay`` and on to ``device`` (a gloo device port of that
        party; None: the job's store)."""
        key = (rank, -1 if device is None else device)
        if key in self._forwarders:
            return self._forwarders[key]
        if rank not in self._client_ctx:
            raise KeyError(f"rank {rank} is not another party of this job")
        from node.address import parse_address  # (the relay's side: the node)
        from node.errors import ProposalError

        try:
            host, port = parse_address(relay)
        except ProposalError as exc:
            raise ValueError(exc.message) from None
        header = {"job": self.job_id, "to": "store"} if device is None else {
            "job": self.job_id, "to": "gloo", "port": device}
        line = json.dumps(header).encode() + b"\n"
        ctx = self._client_ctx[rank]
        loop = asyncio.get_running_loop()

        async def serve(near: socket.socket) -> None:
            far = tls = None
            try:
                async with asyncio.timeout(HANDSHAKE_S):
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    far = socket.socket(family, socket.SOCK_STREAM)
                    far.setblocking(False)
                    self._socks.add(far)
                    await loop.sock_connect(far, (host, port))
                    far.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    tls = _Tls(far, ctx, server_side=False)
                    await tls.handshake()
                    # the other relay speaks first once TLS is up (see _serve_tls)
                    ready, rest = await tls.read_until(b"\n", len(READY))
                    if ready != READY or rest:
                        raise ValueError("not a link relay")
                    await tls.send(line)
            except (OSError, ValueError, TimeoutError, ssl.SSLError) as exc:
                logger.warning("job %s: could not reach rank %d's node for a link: %s",
                               self.job_id, rank, exc)
                self._drop(near, far)
                return
            self._pump(near, tls, b"")

        listener = _listening(self.low)
        self._accept(listener, serve)
        self._forwarders[key] = listener.getsockname()[1]
        return self._forwarders[key]

    async def _serve_tls(self, sock: socket.socket) -> None:
        """Another node's relay: only the job's nodes, only to our party's devices or the
        job's store (the handshake checks the client's pin, _RelaySSLObject; a handshake
        that fails counts as refused, one that takes over ``HANDSHAKE_S`` is dropped)."""
        loop = asyncio.get_running_loop()
        near = None
        try:
            async with asyncio.timeout(HANDSHAKE_S):
                tls = _Tls(sock, self._server_ctx, server_side=True)
                await tls.handshake()
                await tls.send(READY)  # the client sends its header once it has this
                line, rest = await tls.read_until(b"\n", HEADER_MAX)
                header = json.loads(line)
                if header.get("job") != self.job_id:
                    raise ValueError("another job")
                if header.get("to") == "store" and self.store_target is not None:
                    target = self.store_target
                elif header.get("to") == "gloo":
                    port = int(header["port"])
                    assert self._changed is not None
                    async with self._changed:  # our party may announce it a moment later
                        await self._changed.wait_for(lambda: port in self._devices)
                    target = (self.local, port)
                else:
                    raise ValueError("no such link")
                near = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                near.setblocking(False)
                self._socks.add(near)
                await loop.sock_connect(near, target)
                near.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except ssl.SSLError:  # counted by _RelaySSLObject
            self._drop(sock, near)
            return
        except (OSError, ValueError, KeyError, TypeError, TimeoutError):
            self.refused += 1
            self._drop(sock, near)
            return
        self._pump(near, tls, rest)

    def _pump(self, near: socket.socket, tls: _Tls, pending: bytes) -> None:
        """Hand a link whose header is through to a thread of its own (``_Pump``)."""
        self._socks.difference_update((near, tls.sock))
        pump = _Pump(self, near, tls, pending)
        self._pumps.add(pump)
        pump.start()

    def _pump_done(self, pump: _Pump) -> None:
        with self._count_lock:
            self.bytes_sent += pump.sent
            self.bytes_received += pump.received
            self.wire_sent += pump.wire_sent
            self.wire_received += pump.wire_received
        self._pumps.discard(pump)


def _listening(host: str) -> socket.socket:
    """A raw, non-blocking TCP listener on ``host`` at a port the kernel picks."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Lines:
    """JSON lines read from a raw socket on the relay's loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, bytearray()

    async def readline(self) -> bytes:
        loop = asyncio.get_running_loop()
        while (at := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > HEADER_MAX:
                raise ValueError("line too long")
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                line, self.buffer = bytes(self.buffer), bytearray()
                return line
            self.buffer += data
        line = bytes(self.buffer[:at + 1])
        del self.buffer[:at + 1]
        return line


class _Tls:
    """One TLS connection driven by hand: an ``SSLObject`` over memory BIOs on a raw socket.
    The relay's loop does the handshake and the header; the link's pump thread then owns it
    (no asyncio transport between: the pump encrypts and sends in one step per message)."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, *, server_side: bool) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side)

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            await self._flush()
            if done:
                return
            await self._fill()

    async def send(self, data: bytes) -> None:
        self.obj.write(data)
        await self._flush()

    async def read_until(self, end: bytes, limit: int) -> tuple[bytes, bytes]:
        """Plaintext up to and with ``end`` (at most ``limit`` bytes), and what came after."""
        buffer = bytearray()
        while True:
            while True:
                try:
                    chunk = self.obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    raise ConnectionError("the link closed")
                buffer += chunk
            at = buffer.find(end)
            if 0 <= at < limit:
                return bytes(buffer[:at + len(end)]), bytes(buffer[at + len(end):])
            if len(buffer) >= limit:
                raise ValueError("a link header too long")
            await self._fill()

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _fill(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionError("the link closed")
        self.incoming.write(data)


_CHUNK = 256 * 1024  # read at most this much at once
_HIGH = 4 * 1024 * 1024  # stop reading a side while this much waits to be written to the other


class _Pump(threading.Thread):
    """One link's bytes, both ways, on a thread of its own: what the party (``near``, plain
    loopback TCP) sends is encrypted and sent to the other node (``tls``), and the reverse,
    in one poll loop. Both sockets are non-blocking; a side that has too much waiting for
    the other is not read until that drains. Either side closing ends the link once what it
    sent has been passed on (gloo's links end whole). The relay's wake socket stops it."""

    def __init__(self, relay: LinkRelay, near: socket.socket, tls: _Tls, pending: bytes) -> None:
        super().__init__(name=f"link-{relay.job_id[:8]}", daemon=True)
        self.relay, self.near, self.tls = relay, near, tls
        self.to_near = bytearray(pending)
        self.sent = 0
        self.received = len(pending)
        self.wire_sent = self.wire_received = 0

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - a link that breaks ends; the job says why
            logger.debug("job %s: a link ended with an error", self.relay.job_id,
                         exc_info=True)
        finally:
            far = self.tls.sock
            self.wire_sent, self.wire_received = tcp_bytes(far)
            for sock in (self.near, far):
                sock.close()
            self.relay._pump_done(self)

    def _run(self) -> None:
        near, far, obj = self.near, self.tls.sock, self.tls.obj
        incoming, outgoing = self.tls.incoming, self.tls.outgoing
        to_near, to_far = self.to_near, bytearray(outgoing.read())
        # every read goes into a buffer made once: recv(n) and read(n) allocate n bytes and
        # shrink them, and for n = 256 kB that is a fresh mmap each time (a 64 kB message took
        # 60 us to receive that way, 11 us into a reused buffer)
        buffer, wire, plain = bytearray(_CHUNK), bytearray(_CHUNK), bytearray(_CHUNK)
        view, wire_view, plain_view = memoryview(buffer), memoryview(wire), memoryview(plain)
        wake = self.relay._wake[0].fileno()
        near_fd, far_fd = near.fileno(), far.fileno()
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        watched: dict[int, int] = {}

        def watch(fd: int, events: int) -> None:
            if watched.get(fd) == events:
                return
            if events:
                poller.register(fd, events)
            else:
                poller.unregister(fd)
            watched[fd] = events

        near_open = far_open = True  # the party's end; the other node's TLS stream
        far_reading = True  # the other node's socket has not reached its end
        ending_at = 0.0
        while True:
            if far_open:  # decrypt whatever has arrived whole
                while True:
                    try:
                        n = cast(int, obj.read(_CHUNK, plain))  # typeshed: bytes
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLError:  # its end without close_notify, or a bad record
                        n = 0
                    if not n:
                        far_open = False
                        break
                    self.received += n
                    if not near_open:
                        continue  # nobody to give it to
                    sent = 0
                    if not to_near:  # straight on, as above
                        try:
                            sent = near.send(plain_view[:n])
                        except BlockingIOError:
                            pass
                        except OSError:
                            near_open = False
                            continue
                    to_near += plain_view[sent:n]  # a copy: the buffer is read into again
            if to_near:
                try:
                    del to_near[:near.send(to_near)]
                except BlockingIOError:
                    pass
                except OSError:
                    near_open = False
                    to_near.clear()
            if to_far:
                try:
                    del to_far[:far.send(to_far)]
                except BlockingIOError:
                    pass
                except OSError:
                    far_open = far_reading = False
                    to_far.clear()
            if not (near_open and far_open):
                if not ending_at:
                    ending_at = time.monotonic() + 1.0
                    if not near_open and far_open:  # the link ends: say so inside TLS
                        try:
                            obj.unwrap()
                        except ssl.SSLError:
                            pass
                        to_far += outgoing.read()
                if not to_near and not to_far or time.monotonic() > ending_at:
                    return
            watch(near_fd, (select.POLLIN if near_open and len(to_far) < _HIGH else 0)
                  | (select.POLLOUT if to_near and near_open else 0))
            watch(far_fd, (select.POLLIN if far_reading and len(to_near) < _HIGH else 0)
                  | (select.POLLOUT if to_far else 0))
            for fd, event in poller.poll(100 if ending_at else None):
                if fd == wake:
                    return
                readable = event & (select.POLLIN | select.POLLHUP | select.POLLERR)
                if fd == near_fd and readable and near_open:
                    try:
                        n = near.recv_into(buffer)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    if not n:
                        near_open = False
                        continue
                    obj.write(view[:n])
                    self.sent += n
                    record = outgoing.read()
                    if not to_far:  # straight on, without a copy into the buffer
                        try:
                            record = record[far.send(record):]
                        except BlockingIOError:
                            pass
                        except OSError:
                            far_open = far_reading = False
                            continue
                    to_far += record
                elif fd == far_fd and readable and far_reading:
                    try:
                        n = far.recv_into(wire)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    if n:
                        incoming.write(wire_view[:n])
                    else:  # what is left in the BIO is still decrypted, then it ends
                        incoming.write_eof()
                        far_reading = False


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

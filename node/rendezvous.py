"""The job's rendezvous: the key-value store its parties meet through, served by rank 0's node.

torch's TCPStore listens on every interface and answers anyone who connects (list every key,
read the parties' gloo addresses, overwrite or delete them). So Parley serves the parties' store
itself (``RendezvousServer``, in the node process), bound to the node's address, and only to a
client that proves the job's key; the key travels inside the rendezvous URL
(``parley://KEY@HOST:PORT``) in the orchestrator's signed start requests over pinned TLS. The
parties' side, a torch ``Store`` speaking this protocol, is ``AuthenticatedStore`` in
node/compat.py (it needs torch; this module does not).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
from collections import deque
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FrameSealer", "MAX_FRAME_BYTES", "MAX_STORE_BYTES", "MAX_WAIT_S", "NONCE_BYTES",
           "RENDEZVOUS_MAGIC", "RENDEZVOUS_SCHEME", "RendezvousServer", "TAG_BYTES", "decode_value",
           "encode_value", "handshake_tags", "parse_rendezvous", "redact_rendezvous",
           "rendezvous_url"]

logger = logging.getLogger(__name__)

RENDEZVOUS_SCHEME = "parley"
RENDEZVOUS_MAGIC = b"parley-rendezvous/1\n"
NONCE_BYTES = 32
TAG_BYTES = 32
MAX_FRAME_BYTES = 1 << 20
MAX_STORE_BYTES = 16 << 20
MAX_WAIT_S = 3600.0


def rendezvous_url(key: bytes, host: str, port: int) -> str:
    """What rank 0's node answers the orchestrator, which passes it on to the other parties
    (over pinned, signed TLS). The key is in it: never log it; ``redact_rendezvous`` first."""
    return f"{RENDEZVOUS_SCHEME}://{key.hex()}@{host}:{port}"


def parse_rendezvous(url: str) -> tuple[str, int, bytes]:
    """Host, port and key of a ``parley://`` rendezvous; ValueError (naming no key) if it is
    not one."""
    parts = urlsplit(url)
    try:
        key = bytes.fromhex(parts.username or "")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError("not a parley:// rendezvous address") from None
    if parts.scheme != RENDEZVOUS_SCHEME or not host or not port or len(key) < 16:
        raise ValueError("not a parley:// rendezvous address with a host, a port and a key")
    return host, port, key


def redact_rendezvous(url: str) -> str:
    """The rendezvous address without its key: what may go into logs, events and job details."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1], query="").geturl()


def handshake_tags(key: bytes, server_nonce: bytes, client_nonce: bytes
                   ) -> tuple[bytes, bytes, bytes]:
    """The client's proof, the server's proof and the session key for one connection. Both
    nonces are fresh, so nothing recorded from another connection can be replayed."""
    def tag(label: bytes) -> bytes:
        return hmac.new(key, label + server_nonce + client_nonce, hashlib.sha256).digest()

    return tag(b"client"), tag(b"server"), tag(b"session")


class FrameSealer:
    """The messages of one authenticated connection: a 4-byte length, the body, and an HMAC
    over the direction, a sequence number and the body, so that a message that is changed,
    replayed, reordered or dropped by someone on the path is refused."""

    def __init__(self, session: bytes, sending: bytes, receiving: bytes) -> None:
        self._session = session
        self._sending, self._receiving = sending, receiving
        self._sent = self._received = 0

    def _tag(self, direction: bytes, seq: int, body: bytes) -> bytes:
        return hmac.new(self._session, direction + seq.to_bytes(8, "big") + body,
                        hashlib.sha256).digest()

    def seal(self, message: dict[str, Any]) -> bytes:
        body = json.dumps(message, separators=(",", ":")).encode()
        tag = self._tag(self._sending, self._sent, body)
        self._sent += 1
        return len(body).to_bytes(4, "big") + body + tag

    def open(self, body: bytes, tag: bytes) -> dict[str, Any]:
        if not hmac.compare_digest(tag, self._tag(self._receiving, self._received, body)):
            raise ValueError("a rendezvous message failed its integrity check")
        self._received += 1
        message = json.loads(body)
        if not isinstance(message, dict):
            raise TypeError("a rendezvous message is not an object")
        return message


def encode_value(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_value(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(text, validate=True)


class RendezvousServer:
    """One job's key-value store for its parties' rendezvous (torch's Store operations), on
    rank 0's node, listening on the node's address only.

    A client must prove the job's key (HMAC challenge-response over fresh nonces) before it
    may do anything; after that every message carries an HMAC. Someone who merely connects
    learns a random nonce and is dropped: after ``handshake_s`` if silent, at once if the proof
    is wrong. At most ``max_pending`` connections may be unproven at a time; a new one pushes
    the oldest out, so a flood of idle connections costs the node nothing unbounded and cannot
    keep a party out for longer than one handshake. The listener closes once every rank has
    said it is done (the process groups are made; nothing needs the store after that), and in
    any case with ``close`` at the end of the job.
    """

    def __init__(self, world_size: int, key: bytes | None = None, handshake_s: float = 5.0,
                 max_pending: int = 16) -> None:
        self.world_size = world_size
        self.key = key or secrets.token_bytes(32)
        self.handshake_s = handshake_s
        self.max_pending = max_pending
        self.refused = 0  # connections that did not prove the key
        self.host = ""
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._data: dict[str, bytes] = {}
        self._size = 0
        self._changed: asyncio.Condition | None = None
        self._pending: deque[asyncio.StreamWriter] = deque()
        self._writers: set[asyncio.StreamWriter] = set()
        self._done: set[int] = set()

    @property
    def url(self) -> str:
        return rendezvous_url(self.key, self.host, self.port)

    async def start(self, host: str) -> RendezvousServer:
        """Listen on ``host``, on a port the system chooses as it binds (no race)."""
        family, kind, proto, _, address = socket.getaddrinfo(
            host, 0, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.bind(address)
            sock.listen(64)
            sock.setblocking(False)
            self._changed = asyncio.Condition()
            self._server = await asyncio.start_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            raise
        self.host = host
        self.port = int(sock.getsockname()[1])
        return self

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            except TimeoutError:
                pass

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._pending):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._pending.append(writer)
        while len(self._pending) > self.max_pending:
            self._pending.popleft().close()
        proven = False
        try:
            server_nonce = secrets.token_bytes(NONCE_BYTES)
            writer.write(RENDEZVOUS_MAGIC + server_nonce)
            hello = await asyncio.wait_for(reader.readexactly(NONCE_BYTES + TAG_BYTES),
                                           self.handshake_s)
            client_nonce, proof = hello[:NONCE_BYTES], hello[NONCE_BYTES:]
            client_tag, server_tag, session = handshake_tags(self.key, server_nonce,
                                                             client_nonce)
            if not hmac.compare_digest(proof, client_tag):
                return
            proven = True
            if writer in self._pending:
                self._pending.remove(writer)
            writer.write(server_tag)
            sealer = FrameSealer(session, sending=b"S", receiving=b"C")
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                if size > MAX_FRAME_BYTES:
                    return
                frame = await reader.readexactly(size + TAG_BYTES)
                request = sealer.open(frame[:size], frame[size:])
                answer = await self._answer(request)
                writer.write(sealer.seal(answer))
                await writer.drain()
                if request.get("op") == "done":
                    return
        except (TimeoutError, asyncio.IncompleteReadError, OSError, ValueError, TypeError):
            return
        finally:
            if not proven:
                self.refused += 1
            if writer in self._pending:
                self._pending.remove(writer)
            self._writers.discard(writer)
            writer.close()

    async def _wait_for(self, keys: list[str], timeout: Any) -> bool:
        assert self._changed is not None
        limit = min(float(timeout), MAX_WAIT_S) if timeout is not None else MAX_WAIT_S
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: all(k in self._data for k in keys)),
                    timeout=max(0.0, limit))
            except TimeoutError:
                return False
        return True

    async def _put(self, key: str, value: bytes) -> None:
        assert self._changed is not None
        old = self._data.get(key)
        grown = len(key) + len(value) - (len(key) + len(old) if old is not None else 0)
        if self._size + grown > MAX_STORE_BYTES:
            raise ValueError("the rendezvous store is full")
        self._size += grown
        self._data[key] = value
        async with self._changed:
            self._changed.notify_all()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """torch's Store operations, with TCPStore's semantics."""
        op = request.get("op")
        key = str(request.get("k", ""))
        if op == "set":
            await self._put(key, decode_value(request.get("v")))
            return {}
        if op == "get":
            if not await self._wait_for([key], request.get("timeout")):
                return {"error": "timeout"}
            return {"v": encode_value(self._data[key])}
        if op == "add":
            value = int(self._data.get(key, b"0")) + int(request.get("n", 0))
            await self._put(key, str(value).encode())
            return {"n": value}
        if op == "compare_set":
            expected = decode_value(request.get("expected"))
            desired = decode_value(request.get("desired"))
            current = self._data.get(key)
            if (current is None and not expected) or current == expected:
                await self._put(key, desired)
                return {"v": encode_value(desired)}
            return {"v": encode_value(expected if current is None else current)}
        if op == "check":
            return {"ok": all(str(k) in self._data for k in request.get("keys", []))}
        if op == "wait":
            keys = [str(k) for k in request.get("keys", [])]
            return {} if await self._wait_for(keys, request.get("timeout")) else {
                "error": "timeout"}
        if op == "delete":
            old = self._data.pop(key, None)
            if old is not None:
                self._size -= len(key) + len(old)
            return {"ok": old is not None}
        if op == "num_keys":
            return {"n": len(self._data)}
        if op == "done":
            self._done.add(int(request.get("rank", -1)))
            if len(self._done & set(range(self.world_size))) == self.world_size:
                self._stop_listening()
            return {}
        return {"error": f"unknown operation {str(op)[:40]!r}"}

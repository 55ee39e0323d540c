"""Test helper: capture every TCP payload on the loopback with a raw AF_PACKET socket.

No tcpdump, no libpcap: a background thread reads ``lo`` (root only; ``CaptureUnavailable``
says why otherwise), parses the 14-byte Ethernet header the loopback device carries, then
IPv4 or IPv6, then TCP, and keeps each segment's payload by direction (src, sport, dst, dport).
``Capture.streams()`` reassembles every direction by sequence number, so a value split across
two segments is still found. The loopback shows each packet twice (once leaving, once
arriving); only the leaving copy is kept. The kernel's drop count is kept too: a capture that
dropped packets cannot prove an absence, and callers should check ``drops == 0``.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33

FlowKey = tuple[str, int, str, int]  # src address, src port, dst address, dst port


class CaptureUnavailable(Exception):
    """A raw socket on the loopback cannot be opened here (the message says why)."""


@dataclass
class Direction:
    """One direction of one TCP connection, as captured."""

    isn: int | None = None  # sequence number of the SYN, when the capture saw it
    segments: list[tuple[int, bytes]] = field(default_factory=list)
    first_seen: float = 0.0

    @property
    def saw_syn(self) -> bool:
        return self.isn is not None

    def data(self) -> bytes:
        """Payload in sequence order; overlaps (retransmissions) once, gaps left out."""
        if not self.segments:
            return b""
        base = (self.isn + 1) if self.isn is not None else self.segments[0][0]
        placed = sorted(((seq - base) % (1 << 32), payload) for seq, payload in self.segments)
        out = bytearray()
        for offset, payload in placed:
            if offset >= 1 << 31:  # before the base: a retransmission of unseen data
                continue
            end = len(out)
            if offset > end:  # a gap (a dropped packet): keep going, the caller sees drops
                out += payload
            elif offset + len(payload) > end:
                out += payload[end - offset:]
        return bytes(out)


@dataclass
class Capture:
    flows: dict[FlowKey, Direction]
    packets: int
    drops: int
    _streams: dict[FlowKey, bytes] | None = field(default=None, repr=False)

    def streams(self) -> dict[FlowKey, bytes]:
        """Every direction's payload, reassembled (computed once)."""
        if self._streams is None:
            self._streams = {key: d.data() for key, d in self.flows.items()}
        return self._streams

    def touching(self, ports: set[int]) -> dict[FlowKey, Direction]:
        """Directions with either port in ``ports``."""
        return {k: d for k, d in self.flows.items() if k[1] in ports or k[3] in ports}


class LoopbackSniffer:
    """``with LoopbackSniffer() as s: ...`` then ``s.result``; or start()/stop()."""

    def __init__(self, interface: str = "lo") -> None:
        self.interface = interface
        self._flows: dict[FlowKey, Direction] = defaultdict(Direction)
        self._packets = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.result: Capture | None = None

    def start(self) -> LoopbackSniffer:
        if not hasattr(socket, "AF_PACKET"):
            raise CaptureUnavailable("this platform has no AF_PACKET sockets")
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise CaptureUnavailable(f"a raw socket needs root (CAP_NET_RAW): {exc}") from exc
        except OSError as exc:
            raise CaptureUnavailable(f"cannot open a raw socket: {exc}") from exc
        try:
            sock.bind((self.interface, 0))
        except OSError as exc:
            sock.close()
            raise CaptureUnavailable(f"cannot bind a raw socket to {self.interface}: {exc}") \
                from exc
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # room for bursts: 64 MiB
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 64 << 20)
                break
            except OSError:
                continue
        sock.settimeout(0.1)
        self._read_stats(sock)  # reading the statistics resets them: count from here
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, name="loopback-sniffer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Capture:
        """Drain what the kernel still holds, stop, and return the capture."""
        if self.result is not None:
            return self.result
        assert self._sock is not None and self._thread is not None
        time.sleep(0.3)  # the last segments of a just-finished exchange are still in flight
        self._stop.set()
        self._thread.join(10)
        drops = self._read_stats(self._sock)
        self._sock.close()
        self.result = Capture(dict(self._flows), self._packets, drops)
        return self.result

    def __enter__(self) -> LoopbackSniffer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _read_stats(sock: socket.socket) -> int:
        raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _packets, drops = struct.unpack("II", raw)
        return drops

    def _loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            try:
                frame, addr = sock.recvfrom(1 << 18)
            except TimeoutError:
                if self._stop.is_set():
                    return
                continue
            except OSError:
                return
            if addr[2] != PACKET_OUTGOING:  # the arriving copy of the same packet
                continue
            self._packets += 1
            self._parse(frame)

    def _parse(self, frame: bytes) -> None:
        if len(frame) < 14:
            return
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        ip = memoryview(frame)[14:]
        if ethertype == ETH_P_IP and len(ip) >= 20:
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack_from("!H", ip, 2)[0]
            if ip[9] != socket.IPPROTO_TCP or total < ihl:
                return
            src = socket.inet_ntop(socket.AF_INET, bytes(ip[12:16]))
            dst = socket.inet_ntop(socket.AF_INET, bytes(ip[16:20]))
            tcp = ip[ihl:total]
        elif ethertype == ETH_P_IPV6 and len(ip) >= 40:
            if ip[6] != socket.IPPROTO_TCP:  # no extension headers on the loopback
                return
            length = struct.unpack_from("!H", ip, 4)[0]
            src = socket.inet_ntop(socket.AF_INET6, bytes(ip[8:24]))
            dst = socket.inet_ntop(socket.AF_INET6, bytes(ip[24:40]))
            tcp = ip[40:40 + length]
        else:
            return
        if len(tcp) < 20:
            return
        sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
        offset = (tcp[12] >> 4) * 4
        flags = tcp[13]
        direction = self._flows[(src, sport, dst, dport)]
        if not direction.first_seen:
            direction.first_seen = time.monotonic()
        if flags & 0x02:  # SYN
            direction.isn = seq
        payload = bytes(tcp[offset:])
        if payload:
            direction.segments.append((seq, payload))


def can_capture() -> str | None:
    """None when a loopback capture can be opened here, else the reason it cannot."""
    if os.name != "posix":
        return "not a POSIX system"
    try:
        LoopbackSniffer().start().stop()
    except CaptureUnavailable as exc:
        return str(exc)
    return None

"""Peers the owner adds by host:port, where multicast does not reach (other subnets, VPNs).

The list lives in a small JSON file whose path the caller chooses::

    {"version": 1, "peers": [{"host": "10.8.0.5", "port": 7001}]}

Writes are atomic (temporary file, fsync, rename), so a crash leaves the old list or the new
one, never half of each. The file is tiny and written only when the owner edits the list; the
calls are synchronous and cheap enough for an event loop.

A manual entry is only an address. ``ManualPeers.probe`` asks it who it is through a function
the caller provides (the node's peer-API client), so discovery stays independent of node/; the
answer goes through the same defensive validation as a TXT record.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from discovery.errors import ManualPeerError
from discovery.record import PeerRecord, parse_fields

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# (host, port) -> the peer's self-description: the TXT keys id, name, port, proto, cv.
Fetch = Callable[[str, int], Awaitable[Mapping[str, object]]]


@dataclass(frozen=True, slots=True, order=True)
class ManualEntry:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> ManualEntry:
    """``"host:port"`` or ``"[v6 address]:port"`` to an entry; ManualPeerError says what is wrong."""
    text = text.strip()
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port>\d{1,5})|(?P<host>[^:\s]+):(?P<p>\d{1,5})", text
    )
    if match is None:
        raise ManualPeerError(
            f"{text!r} is not host:port; write it as 192.168.1.20:7001, alice.lan:7001 "
            "or [fd00::5]:7001"
        )
    host = match["v6"] or match["host"]
    port = int(match["port"] or match["p"])
    if not 1 <= port <= 65535:
        raise ManualPeerError(f"{text!r}: port {port} is outside 1-65535")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if match["v6"] or not _HOSTNAME_RE.fullmatch(host):
            raise ManualPeerError(f"{text!r}: {host!r} is neither an IP address nor a host name")
        host = host.lower()
    return ManualEntry(host, port)


class ManualPeers:
    """The owner's list of manual peers, persisted at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries = self._load()

    def entries(self) -> list[ManualEntry]:
        return list(self._entries)

    def add(self, address: str) -> ManualEntry:
        """Add ``host:port`` (idempotent) and save."""
        entry = parse_address(address)
        if entry not in self._entries:
            self._save([*self._entries, entry])
        return entry

    def remove(self, address: str) -> bool:
        """Remove ``host:port`` and save; False if it was not in the list."""
        entry = parse_address(address)
        if entry not in self._entries:
            return False
        self._save([e for e in self._entries if e != entry])
        return True

    async def probe(
        self, entry: ManualEntry | str, fetch: Fetch, *, timeout: float = 5.0
    ) -> PeerRecord:
        """Ask the peer at ``entry`` who it is; a PeerRecord, or ManualPeerError with the reason.

        The record's host and port are the ones the owner typed (what reached the peer), not
        the port the peer claims, which may sit behind a port forward.
        """
        if isinstance(entry, str):
            entry = parse_address(entry)
        try:
            answer = await asyncio.wait_for(fetch(entry.host, entry.port), timeout)
        except TimeoutError as exc:
            raise ManualPeerError(
                f"{entry}: no answer within {timeout:g} s; check the address, the port and that "
                "the node runs"
            ) from exc
        except Exception as exc:  # the caller's client decides what it raises
            raise ManualPeerError(
                f"{entry}: {exc or type(exc).__name__}; check the address and that the node runs"
            ) from exc
        fields = parse_fields(answer) if isinstance(answer, Mapping) else None
        if fields is None:
            raise ManualPeerError(
                f"{entry} answered, but not as a Parley node (its id, name, port, proto or cv "
                "is missing or malformed); check the port"
            )
        return PeerRecord(
            node_id=fields.node_id,
            name=fields.name,
            host=entry.host,
            port=entry.port,
            protocol=fields.protocol,
            catalog_version=fields.catalog_version,
            last_seen=time.time(),
            source="manual",
            addresses=(entry.host,),
        )

    def _load(self) -> list[ManualEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ManualPeerError(f"cannot read the manual peers file {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            peers = data["peers"]
            entries = [parse_address(f"{_bracket(p['host'])}:{int(p['port'])}") for p in peers]
        except json.JSONDecodeError as exc:
            raise ManualPeerError(
                f"{self.path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
                "fix it or delete the file to start an empty list"
            ) from exc
        except (KeyError, TypeError, ValueError, ManualPeerError) as exc:
            raise ManualPeerError(
                f'{self.path}: expected {{"version": 1, "peers": [{{"host": ..., "port": '
                f"...}}]}} ({exc}); fix it or delete the file to start an empty list"
            ) from exc
        return list(dict.fromkeys(entries))

    def _save(self, entries: list[ManualEntry]) -> None:
        """Write ``entries`` atomically, then adopt them (a failed write changes nothing)."""
        data = {
            "version": _FORMAT_VERSION,
            "peers": [{"host": e.host, "port": e.port} for e in entries],
        }
        try:
            self._write_atomically(json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise ManualPeerError(
                f"cannot save the manual peers file {self.path}: {exc.strerror or exc}; "
                "check that its folder is writable"
            ) from exc
        self._entries = entries
        logger.debug("saved %d manual peers to %s", len(entries), self.path)

    def _write_atomically(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _bracket(host: object) -> str:
    text = str(host)
    return f"[{text}]" if ":" in text else text

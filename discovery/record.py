"""What a peer announces about itself, and the defensive parsing of it.

A Parley node publishes one DNS-SD service of type ``_parley._tcp.local.`` whose TXT record holds:

======  ======================================================  ==============
key     value                                                   limit
======  ======================================================  ==============
id      node id (the fingerprint of the node's public key)      1-128 printable ASCII
name    display name chosen by the owner                        1-63 characters, no controls
port    peer API port                                           1-65535
proto   protocol version                                        decimal, now "1"
cv      catalog version, bumped when the published assets move  decimal, >= 0
======  ======================================================  ==============

TXT records come from anyone on the link. Parsing therefore never raises: a record with a
missing, malformed or oversized field is dropped, and the reason is logged at debug level
(without echoing the attacker's bytes at length). A record that parses proves nothing about
who sent it; trust comes from pairing, never from discovery.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

from discovery.errors import DiscoveryError

__all__ = ["MAX_ID_CHARS", "MAX_NAME_CHARS", "PROTOCOL_VERSION", "PeerFields", "PeerRecord",
           "SERVICE_TYPE", "build_txt", "check_node_id", "clean_name", "order_addresses",
           "parse_fields", "parse_peer", "parse_txt_rdata"]

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_parley._tcp.local."
PROTOCOL_VERSION = 1
MAX_NAME_CHARS = 63
MAX_ID_CHARS = 128
# One TXT string is at most 255 bytes, "name=" included; 63 four-byte characters would not fit.
_MAX_TXT_VALUE_BYTES = 250
_MAX_INT_DIGITS = 18  # catalog and protocol versions: anything longer is noise, not a version

_ID_RE = re.compile(rf"[!-~]{{1,{MAX_ID_CHARS}}}")  # printable ASCII, no spaces
_DIGITS_RE = re.compile(rf"[0-9]{{1,{_MAX_INT_DIGITS}}}")

Source = Literal["mdns", "manual"]


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer as discovery last saw it. Frozen: a change is a new record and an event."""

    node_id: str
    name: str
    host: str  # the address to try first (see ``addresses`` for the rest)
    port: int
    protocol: int
    catalog_version: int
    last_seen: float  # wall-clock seconds (time.time()) of the latest sign of life
    source: Source
    addresses: tuple[str, ...] = ()  # every address the peer announced, preferred first

    def same_as(self, other: PeerRecord) -> bool:
        """True when nothing but ``last_seen`` differs: no event is worth sending."""
        return _content(self) == _content(other)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["addresses"] = list(self.addresses)
        return data


def _content(record: PeerRecord) -> tuple[object, ...]:
    return (
        record.node_id,
        record.name,
        record.host,
        record.port,
        record.protocol,
        record.catalog_version,
        record.source,
        record.addresses,
    )


class PeerFields(NamedTuple):
    """The TXT fields once validated."""

    node_id: str
    name: str
    port: int
    protocol: int
    catalog_version: int


# -- building (our own record) -------------------------------------------------------------


def clean_name(name: str) -> str:
    """A display name fit for a TXT record: controls removed, at most 63 characters/250 bytes.

    The owner types this name, so it is shortened rather than refused; only a name with nothing
    printable left is an error.
    """
    printable = "".join(" " if _is_control(ch) else ch for ch in name)
    cleaned = " ".join(printable.split())[:MAX_NAME_CHARS]
    while len(cleaned.encode("utf-8")) > _MAX_TXT_VALUE_BYTES:
        cleaned = cleaned[:-1]
    if not cleaned:
        raise DiscoveryError(
            f"display name {name!r} has no printable characters; choose a name such as 'alice'"
        )
    return cleaned


def check_node_id(node_id: str) -> str:
    if not _ID_RE.fullmatch(node_id):
        raise DiscoveryError(
            f"node id {node_id[:20]!r}... is not 1-{MAX_ID_CHARS} printable ASCII characters; "
            "pass the key fingerprint as text"
        )
    return node_id


def build_txt(
    node_id: str,
    name: str,
    port: int,
    catalog_version: int,
    protocol: int = PROTOCOL_VERSION,
) -> dict[str, str]:
    """The TXT properties this node publishes (for ``ServiceInfo(properties=...)``)."""
    if not 1 <= port <= 65535:
        raise DiscoveryError(f"peer API port {port} is outside 1-65535")
    if catalog_version < 0 or protocol < 0:
        raise DiscoveryError("catalog and protocol versions must not be negative")
    return {
        "id": check_node_id(node_id),
        "name": clean_name(name),
        "port": str(port),
        "proto": str(protocol),
        "cv": str(catalog_version),
    }


# -- parsing (anyone's record) -------------------------------------------------------------


def parse_txt_rdata(rdata: bytes) -> dict[str, bytes | None] | None:
    """Decode raw TXT rdata (RFC 6763 section 6) into {lowercase key: value or None}.

    Returns None when the length bytes run past the end. Per RFC 6763 6.4 the first occurrence
    of a key wins; keys that are not printable ASCII are skipped.
    """
    props: dict[str, bytes | None] = {}
    i = 0
    while i < len(rdata):
        length = rdata[i]
        chunk = rdata[i + 1 : i + 1 + length]
        if len(chunk) != length:
            logger.debug("TXT record ignored: a string runs past the end of the record")
            return None
        i += 1 + length
        key_bytes, eq, value = chunk.partition(b"=")
        try:
            key = key_bytes.decode("ascii").lower()
        except UnicodeDecodeError:
            continue
        if not key or not key.isprintable() or key in props:
            continue
        props[key] = value if eq else None
    return props


def parse_fields(props: Mapping[Any, Any]) -> PeerFields | None:
    """Validate TXT properties (str or bytes keys and values); None, logged, when unusable."""
    try:
        text = _as_text(props)
        if text is None:
            return None
        reason, fields = _validate(text)
    except Exception:  # input from the network must never raise out of here
        logger.debug("TXT record ignored: unexpected content", exc_info=True)
        return None
    if fields is None:
        logger.debug("TXT record ignored: %s", reason)
    return fields


def parse_peer(
    props: Mapping[Any, Any],
    addresses: Iterable[str],
    source: Source = "mdns",
    last_seen: float | None = None,
) -> PeerRecord | None:
    """A PeerRecord from TXT properties and announced addresses, or None if unusable."""
    fields = parse_fields(props)
    if fields is None:
        return None
    ordered = order_addresses(addresses)
    if not ordered:
        logger.debug("peer %s ignored: it announced no usable address", fields.node_id[:12])
        return None
    return PeerRecord(
        node_id=fields.node_id,
        name=fields.name,
        host=ordered[0],
        port=fields.port,
        protocol=fields.protocol,
        catalog_version=fields.catalog_version,
        last_seen=time.time() if last_seen is None else last_seen,
        source=source,
        addresses=tuple(ordered),
    )


def order_addresses(addresses: Iterable[str]) -> list[str]:
    """Valid addresses, the likeliest to reach first: IPv4 before IPv6, link-local last.

    A multi-homed peer announces every address it has (docker bridges, VPNs); the caller should
    try them in this order rather than trust the first.
    """
    parsed = []
    for text in addresses:
        try:
            parsed.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except (ValueError, AttributeError):
            continue
    parsed.sort(key=lambda a: (a.is_link_local, a.version == 6, a.is_loopback))
    seen: dict[str, None] = {}
    for address in parsed:
        seen.setdefault(str(address), None)
    return list(seen)


def _as_text(props: Mapping[Any, Any]) -> dict[str, str | None] | None:
    text: dict[str, str | None] = {}
    for raw_key, raw_value in props.items():
        try:
            key = raw_key.decode("ascii") if isinstance(raw_key, bytes) else str(raw_key)
        except UnicodeDecodeError:
            continue  # not one of our keys
        key = key.lower()
        if key in text:
            continue
        if raw_value is None:
            text[key] = None
        elif isinstance(raw_value, bytes):
            try:
                text[key] = raw_value.decode("utf-8")
            except UnicodeDecodeError:
                logger.debug("TXT record ignored: value of %r is not UTF-8", key[:16])
                return None
        elif isinstance(raw_value, (str, int)) and not isinstance(raw_value, bool):
            text[key] = str(raw_value)
        else:
            logger.debug("TXT record ignored: value of %r has type %s", key[:16], type(raw_value))
            return None
    return text


def _validate(text: Mapping[str, str | None]) -> tuple[str, PeerFields | None]:
    missing = [k for k in ("id", "name", "port", "proto", "cv") if not text.get(k)]
    if missing:
        return f"missing or empty {', '.join(missing)}", None
    node_id, name = text["id"], text["name"]
    assert node_id is not None and name is not None
    if not _ID_RE.fullmatch(node_id):
        return f"id is not 1-{MAX_ID_CHARS} printable ASCII characters", None
    if len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > _MAX_TXT_VALUE_BYTES:
        return f"name longer than {MAX_NAME_CHARS} characters", None
    if any(_is_control(ch) for ch in name) or not name.strip():
        return "name has control characters or nothing printable", None
    numbers: dict[str, int] = {}
    for key in ("port", "proto", "cv"):
        value = text[key]
        assert value is not None
        if not _DIGITS_RE.fullmatch(value):
            return f"{key} is not a decimal number", None
        numbers[key] = int(value)
    if not 1 <= numbers["port"] <= 65535:
        return "port outside 1-65535", None
    fields = PeerFields(node_id, name, numbers["port"], numbers["proto"], numbers["cv"])
    return "", fields


def _is_control(ch: str) -> bool:
    # Cc (controls), Cf (format: bidi overrides that could disguise a name), Cs/Co/Cn (junk).
    return unicodedata.category(ch)[0] == "C"

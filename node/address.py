"""HOST:PORT, read and written one way: the owner's add-peer and pair commands, the manual
peers a node probes, and the app.

``parse_address("192.168.1.20:7001")``, ``"alice.lan:7001"`` or ``"[fd00::5]:7001"`` gives
``(host, port)`` (an IP address normalised, a host name lower-cased); anything else is a
``ProposalError`` that shows the forms it takes. ``format_address`` writes it back, with
brackets around an IPv6 address, as a URL needs it.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from node.errors import ProposalError

__all__ = ["format_address", "looks_like_address", "parse_address", "url_address"]

_FORM = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<port>\d{1,5})|(?P<host>[^:\s\[\]/]+):(?P<p>\d{1,5})")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
EXAMPLES = "192.168.1.20:7001, alice.lan:7001 or [fd00::5]:7001"


def parse_address(text: object) -> tuple[str, int]:
    """``(host, port)`` from HOST:PORT; ``ProposalError`` saying what is wrong."""
    raw = str(text).strip() if text is not None else ""
    match = _FORM.fullmatch(raw)
    if match is None:
        raise ProposalError(f"'{raw}' is not HOST:PORT; write it as {EXAMPLES}")
    host = match["v6"] or match["host"]
    port = int(match["port"] or match["p"])
    if not 1 <= port <= 65535:
        raise ProposalError(f"'{raw}': port {port} is outside 1-65535")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if match["v6"] or not _HOSTNAME.fullmatch(host):
            raise ProposalError(f"'{raw}': '{host}' is neither an IP address nor a host "
                                f"name") from None
        host = host.lower()
    return host, port


def looks_like_address(text: str) -> bool:
    """Whether ``text`` is meant as HOST:PORT rather than a peer's name (it ends in :digits)."""
    head, sep, port = text.strip().rpartition(":")
    return bool(sep and head and port.isdigit())


def format_address(host: str, port: int) -> str:
    """HOST:PORT as ``parse_address`` reads it back: ``[v6]:port`` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a URL such as a node's peer URL; ``("", 0)`` where it has none."""
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or 0
    except ValueError:
        return "", 0

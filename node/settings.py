"""The owner's saved node settings (name, listen address), applied when the node next starts.

Kept in ``<data dir>/settings.json``; flags given to ``parley node`` win over them.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from node.errors import ProposalError
from node.files import write_atomic

FILE = "settings.json"
__all__ = ["load", "save"]


def load(data_dir: Path) -> dict[str, Any]:
    try:
        saved = json.loads((data_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def save(data_dir: Path, changes: Any) -> dict[str, Any]:
    """Check and store ``{name?, host?, port?}``; ProposalError names what is wrong."""
    if not isinstance(changes, dict):
        raise ProposalError("expected {\"name\": ..., \"host\": ..., \"port\": ...}")
    saved = load(data_dir)
    if "name" in changes:
        name = str(changes["name"]).strip()
        if not name or len(name) > 63 or any(not c.isprintable() for c in name):
            raise ProposalError("a node name is 1 to 63 printable characters")
        saved["name"] = name
    if "host" in changes:
        try:
            saved["host"] = str(ipaddress.ip_address(str(changes["host"]).strip()))
        except ValueError:
            raise ProposalError(f"'{changes['host']}' is not an IP address; give the address "
                                f"of the network interface peers reach this node on") from None
    if "port" in changes:
        port = changes["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ProposalError("port: a number from 1 to 65535, or 0 for any free port")
        saved["port"] = port
    write_atomic(data_dir / FILE, json.dumps(saved).encode())
    return saved

"""Test helper: speak to a node's peer API as some identity, with full control of the request."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.identity import NodeIdentity
from node.signing import sign_request
from node.tls import client_ssl_context


def peer_request(as_dir: Path | None, target_url: str, target_id: str, method: str, path: str,
                 body: Any = None, *, headers: dict[str, str] | None = None,
                 tweak: Any = None, pin: str | None = None, with_cert: bool = True,
                 raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer). ``as_dir``: the data dir whose key signs (None: unsigned).
    ``tweak(headers)`` may forge the signed headers before sending. ``raw``: send these
    bytes as the body (signed as they are), instead of ``body`` as JSON."""
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
    identity = NodeIdentity.load_or_create(as_dir) if as_dir else None
    sent = {"Content-Type": "application/json"}
    if identity is not None:
        sent.update(sign_request(identity, method, path, data, to=target_id))
    if tweak is not None:
        tweak(sent)
    sent.update(headers or {})
    ctx: ssl.SSLContext = client_ssl_context(identity if with_cert else None,
                                             expected_cert_sha256=pin)
    req = urllib.request.Request(target_url + path, data=data or None, method=method,
                                 headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")

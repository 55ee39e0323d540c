"""Make CrypTen 0.4.1 import and compute correctly on torch 2.13.

Everything in Parley gets CrypTen from here (``from node.compat import crypten``), never by
``import crypten`` directly, so the fixes below are always in place first. Eight fixes:

1. torch 2.13 moved its TorchScript ONNX exporter to ``torch.onnx._internal.torchscript_exporter``;
   CrypTen imports ``torch.onnx._internal.registration`` at import time. We alias the moved module.
2. ``torch.onnx.export`` now defaults to the dynamo exporter, which ignores the custom symbolic
   functions CrypTen registers. We export with ``dynamo=False``.
3. The TorchScript exporter emits ``Identity`` nodes (BatchNorm, layers holding equal parameter
   tensors), which CrypTen rejects ("does not support ONNX op Identity"). We rewire the graph
   around them before conversion; an Identity is a no-op, so the model computes the same.
4. ``FixedPointEncoder.decode`` divides negative values by ``scale - 1`` with floor rounding, so a
   negative value a few units of least precision above an integer decodes one too low: -3 + 2**-16
   comes back as -3.99998. Secret-shared results carry such tiny truncation errors routinely
   (more often with three parties, where truncation goes through the wrap-count protocol), which
   is the "occasional off-by-one with 3 parties". We decode with an exact floor division.
5. A reveal to one party (``get_plain_text(dst=r)``) used ``torch.distributed.reduce``, and
   gloo's reduce first leaves each rank holding the complete sum of a slice of the elements:
   with 2 parties, half the revealed values ended up in plaintext at the party that was not to
   see them, and crossed the link in the clear. We reduce by direct sends instead: every other
   party sends its share straight to ``r``, which alone adds them up.
6. ``crypten.init()`` meets the other parties through torch's TCPStore, which listens on every
   interface and serves anyone who connects: ``list_keys`` and ``get`` hand out every party's
   gloo address, ``set`` and ``delete_key`` break or hijack the job. We register a
   ``parley://KEY@HOST:PORT`` rendezvous: a store served by rank 0's node
   (node.rendezvous.RendezvousServer) on the node's address, to a client that proves the key.
7. Loading a model, CrypTen wraps the ONNX initializers' read-only NumPy arrays in tensors
   without copying, and torch warns once per process that writing to them would be undefined.
   Nothing writes to them (``encrypt`` replaces them), so that one warning, from that one
   place, is filtered: what is left in a log or in ``parley bench``'s output means something.
8. gloo has no TLS, and listens and dials wherever the store says. With a job's links
   (``use_links``, node/links.py) every gloo device listens on the party's loopback-only
   address, and the store client tells the node's relay about our devices and swaps every
   other party's device address for a relay forwarder: all party traffic between machines is
   TLS between the nodes.
"""

from __future__ import annotations

import hmac
import importlib
import io
import secrets
import socket
import sys
import threading
import time
import warnings
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.onnx

from node import links as _links
from node import rendezvous as _protocol

try:  # torch < 2.9 kept the registry here; crypten imports it by this name.
    import torch.onnx._internal.registration
except ImportError:  # pragma: no branch - depends on the installed torch
    from torch.onnx._internal.torchscript_exporter import registration as _registration

    sys.modules["torch.onnx._internal.registration"] = _registration

import crypten
import crypten.nn.onnx_converter as _onnx_converter
import onnx
from crypten.communicator.distributed_communicator import (
    DistributedCommunicator as _DistributedCommunicator,
)
from crypten.encoder import FixedPointEncoder, nearest_integer_division

__all__ = [
    "AuthenticatedStore",
    "crypten",
    "decode_fixed_point",
    "end_rendezvous",
    "use_links",
    "export_onnx",
    "strip_identity_nodes",
]


def export_onnx(f: Any, pytorch_model: torch.nn.Module, dummy_input: Any) -> Any:
    """Export with the TorchScript exporter, the only one that honours CrypTen's symbolics."""
    torch.onnx.export(
        pytorch_model,
        dummy_input,
        f,
        do_constant_folding=False,
        export_params=True,
        input_names=["input"],
        output_names=["output"],
        operator_export_type=torch.onnx.OperatorExportTypes.ONNX,
        opset_version=_onnx_converter._OPSET_VERSION,
        dynamo=False,
    )
    return f


def strip_identity_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove ``Identity`` nodes in place; the model computes the same.

    The exporter emits an Identity when two parameters hold equal tensors (it keeps one copy).
    Such an Identity becomes a copy of the initializer under its output name: rewiring it to
    the shared name instead would give one node the same input twice, which CrypTen's graph
    runner never marks as available. An Identity on an activation is rewired to its input.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    for ident in [n for n in graph.node if n.op_type == "Identity"]:
        source, target = ident.input[0], ident.output[0]
        if source in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[source])
            copy.name = target
            graph.initializer.append(copy)
            initializers[target] = copy
        elif target in graph_outputs:  # the producer writes the graph output directly
            for node in graph.node:
                node.output[:] = [target if name == source else name for name in node.output]
                node.input[:] = [target if name == source else name for name in node.input]
        else:
            for node in graph.node:
                node.input[:] = [source if name == target else name for name in node.input]
        graph.node.remove(ident)
    return model


def _load_onnx_model(onnx_string_or_file: Any) -> onnx.ModelProto:
    if hasattr(onnx_string_or_file, "seek"):
        onnx_string_or_file.seek(0)
        model = onnx.load(onnx_string_or_file)
    else:
        model = onnx.load_model_from_string(onnx_string_or_file)
    return strip_identity_nodes(model)


def decode_fixed_point(self: FixedPointEncoder, tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Exact decoding of CrypTen's fixed-point integers (see fix 4 in the module docstring)."""
    if tensor is None:
        return None
    if tensor.is_floating_point():
        raise TypeError("input must be a LongTensor")
    scale = int(self._scale)
    if scale > 1:
        whole = tensor.div(scale, rounding_mode="floor")
        frac = tensor - whole * scale  # in [0, scale)
        return (whole.float() + frac.float() / scale).data
    return nearest_integer_division(tensor, scale).data


def _wait_all(requests: list[dist.Work | None]) -> None:
    """Wait for each send or receive in turn. torch answers None instead of a request when
    this rank is not in the group; the main group holds every rank, so that is a bug here."""
    for request in requests:
        if request is None:
            raise RuntimeError("a send or receive was not started: this rank is not in the "
                               "main process group")
        request.wait()


def _reduce_by_sends(self: Any, input: Any, dst: int, op: Any = None, batched: bool = False
                     ) -> Any:
    """Reduce to ``dst`` so that no other rank ever holds a partial result (fix 5).

    Every other rank sends its tensors straight to ``dst``, which receives from all of them
    at once and adds them up. The communication counters move exactly as CrypTen's own
    ``reduce`` moves them (one round; the elements received from P - 1 parties at ``dst``,
    those sent at the others), so a job's rounds and bytes equal a plain CrypTen script's."""
    op = dist.ReduceOp.SUM if op is None else op
    if op not in (dist.ReduceOp.SUM, dist.ReduceOp.BXOR):
        raise ValueError(f"reduce by sends supports SUM and BXOR, not {op}")
    world, rank = self.get_world_size(), self.get_rank()
    if world < 2:
        return input
    tensors = input if batched else [input]
    verbose = crypten.cfg.communicator.verbose
    if verbose:  # as CrypTen's _logging counts a reduce
        self._log_communication(sum(t.nelement() for t in tensors)
                                * (world - 1 if rank == dst else 1))
    tic = time.perf_counter()
    if rank != dst:
        _wait_all([dist.isend(t.data, dst, group=self.main_group) for t in tensors])
        result = None
    else:
        out = [t.clone().data for t in tensors]
        sources = [src for src in range(world) if src != dst]
        received = {(src, i): torch.empty_like(t) for src in sources for i, t in enumerate(out)}
        _wait_all([dist.irecv(buf, src, group=self.main_group)
                   for (src, _), buf in received.items()])
        for (_, i), share in received.items():  # in rank order: the same sum everywhere
            if op == dist.ReduceOp.SUM:
                out[i] += share
            else:
                out[i] ^= share
        result = out if batched else out[0]
    if verbose:
        self._log_communication_time(time.perf_counter() - tic)
    return result


class AuthenticatedStore(dist.Store):
    """torch's key-value Store for one party, served by rank 0's node over one connection on
    which both sides proved the job's key (fix 6; the protocol is in node/rendezvous.py).

    Connecting retries until ``timeout``: the node may not listen yet, or a flood of strangers
    may push a connection out during its handshake. No message names the key."""

    def __init__(self, host: str, port: int, key: bytes, rank: int, timeout: timedelta) -> None:
        super().__init__()
        self._address = (host, port)
        self._key = key
        self._rank = rank
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._sealer: _protocol.FrameSealer | None = None
        self._connect()

    def _connect(self) -> None:
        deadline = time.monotonic() + self._timeout.total_seconds()
        pause = 0.05
        while True:
            try:
                self._sock, self._sealer = self._handshake(deadline)
                return
            except (TimeoutError, ConnectionError, EOFError, OSError) as exc:
                if time.monotonic() + pause > deadline:
                    raise dist.DistNetworkError(
                        f"could not reach the job's rendezvous at {self._address[0]}:"
                        f"{self._address[1]}: {type(exc).__name__} (connection refused or "
                        f"timed out)") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _handshake(self, deadline: float) -> tuple[socket.socket, _protocol.FrameSealer]:
        sock = socket.create_connection(self._address, timeout=max(0.1, min(
            10.0, deadline - time.monotonic())))
        try:
            greeting = _recv_exactly(sock, len(_protocol.RENDEZVOUS_MAGIC) + _protocol.NONCE_BYTES)
            if not greeting.startswith(_protocol.RENDEZVOUS_MAGIC):
                raise dist.DistNetworkError("the rendezvous address does not answer as a "
                                            "Parley node's rendezvous")
            server_nonce = greeting[len(_protocol.RENDEZVOUS_MAGIC):]
            client_nonce = secrets.token_bytes(_protocol.NONCE_BYTES)
            client_tag, server_tag, session = _protocol.handshake_tags(
                self._key, server_nonce, client_nonce)
            sock.sendall(client_nonce + client_tag)
            if not hmac.compare_digest(_recv_exactly(sock, _protocol.TAG_BYTES), server_tag):
                raise dist.DistNetworkError("the rendezvous did not prove the job's key")
            sock.settimeout(None)
            return sock, _protocol.FrameSealer(session, sending=b"C", receiving=b"S")
        except BaseException:
            sock.close()
            raise

    def _call(self, op: str, wait_s: float | None = None, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self._sock is None or self._sealer is None:
                raise dist.DistNetworkError("the job's rendezvous has ended (connection closed)")
            try:
                self._sock.settimeout(None if wait_s is None else wait_s + 30.0)
                self._sock.sendall(self._sealer.seal({"op": op, **fields}))
                size = int.from_bytes(_recv_exactly(self._sock, 4), "big")
                if size > _protocol.MAX_FRAME_BYTES:
                    raise ValueError("an oversized rendezvous message")
                frame = _recv_exactly(self._sock, size + _protocol.TAG_BYTES)
                answer = self._sealer.open(frame[:size], frame[size:])
            except (OSError, EOFError, ValueError, TypeError) as exc:
                self._close()
                raise dist.DistNetworkError(f"lost the connection to the job's rendezvous "
                                            f"(connection closed: {type(exc).__name__})"
                                            ) from None
        if answer.get("error") == "timeout":
            raise dist.DistStoreError(f"timed out after {wait_s or 0:.0f} s at the rendezvous "
                                      f"waiting for another party")
        if "error" in answer:
            raise dist.DistStoreError(f"the rendezvous refused {op}: {answer['error']}")
        return answer

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _wait_s(self, timeout: timedelta | None = None) -> float:
        return (timeout or self._timeout).total_seconds()

    def set_timeout(self, timeout: timedelta) -> None:
        self._timeout = timeout

    def set(self, key: str, value: Any) -> None:
        data = _as_bytes(value)
        if _link_setup is not None:
            data = _link_setup.announce(self._rank, data)
        self._call("set", k=key, v=_protocol.encode_value(data))

    def get(self, key: str) -> bytes:
        wait_s = self._wait_s()
        data = _protocol.decode_value(self._call("get", wait_s, k=key, timeout=wait_s)["v"])
        if _link_setup is not None:
            data = _link_setup.substitute(self, self._rank, data)
        return data

    def add(self, key: str, value: int) -> int:
        return int(self._call("add", k=key, n=int(value))["n"])

    def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
        return _protocol.decode_value(self._call("compare_set", k=key,
                                         expected=_protocol.encode_value(_as_bytes(expected)),
                                         desired=_protocol.encode_value(_as_bytes(desired)))["v"])

    def check(self, keys: list[str]) -> bool:
        return bool(self._call("check", keys=list(keys))["ok"])

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        wait_s = self._wait_s(timeout)
        self._call("wait", wait_s, keys=list(keys), timeout=wait_s)

    def delete_key(self, key: str) -> bool:
        return bool(self._call("delete", k=key)["ok"])

    def num_keys(self) -> int:
        return int(self._call("num_keys")["n"])

    def done(self) -> None:
        """Tell the node this party needs the store no more, and hang up: once every party
        has, the node stops listening."""
        try:
            self._call("done", rank=self._rank)
        except dist.DistError:
            pass
        with self._lock:
            self._close()
            self._key = b""  # torch keeps this object for the process's life; not the key


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the connection closed")
        data += chunk
    return bytes(data)


_stores: list[AuthenticatedStore] = []


class _LinkSetup:
    """The party's half of node/links.py: its gloo devices listen on the job's party-local
    loopback address, it tells its node's relay about them, and it replaces every other
    rank's device address with a forwarder of its relay (the lower rank dials)."""

    RELAY_KEY = "parley-links/relay/"
    RANK_NAME = "parley-rank-"

    def __init__(self, links: dict[str, Any]) -> None:
        self.local = str(links["local"])
        self.relay = str(links["relay"])  # this node's relay, host:port, for the other nodes
        self.client = _links.LinkClient(str(links["control"][0]), int(links["control"][1]),
                                        str(links["token"]))
        self.high = _links.neighbour(self.local, 1)

    def announce(self, rank: int, value: bytes) -> bytes:
        """Our own gloo device's record, on its way into the store: tell the relay, and put
        our global rank where gloo put the host name."""
        record = _links.parse_rank_record(value)
        if record is None:
            return value
        _, host, port = record
        if host != self.local:
            raise dist.DistNetworkError("a gloo device of this party listens outside the "
                                        "job's party-local address")
        self.client.ask(op="device", port=port)
        return _links.with_hostname(value, f"{self.RANK_NAME}{rank}")

    def substitute(self, store: AuthenticatedStore, rank: int, value: bytes) -> bytes:
        """Another party's device record, from the store: its address becomes our relay's
        forwarder to it (we dial: we are the lower rank) or an address above ours (it dials)."""
        record = _links.parse_rank_record(value)
        if record is None:
            return value
        at, host, port = record
        if host == self.local:  # our own, read back
            return value
        name = _links.hostname_of(value)
        if not name.startswith(self.RANK_NAME) or not name[len(self.RANK_NAME):].isdigit():
            raise dist.DistNetworkError("a party's gloo device did not come through the "
                                        "job's links")
        other = int(name[len(self.RANK_NAME):])
        if other == rank:
            raise dist.DistNetworkError("another device claims this party's rank")
        if rank > other:  # the other side dials; this address only has to compare higher
            return _links.with_address(value, at, self.high, 1)
        relay = store.get(self.RELAY_KEY + str(other)).decode()
        answer = self.client.ask(op="link", rank=other, port=port, relay=relay)
        return _links.with_address(value, at, str(answer["host"]), int(answer["port"]))

    def close(self) -> None:
        self.client.close()


_link_setup: _LinkSetup | None = None
_real_gloo = None


def use_links(links: dict[str, Any]) -> None:
    """Route this party's gloo links through its node's relay (node/links.py); before
    ``crypten.init()``."""
    global _link_setup, _real_gloo
    from torch.distributed import distributed_c10d as c10d

    _link_setup = _LinkSetup(links)
    local = _link_setup.local
    if _real_gloo is None:
        _real_gloo = c10d.ProcessGroupGloo
    real = _real_gloo

    class _LocalGloo(real):  # type: ignore[misc, valid-type]
        """gloo with its device on the party-local address, wherever the group is made."""

        def __init__(self, store: Any, rank: int, size: int,
                     timeout: timedelta = timedelta(minutes=30)) -> None:
            options = real._Options()  # type: ignore[attr-defined]  # the stubs say Options
            options._devices = [real.create_device(hostname=local)]
            options._timeout = timeout
            super().__init__(store, rank, size, options)

    c10d.ProcessGroupGloo = _LocalGloo  # type: ignore[misc]  # patching torch's class on purpose


def end_links() -> None:
    """Every process group is made: no more links to ask for."""
    global _link_setup
    if _link_setup is not None:
        _link_setup.close()
        _link_setup = None


def _parley_rendezvous_handler(url: str, timeout: timedelta = timedelta(minutes=30),
                               **kwargs: Any) -> Any:
    """torch's rendezvous handler for ``parley://KEY@HOST:PORT`` (torch adds rank and
    world_size to the query)."""
    from urllib.parse import parse_qs, urlsplit

    host, port, key = _protocol.parse_rendezvous(url)
    query = parse_qs(urlsplit(url).query)
    rank, world_size = int(query["rank"][0]), int(query["world_size"][0])
    store = AuthenticatedStore(host, port, key, rank, timeout)
    _stores.append(store)
    if _link_setup is not None:  # where the other nodes reach this party's node
        store.set(_LinkSetup.RELAY_KEY + str(rank), _link_setup.relay)
    yield (store, rank, world_size)
    raise RuntimeError("a parley:// rendezvous cannot be repeated; start the job again")


def end_rendezvous() -> None:
    """Once ``crypten.init()`` has made every process group, the store is needed no more."""
    while _stores:
        _stores.pop().done()
    end_links()


# the module, not the function of the same name
_rendezvous = importlib.import_module("torch.distributed.rendezvous")
if _protocol.RENDEZVOUS_SCHEME not in _rendezvous._rendezvous_handlers:
    _rendezvous.register_rendezvous_handler(_protocol.RENDEZVOUS_SCHEME, _parley_rendezvous_handler)

warnings.filterwarnings("ignore", message="The given NumPy array is not writable",
                        category=UserWarning, module=r"crypten\.nn\.onnx_converter\Z")
_onnx_converter._export_pytorch_model = export_onnx
_DistributedCommunicator.reduce = _reduce_by_sends
_onnx_converter._load_onnx_model = _load_onnx_model
FixedPointEncoder.decode = decode_fixed_point  # type: ignore[method-assign]


def onnx_bytes_from_pytorch(pytorch_model: torch.nn.Module, dummy_input: torch.Tensor) -> bytes:
    """ONNX bytes for a PyTorch module, exported the way CrypTen needs (with its symbolics)."""
    f = _onnx_converter._from_pytorch_to_bytes(pytorch_model, dummy_input)
    data = f.getvalue() if isinstance(f, io.BytesIO) else f.read()
    return data

"""The API a job's code sees inside a party process: the seed's calls, backed by this node's store.

``crypten.load(tag, src)`` reads the asset bound to ``tag`` from the source party's own store
(handed to the party process in memory by its node, before the job runs); the other parties
learn only its shape. ``crypten.load_model(tag)`` rebuilds the owner's model
on every party from ONNX: the owner sends the architecture with its weights zeroed, every party
builds the same graph, and the owner's real weights enter only as secret shares
(``encrypt(src=owner)``). The jail (node/jail/runtime.py) exposes these two methods in the
``crypten`` facade a job receives.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import onnx
import torch

from node.compat import crypten
from node.errors import ParleyError

class JobApiError(ParleyError):
    """The job asked for something its proposal does not allow or bind."""


def architecture_only(model_bytes: bytes) -> bytes:
    """The ONNX graph with every initializer zeroed: what the other parties may learn."""
    model = onnx.load_model_from_string(model_bytes)
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(arr), init.name))
    return model.SerializeToString()


class JobCrypten:
    """Loading by tag for one party: ``assets`` maps tag -> rank -> binding; this party's own
    bindings carry their content under ``data`` (part -> bytes)."""

    def __init__(self, rank: int, world_size: int, assets: dict[str, dict[str, Any]],
                 dry_run: bool = False) -> None:
        self._dry_run = dry_run  # one party plays every rank: src arguments all mean rank 0
        self._rank = rank
        self._world = world_size
        self._assets = assets
        self.load_s = 0.0

    def _binding(self, tag: str, kind: str, src: int | None) -> tuple[int, dict[str, Any]]:
        holders = self._assets.get(tag)
        if holders is None:
            bound = ", ".join(sorted(self._assets)) or "none"
            raise JobApiError(f"the job loads '{tag}', but its proposal binds no such tag "
                              f"(bound: {bound})")
        ranks = sorted(int(r) for r in holders)
        if self._dry_run:
            src = ranks[0]
        if src is None:
            if len(ranks) > 1:
                raise JobApiError(f"'{tag}' is bound at ranks {ranks}; say which one, e.g. "
                                  f"crypten.load('{tag}', {ranks[0]})")
            src = ranks[0]
        binding = holders.get(str(int(src)))
        if binding is None:
            raise JobApiError(f"'{tag}' is bound at rank(s) {ranks}, not at rank {src}")
        if binding["kind"] != kind:
            raise JobApiError(f"'{tag}' is a {binding['kind']}, not a {kind}")
        return int(src), binding

    def _broadcast_bytes(self, data: bytes | None, src: int) -> bytes:
        comm = crypten.communicator.get()
        size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
        size = comm.broadcast(size, src)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if data is not None
               else torch.zeros(int(size.item()), dtype=torch.uint8))
        buf = comm.broadcast(buf, src)
        return bytes(buf.numpy().tobytes())

    def _broadcast_shape(self, plain: torch.Tensor | None, src: int) -> list[int]:
        """The owner tells the others the shape: all they learn about the data itself."""
        comm = crypten.communicator.get()
        dims = list(plain.shape) if plain is not None else []
        ndim = comm.broadcast(torch.tensor([len(dims)], dtype=torch.int64), src)
        buf = torch.tensor(dims, dtype=torch.int64) if plain is not None else torch.zeros(
            int(ndim.item()), dtype=torch.int64)
        return [int(d) for d in comm.broadcast(buf, src).tolist()]

    def load(self, tag: str, src: int | None = None, part: str = "features",
             standardize: bool = False) -> Any:
        """Secret-share the dataset bound to ``tag`` at rank ``src``; only ``src`` reads it.

        ``standardize=True``: the owner scales each of its columns to mean 0, variance 1 with
        its own statistics before sharing. Purely local to the owner's data, it reveals nothing
        more and keeps fixed-point arithmetic in a good range."""
        t0 = time.perf_counter()
        owner, binding = self._binding(tag, "dataset", src)
        if part not in ("features", "labels"):
            raise JobApiError("part must be 'features' or 'labels'")
        plain = None
        if self._rank == owner:
            blob = binding["data"].get(part)
            if blob is None:
                raise JobApiError(f"'{tag}' has no {part}")
            array = np.load(io.BytesIO(blob), allow_pickle=False).astype(np.float64)
            if standardize:
                std = array.std(axis=0)
                array = (array - array.mean(axis=0)) / np.where(std > 0, std, 1.0)
            plain = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        shape = self._broadcast_shape(plain, owner)
        if plain is None:
            plain = torch.zeros(shape, dtype=torch.float32)
        enc = crypten.cryptensor(plain, src=owner)
        self.load_s += time.perf_counter() - t0
        return enc

    def load_model(self, tag: str) -> Any:
        """The owner's model on every party: shared architecture, encrypted weights."""
        t0 = time.perf_counter()
        owner, binding = self._binding(tag, "model", None)
        real = None
        if self._rank == owner:
            real = binding["data"]["model"]
        arch = self._broadcast_bytes(architecture_only(real) if real is not None else None, owner)
        model = crypten.nn.from_onnx(io.BytesIO(real if real is not None else arch))
        model.encrypt(src=owner)
        self.load_s += time.perf_counter() - t0
        return model

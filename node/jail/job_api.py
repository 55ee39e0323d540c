"""The API a job's code sees inside a party process: the seed's calls, backed by this node's store.

``crypten.load(tag, src)`` reads the asset bound to ``tag`` from the source party's own store
(handed to the party process in memory by its node, before the job runs); the other parties
know only its shape, which the proposal states (the orchestrator copied it from the owner's
catalog, the owner's node checked it against the asset). ``crypten.load_model(tag)`` builds the
owner's model on every party from the architecture the proposal carries (node/architecture.py:
the ONNX graph without its weights), and the owner's real weights enter only as secret shares
(``encrypt(src=owner)``). So loading sends exactly what a plain CrypTen script that knows the
shapes and the graph out of band sends: nothing but the shares.

A party entry without a stated shape or architecture (a spec built by hand, as ``parley
bench`` does, or a proposal written without them) still works: the owner then broadcasts the
shape or the architecture first. Every party decides this from the same entry, so they agree.
The jail (node/jail/runtime.py) exposes these two methods in the ``crypten`` facade a job
receives.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch

from node import architecture
from node.compat import crypten
from node.errors import JobApiError
from node.jail import lineage
from node.parsing import load_npy
from node.privacy import DEFAULT_MIN_ROWS

__all__ = ["JobCrypten"]


class JobCrypten:
    """Loading by tag for one party: ``assets`` maps tag -> rank -> entry (what
    node.proposal.check_against_store returns: kind, and as the proposal states them a
    dataset's ``shapes`` (part -> shape) or a model's ``architecture``); this party's own
    entries carry their content under ``data`` (part -> bytes)."""

    def __init__(self, rank: int, world_size: int, assets: dict[str, dict[str, Any]],
                 dry_run: bool = False) -> None:
        self._dry_run = dry_run  # one party plays every rank: src arguments all mean rank 0
        self._rank = rank
        self._world = world_size
        self._assets = assets
        self.load_s = 0.0
        self._rng = np.random.default_rng()  # seeded from the OS now, before the lockdown

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
             standardize: bool = False, clip: bool = False) -> Any:
        """Secret-share the dataset bound to ``tag`` at rank ``src``; only ``src`` reads it.

        ``standardize=True``: the owner scales each of its columns to mean 0, variance 1 with
        its own statistics before sharing. Purely local to the owner's data, it reveals nothing
        more and keeps fixed-point arithmetic in a good range. ``clip=True``: the owner of a
        dataset with differential privacy clips each column to its declared bounds first, so
        that one row moves a statistic by no more than the noise is scaled to (a no-op
        for a dataset without)."""
        t0 = time.perf_counter()
        owner, binding = self._binding(tag, "dataset", src)
        if part not in ("features", "labels"):
            raise JobApiError("part must be 'features' or 'labels'")
        stated = binding.get("shapes")
        if stated is not None and part not in stated:
            raise JobApiError(f"'{tag}' has no {part} (its proposal states the shape of "
                              f"{', '.join(sorted(stated)) or 'no part'})")
        plain = None
        if self._rank == owner:
            blob = binding["data"].get(part)
            if blob is None:
                raise JobApiError(f"'{tag}' has no {part}")
            array = load_npy(blob).astype(np.float64)
            if stated is not None and list(array.shape) != list(stated[part]):
                raise JobApiError(f"'{tag}' here has shape {list(array.shape)}, but the job "
                                  f"was approved for {stated[part]}")
            bounds = (binding.get("dp") or {}).get("bounds")
            if clip and bounds and part == "features" and array.ndim == 2:
                low, high = np.array(bounds, dtype=np.float64).T
                array = np.clip(array, low, high)
            if standardize:
                std = array.std(axis=0)
                array = (array - array.mean(axis=0)) / np.where(std > 0, std, 1.0)
            plain = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if plain is None:
            shape = stated[part] if stated is not None else self._broadcast_shape(None, owner)
            plain = torch.zeros([int(d) for d in shape], dtype=torch.float32)
        elif stated is None:
            self._broadcast_shape(plain, owner)
        enc = crypten.cryptensor(plain, src=owner)
        # row i of the dataset at position i along axis 0 (features and labels alike); a dry
        # run keeps the rank the job names (its one party plays them all)
        nominal = int(src) if self._dry_run and src is not None else owner
        lineage.put(enc, {lineage.key_of(tag, nominal): lineage.fresh(
            int(plain.shape[0]) if plain.dim() else 1, base_all=standardize)})
        self.load_s += time.perf_counter() - t0
        return enc

    def laplace_noise(self, tag: str, src: int, stat: str, n: int, epsilon: float,
                      size: int) -> Any:
        """Laplace noise for one differentially private statistic over ``n`` rows, drawn by
        the owner of dataset ``tag`` at ``src`` and encrypted at its source: no other party
        knows it, so none sees the exact statistic. Scaled to the owner's declared bounds (the
        L1 sensitivity of ``stat`` when one row changes) over ``epsilon``; zeros where the
        dataset has no differential privacy. Every party makes the same calls."""
        owner, binding = self._binding(tag, "dataset", src)
        if stat not in ("sum", "mean", "variance", "histogram"):
            raise JobApiError(f"laplace_noise: no statistic {stat!r}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise JobApiError("laplace_noise: epsilon must be a positive number")
        plain = torch.zeros(int(size), dtype=torch.float32)
        bounds = (binding.get("dp") or {}).get("bounds")
        if self._rank == owner and bounds:
            ranges = np.array([hi - lo for lo, hi in bounds], dtype=np.float64)
            rows = max(int(n), 1)
            sensitivity = {"sum": ranges.sum(), "mean": ranges.sum() / rows,
                           "variance": (ranges ** 2).sum() / rows, "histogram": 2.0}[stat]
            plain = torch.from_numpy(self._rng.laplace(0.0, sensitivity / float(epsilon),
                                                       int(size)).astype(np.float32))
        return crypten.cryptensor(plain, src=owner)

    def privacy(self) -> dict[str, Any]:
        """What RevealGuard needs of the bound datasets: each one's minimum aggregation (as the
        proposal states it, the same at every party), and for this party's own datasets the
        rows earlier jobs revealed (node/jail/lineage.py)."""
        min_rows: dict[str, int] = {}
        history: dict[str, list[dict[str, Any]]] = {}
        sizes: dict[str, int] = {}
        for tag, holders in self._assets.items():
            for rank, entry in holders.items():
                if entry.get("kind") != "dataset":
                    continue
                key = lineage.key_of(tag, int(rank))
                min_rows[key] = int(entry.get("min_rows", DEFAULT_MIN_ROWS))
                if self._dry_run:  # whatever rank the job names it at
                    min_rows[f"{tag}@*"] = min_rows[key]
                if entry.get("history"):
                    history[key] = entry["history"]
                    sizes[key] = int(entry.get("rows", 0))
        return {"min_rows": min_rows, "history": history, "sizes": sizes}

    def load_model(self, tag: str) -> Any:
        """The owner's model on every party: the same graph, encrypted weights."""
        t0 = time.perf_counter()
        owner, binding = self._binding(tag, "model", None)
        real = binding["data"]["model"] if self._rank == owner else None
        arch = binding.get("architecture")
        if arch is None:  # not stated: the owner says it first
            arch = self._broadcast_bytes(architecture.of_model(real).encode("ascii")
                                         if real is not None else None, owner).decode("ascii")
        model = crypten.nn.from_onnx(io.BytesIO(real if real is not None
                                                else architecture.rebuild(arch)))
        model.encrypt(src=owner)
        self.load_s += time.perf_counter() - t0
        return model

"""The plaintext twin of a workload: the same job source on plain torch tensors, in this process.

``crypten.load`` hands the array itself, ``crypten.load_model`` the torch module the model was
exported from, ``crypten.cryptensor`` and ``get_plain_text`` do nothing: the function runs the
same operations in the clear, on one thread, which is what the encrypted runs are measured
against.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from node.bench.workloads import Workload

__all__ = ["PlainCrypten", "PlainTensor", "plaintext"]


class PlainTensor(torch.Tensor):
    """A torch tensor that answers ``get_plain_text`` (torch keeps the subclass through its
    operations)."""

    def get_plain_text(self, dst: int | None = None) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)


class PlainCrypten:
    """What the job sees as ``crypten``, in the clear."""

    def __init__(self, w: Workload, plain: dict[tuple[str, str, int], Any]) -> None:
        self.inputs = {(w.tag(i.name), i.rank): plain[(w.name, i.name, i.rank)]
                       for i in w.inputs}

    def load(self, tag: str, src: int | None = None, part: str = "features",
             standardize: bool = False) -> PlainTensor:
        if src is None:
            src = next(r for t, r in self.inputs if t == tag)
        return torch.from_numpy(np.array(self.inputs[(tag, src)])).as_subclass(PlainTensor)

    def load_model(self, tag: str) -> torch.nn.Module:
        return next(m for (t, _), m in self.inputs.items() if t == tag)

    @staticmethod
    def cryptensor(tensor: torch.Tensor, src: int = 0) -> PlainTensor:
        return tensor.as_subclass(PlainTensor)

    @staticmethod
    def cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
        return torch.cat(tensors, dim=dim)


def plaintext(w: Workload, plain: dict[tuple[str, str, int], Any], budget_s: float = 0.3
              ) -> tuple[float, np.ndarray]:
    """The median seconds of the computation in the clear (after a warm-up, repeated for about
    ``budget_s``), and its result."""
    namespace: dict[str, Any] = {}
    exec(compile(w.job_source(), f"<{w.name}>", "exec"), namespace)  # noqa: S102 - our own
    function = namespace["run"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each party has
    try:
        crypten = PlainCrypten(w, plain)
        with torch.no_grad():
            value = function(crypten, torch)
            times: list[float] = []
            t_end = time.perf_counter() + budget_s
            while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 200):
                t0 = time.perf_counter()
                function(crypten, torch)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times), np.asarray(value.as_subclass(torch.Tensor)
                                                if isinstance(value, torch.Tensor) else value)

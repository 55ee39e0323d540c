"""Row lineage: how many rows of each owner's dataset every encrypted value aggregates over.

A job approved to reveal "an aggregate" could otherwise reveal one person's row: a sum over a
one-row slice, the difference of two sums that differ by one row, a comparison on one row, the
labels returned as "predictions". Every encrypted value here carries, per dataset it derives
from (keyed ``tag@rank``), a ``Rows``:

- ``k``: a lower bound on the number of that dataset's rows each element aggregates;
- ``base``: the rows every element depends on (already aggregated in);
- ``axis`` and ``ids``: while elements along one axis stand for different rows (a loaded
  dataset, a per-row prediction), that axis and the row at each position (-1: a position that
  holds none of this dataset's rows, after a ``cat`` with another one).

The rules, applied at every CrypTen operation a job makes (the operations inside CrypTen's
own functions and inside autograd too, so that gradients and trained weights carry the rows
they were computed from):

- sums, means and variances over the row axis aggregate: ``k`` becomes the number of distinct
  rows summed, and so does a ``matmul`` that contracts the row axis;
- indexing, slicing, reshaping and element-wise operations keep the count, and follow the
  rows through the new shape (a slice that keeps rows 1..n-1 covers those rows only);
- ``max``, ``min``, ``argmax``, sorting-like and cumulative operations over rows do not
  aggregate: their result is still one row's value;
- combining two values derived from the same dataset keeps the smaller count, and no more than
  the number of rows in which their row sets differ: ``sum(all) - sum(all but one)`` is one row;
- anything else keeps the smallest count of its inputs (never more).

``RevealGuard`` (node/jail/runtime.py) checks each reveal against this: to anyone but a
dataset's owner, a value must aggregate at least the dataset's ``min_rows``, and its rows must
not differ from those of an earlier reveal (in this job, or at the owner's node in earlier
jobs) by fewer than ``min_rows``. It is a lower bound computed from the shape of the
computation, not from the data: a selection that depends on the values themselves (a sum of
rows whose value equals a constant) counts as many rows as it adds up; differential privacy
(node/privacy.py) is what protects against that.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from node.privacy import key_of, split_key

__all__ = ["Knowledge", "Rows", "Tracker", "fresh", "key_of", "of", "pack", "put", "split_key",
           "unpack"]

ATTR = "_parley_lineage"
_BIG = np.iinfo(np.int64).max

Key = str  # "tag@rank": node.privacy.key_of


@dataclass(frozen=True)
class Rows:
    n: int  # rows in the dataset
    k: int  # each element aggregates at least k of them
    base: np.ndarray  # bool[n]: rows every element depends on
    axis: int | None = None  # the axis whose positions are rows of the dataset
    ids: np.ndarray | None = None  # int64 per position along ``axis``; -1: none of its rows

    def covered(self) -> np.ndarray:
        """Every row this value depends on."""
        if self.ids is None:
            return self.base
        out = self.base.copy()
        rows = self.ids[self.ids >= 0]
        out[rows] = True
        return out

    def collapsed(self) -> Rows:
        """The rows kept, the axis forgotten: nothing here aggregates any more rows."""
        return Rows(self.n, self.k, self.covered())

    def moved(self, axis: int | None) -> Rows:
        return Rows(self.n, self.k, self.base, axis, self.ids if axis is not None else None)


Lineage = dict[Key, Rows]


def fresh(n: int, base_all: bool = False) -> Rows:
    """A dataset as loaded: row i at position i of axis 0, one row per element. ``base_all``:
    every element also depends on all rows (standardised with the owner's column statistics)."""
    return Rows(n, 1, np.full(n, base_all), 0, np.arange(n, dtype=np.int64))


# -- reading and writing a value's lineage ------------------------------------------------------
def of(obj: Any) -> Lineage:
    try:
        return object.__getattribute__(obj, "__dict__").get(ATTR) or {}
    except AttributeError:
        return {}


def put(obj: Any, lineage: Lineage) -> None:
    try:
        object.__getattribute__(obj, "__dict__")[ATTR] = lineage
    except AttributeError:
        pass


# -- combining -------------------------------------------------------------------------------
def _count(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def merge(a: Rows, b: Rows) -> Rows:
    """Two values of the same dataset meet in one element-wise operation (aligned already)."""
    cov_a, cov_b = a.covered(), b.covered()
    k = min(a.k, b.k)
    differ = _count(cov_a ^ cov_b)
    if differ:
        k = min(k, differ)  # what separates them is all the result may stand for
    if a.axis is not None and b.axis is not None:
        if a.axis == b.axis and a.ids is not None and b.ids is not None and \
                a.ids.shape == b.ids.shape and np.array_equal(a.ids, b.ids):
            return Rows(a.n, k, a.base | b.base, a.axis, a.ids)
        return Rows(a.n, k, cov_a | cov_b)
    if a.axis is not None:
        return Rows(a.n, k, a.base | cov_b, a.axis, a.ids)
    if b.axis is not None:
        return Rows(a.n, k, cov_a | b.base, b.axis, b.ids)
    return Rows(a.n, k, cov_a | cov_b)


def combine(inputs: Iterable[tuple[Lineage, int]], out_ndim: int) -> Lineage:
    """Element-wise over broadcast inputs (lineage, ndim): axes align from the right."""
    out: Lineage = {}
    for lineage, ndim in inputs:
        for key, rows in lineage.items():
            if rows.axis is not None:
                axis = rows.axis + out_ndim - ndim
                rows = rows.moved(axis)
                if not 0 <= axis < out_ndim:
                    rows = rows.collapsed()
            out[key] = merge(out[key], rows) if key in out else rows
    return out


def collapse_all(lineage: Lineage) -> Lineage:
    return {key: rows.collapsed() for key, rows in lineage.items()}


# -- the shape of an operation ----------------------------------------------------------------
def _dims(dim: Any, ndim: int) -> set[int]:
    if dim is None:
        return set(range(ndim))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    return {int(d) % max(ndim, 1) for d in dims}


def reduce(lineage: Lineage, ndim: int, dim: Any, keepdim: bool, aggregates: bool) -> Lineage:
    """A reduction over ``dim``: a sum or mean (``aggregates``) adds the rows it sums up; a
    max, argmax, cumulative or softmax-like one does not."""
    dims = _dims(dim, ndim)
    out: Lineage = {}
    for key, rows in lineage.items():
        if rows.axis is None:
            out[key] = rows
        elif rows.axis in dims:
            covered = rows.covered()
            k = max(rows.k, _count(covered)) if aggregates else rows.k
            out[key] = Rows(rows.n, k, covered)
        else:
            out[key] = rows.moved(rows.axis if keepdim else
                                  rows.axis - sum(1 for d in dims if d < rows.axis))
    return out


def _probe(rows: Rows, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` holding at each element the row it stands for along the axis."""
    view = [1] * len(shape)
    view[rows.axis] = shape[rows.axis]  # type: ignore[index]
    ids = torch.from_numpy(np.ascontiguousarray(rows.ids))
    return ids.view(view).expand(shape).contiguous()


def from_positions(rows: Rows, rowmap: torch.Tensor) -> Rows | None:
    """Lineage of a value whose element i stands for row ``rowmap[i]`` (-1: none), plus the
    rows of ``rows.base``; None when no element stands for any row (nothing derives from the
    dataset)."""
    flat = rowmap.reshape(-1).numpy()
    present = flat[flat >= 0]
    if present.size == 0:
        return None
    if present.min() == present.max() or rowmap.dim() == 0:
        base = rows.base.copy()
        base[present] = True
        return Rows(rows.n, rows.k, base)
    for axis in range(rowmap.dim()):
        others = [d for d in range(rowmap.dim()) if d != axis]
        high = rowmap.amax(dim=others) if others else rowmap
        low = torch.where(rowmap < 0, torch.full_like(rowmap, _BIG), rowmap)
        low = low.amin(dim=others) if others else low
        if bool(((high < 0) | (low == high)).all()):
            return Rows(rows.n, rows.k, rows.base, axis, high.numpy().astype(np.int64))
    base = rows.base.copy()
    base[present] = True
    return Rows(rows.n, rows.k, base)


def structural(lineage: Lineage, shape: tuple[int, ...], apply: Callable[[torch.Tensor], Any],
               count: int) -> list[Lineage] | None:
    """Indexing, slicing, reshaping: ``apply`` does to a tensor of row positions what the
    operation did to the value. One lineage per output (``count``: a split gives several), or
    None when ``apply`` cannot follow (the caller then keeps the rows and forgets the axis)."""
    pieces: list[Lineage] = [{} for _ in range(count)]
    for key, rows in lineage.items():
        if rows.axis is None:
            for piece in pieces:
                piece[key] = rows
            continue
        try:
            result = apply(_probe(rows, shape))
        except Exception:  # noqa: BLE001 - an argument the probe cannot take: be safe
            return None
        parts = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(parts) != count:
            return None
        for piece, part in zip(pieces, parts):
            moved = from_positions(rows, part)
            if moved is not None:
                piece[key] = moved
    return pieces


def concatenated(parts: list[tuple[Lineage, tuple[int, ...]]], dim: int, stack: bool
                 ) -> Lineage:
    """``cat`` / ``stack`` along ``dim``: each dataset's rows where its pieces lie."""
    out: Lineage = {}
    keys = {key for lineage, _ in parts for key in lineage}
    for key in keys:
        have = [lin[key] for lin, _ in parts if key in lin]
        n = have[0].n
        k = min(r.k for r in have)
        base = np.zeros(n, dtype=bool)
        for r in have:
            base |= r.base
        if any(r.axis is None for r in have):
            covered = base.copy()
            for r in have:
                covered |= r.covered()
            out[key] = Rows(n, k, covered)
            continue
        probes = [(_probe(lin[key], shape) if key in lin
                   else torch.full(shape, -1, dtype=torch.int64)) for lin, shape in parts]
        rowmap = torch.stack(probes, dim) if stack else torch.cat(probes, dim)
        moved = from_positions(Rows(n, k, base), rowmap)
        if moved is not None:
            out[key] = moved
    return out


def matmul(a: Lineage, a_ndim: int, b: Lineage, b_ndim: int, out_ndim: int) -> Lineage:
    """``a @ b``: the contracted axis aggregates (a's last, b's second to last)."""
    def side(lineage: Lineage, ndim: int, contracted: int, kept: int | None, to: int | None
             ) -> Lineage:
        out: Lineage = {}
        for key, rows in lineage.items():
            if rows.axis is None:
                out[key] = rows
            elif rows.axis == contracted:
                covered = rows.covered()
                out[key] = Rows(rows.n, max(rows.k, _count(covered)), covered)
            elif kept is not None and rows.axis == kept and to is not None:
                out[key] = rows.moved(to)
            elif rows.axis < ndim - 2:  # a batch axis: aligned from the right
                out[key] = rows.moved(rows.axis + out_ndim - ndim)
            else:
                out[key] = rows.collapsed()
        return out

    if a_ndim == 1:
        left = side(a, 1, 0, None, None)
    else:
        left = side(a, a_ndim, a_ndim - 1, a_ndim - 2, out_ndim - (2 if b_ndim > 1 else 1))
    if b_ndim == 1:
        right = side(b, 1, 0, None, None)
    else:
        right = side(b, b_ndim, b_ndim - 2, b_ndim - 1, out_ndim - 1)
    return combine([(left, out_ndim), (right, out_ndim)], out_ndim)


# -- knowledge: what each rank holds in the clear after a reveal -------------------------------
class Knowledge:
    """The rows behind the plaintext each rank holds: what was revealed to it. A value a job
    encrypts from a rank's plaintext (``crypten.cryptensor(x, src=r)``) carries them, so that a
    value revealed to its owner cannot come back encrypted and leave without its rows."""

    def __init__(self) -> None:
        self.by_rank: dict[int | None, Lineage] = {}

    def learn(self, dst: int | None, lineage: Lineage) -> None:
        self.by_rank[dst] = combine([(self.by_rank.get(dst, {}), 0),
                                     (collapse_all(lineage), 0)], 0)

    def of_rank(self, rank: int) -> Lineage:
        return combine([(self.by_rank.get(rank, {}), 0), (self.by_rank.get(None, {}), 0)], 0)


# -- row sets on the wire (the owner's node keeps them) ---------------------------------------
def pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    return bits[:n].astype(bool)


# -- following CrypTen ---------------------------------------------------------------------------
#: Names that only read a property or reach CrypTen's internals: never wrapped (hot paths).
UNTRACKED = frozenset({
    "size", "dim", "nelement", "numel", "__len__", "shape", "device", "is_cuda", "encoder",
    "share", "ptype", "requires_grad", "grad", "grad_fn", "ctx", "children", "backward",
    "detach", "detach_", "get_plain_text", "reveal", "decrypt", "shallow_copy", "to",
    "_get_autograd_forward_function", "_get_forward_function_no_ctx", "_reset_gradients",
    "_identify_required_grads", "__dict__", "__class__",
})
SUM_LIKE = frozenset({"sum", "mean", "var", "std", "norm", "prod"})
SELECT_LIKE = frozenset({"max", "min", "argmax", "argmin", "cumsum", "softmax", "log_softmax",
                         "cummax", "cummin", "sort", "topk"})
SHAPE_LIKE = frozenset({"t", "transpose", "permute", "view", "reshape", "flatten", "unsqueeze",
                        "squeeze", "expand", "repeat", "roll", "flip", "split", "chunk",
                        "unbind", "index_select", "narrow", "unfold", "__getitem__", "pad",
                        "clone", "cpu"})
MATMUL_LIKE = frozenset({"matmul", "mm", "dot", "ger", "outer"})
BATCH_LIKE = frozenset({"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
                        "avg_pool2d", "max_pool2d", "_max_pool2d_backward", "adaptive_avg_pool2d",
                        "adaptive_max_pool2d", "batchnorm", "dropout"})
FROM_PLAIN = frozenset({"new", "encrypt"})
LOSS_LIKE = frozenset({"binary_cross_entropy", "binary_cross_entropy_with_logits",
                       "cross_entropy"})
#: Operations that move elements around in ways the rules do not follow: rows kept, axis lost.
SCATTER_LIKE = frozenset({"take", "gather", "scatter", "scatter_add", "index_add", "trace"})


class Tracker:
    """Installs the rules on CrypTen's tensors for one party process."""

    def __init__(self, crypten: Any, knowledge: Knowledge) -> None:
        self.crypten = crypten
        self.knowledge = knowledge
        # Only the outermost operation is followed: the steps inside one (a sigmoid's dozens,
        # the shares' arithmetic) never reach the job, and its own rule covers them. Autograd's
        # backward and an optimiser's step call operations from outside any: followed.
        self.depth = 0

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, self.crypten.CrypTensor)

    def install(self) -> None:
        cls = self.crypten.CrypTensor
        mpc = self.crypten.mpc.MPCTensor
        original = cls.__getattribute__
        tracker = self

        def __getattribute__(obj: Any, name: str) -> Any:
            value = original(obj, name)
            if name in UNTRACKED or not callable(value) or isinstance(value, type):
                return value

            def tracked(*args: Any, **kwargs: Any) -> Any:
                if tracker.depth:
                    return value(*args, **kwargs)
                if _needs_grad(obj, args):  # autograd keeps steps inside for backward:
                    result = value(*args, **kwargs)  # those must carry their rows too
                    tracker.after(name, obj, args, kwargs, result)
                    return result
                tracker.depth += 1
                try:
                    result = value(*args, **kwargs)
                finally:
                    tracker.depth -= 1
                tracker.after(name, obj, args, kwargs, result)
                return result

            return tracked

        cls.__getattribute__ = __getattribute__  # type: ignore[method-assign]
        # dunders Python calls on the class, past __getattribute__
        for name in ("__getitem__", "__setitem__", "__eq__", "__ne__", "__lt__", "__le__",
                     "__gt__", "__ge__", "__rtruediv__", "__pow__"):
            func = getattr(mpc, name, None)
            if func is None:
                continue
            setattr(mpc, name, self._wrap_dunder(name, func))

    def _wrap_dunder(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        tracker = self

        def dunder(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if tracker.depth:
                return func(obj, *args, **kwargs)
            if _needs_grad(obj, args):
                result = func(obj, *args, **kwargs)
                tracker.after(name, obj, args, kwargs, result)
                return result
            tracker.depth += 1
            try:
                result = func(obj, *args, **kwargs)
            finally:
                tracker.depth -= 1
            tracker.after(name, obj, args, kwargs, result)
            return result

        return dunder

    def from_plain(self, src: Any) -> Lineage:
        """A value encrypted from ``src``'s plaintext: the rows revealed to it so far."""
        rank = int(src) if isinstance(src, int) and not isinstance(src, bool) else 0
        return self.knowledge.of_rank(rank)

    # -- the rules ---------------------------------------------------------------------------
    def after(self, name: str, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
              result: Any) -> None:
        if name == "copy_":
            put(obj, of(args[0]) if args and self.is_tensor(args[0]) else of(obj))
            return
        if name == "__setitem__":
            value = args[1] if len(args) > 1 else None
            incoming = of(value) if self.is_tensor(value) else {}
            if incoming:
                put(obj, combine([(of(obj), 0), (collapse_all(incoming), 0)], 0))
            return
        outputs = [r for r in (result if type(result) in (tuple, list) else [result])
                   if self.is_tensor(r)]
        if not outputs:
            return
        if name in FROM_PLAIN:
            lineage = self.from_plain(kwargs.get("src", args[1] if len(args) > 1 else 0))
            for out in outputs:
                put(out, lineage)
            return
        tensors = [a for a in args if self.is_tensor(a)]
        if name in ("cat", "stack") and args and isinstance(args[0], (list, tuple)):
            parts = [(of(t), _shape(t)) for t in args[0] if self.is_tensor(t)]
            if any(lin for lin, _ in parts):
                at = int(kwargs.get("dim", args[1] if len(args) > 1 else 0))
                ndim = len(parts[0][1]) + (1 if name == "stack" else 0)
                put(result, concatenated(parts, at % max(ndim, 1), name == "stack"))
            return
        mine = of(obj) if self.is_tensor(obj) else {}
        if not mine and not any(of(t) for t in tensors):
            for out in outputs:  # inner steps may have set one: nothing derived, nothing kept
                if out is not obj and of(out):
                    put(out, {})
            return
        shape = _shape(obj) if self.is_tensor(obj) else ()
        ndim = len(shape)
        if name in LOSS_LIKE:  # a mean over every element, the targets' rows included
            both = combine([(mine, ndim)] + [(of(t), len(_shape(t))) for t in tensors], ndim)
            lineage = reduce(both, ndim, None, False, aggregates=True)
        elif name in SCATTER_LIKE:
            lineage = combine([(collapse_all(mine), 0)] +
                              [(collapse_all(of(t)), 0) for t in tensors], 0)
        elif name in SUM_LIKE:
            dim = kwargs.get("dim", args[0] if args and not self.is_tensor(args[0]) else None)
            if name == "norm":
                dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            keep = bool(kwargs.get("keepdim", args[1] if len(args) > 1 and
                                   type(args[1]) is bool else False))
            lineage = reduce(mine, ndim, dim, keep, aggregates=True)
        elif name in SELECT_LIKE:
            dim = kwargs.get("dim", args[0] if args and not self.is_tensor(args[0]) else None)
            keep = bool(kwargs.get("keepdim", False))
            same = all(_shape(o) == shape for o in outputs)
            lineage = reduce(mine, ndim, dim, same or keep, aggregates=False)
        elif name in SHAPE_LIKE:
            pieces = structural(mine, shape, self._shape_apply(name, args, kwargs),
                                len(outputs))
            if pieces is not None and len(pieces) == len(outputs):
                for out, lin in zip(outputs, pieces):
                    put(out, _checked(lin, out))
                return
            lineage = collapse_all(mine)
        elif name in MATMUL_LIKE and tensors:
            other = tensors[0]
            lineage = matmul(mine, ndim, of(other), len(_shape(other)), len(_shape(outputs[0])))
            if name in ("ger", "outer"):
                lineage = combine([(_moved_all(mine, 0), 2), (_moved_all(of(other), 1), 2)], 2)
        elif name in MATMUL_LIKE:  # by a plaintext matrix or vector
            plain_ndim = args[0].dim() if args and type(args[0]) is torch.Tensor else 2
            lineage = matmul(mine, ndim, {}, plain_ndim, len(_shape(outputs[0])))
        elif name in BATCH_LIKE:
            out_ndim = len(_shape(outputs[0]))
            lineage = combine([(_batch_only(mine), out_ndim)]
                              + [(collapse_all(of(t)), 0) for t in tensors], out_ndim)
        else:  # element-wise, or unknown: never more rows than the inputs had
            out_ndim = len(_shape(outputs[0]))
            lineage = combine([(mine, ndim)] + [(of(t), len(_shape(t))) for t in tensors],
                              out_ndim)
        for out in outputs:
            put(out, _checked(lineage, out))

    @staticmethod
    def _shape_apply(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> Callable[[torch.Tensor], Any]:
        if name == "pad":
            # whatever the job passed; one that F.pad refuses (None too) makes structural()
            # give up following the rows, as for any argument the probe cannot take
            pad: Any = kwargs.get("pad", args[0] if args else None)
            return lambda p: torch.nn.functional.pad(p, pad, value=-1)
        if name == "__getitem__":
            return lambda p: p[args[0]]
        if name in ("clone", "cpu"):
            return lambda p: p
        return lambda p: getattr(p, name)(*args, **kwargs)


def _needs_grad(obj: Any, args: tuple[Any, ...]) -> bool:
    """Whether autograd records this operation (a model's parameters, values made from
    them): its saved steps are used again by backward."""
    for x in (obj, *args):
        try:
            if object.__getattribute__(x, "__dict__").get("requires_grad"):
                return True
        except AttributeError:
            continue
    return False


def _moved_all(lineage: Lineage, axis: int) -> Lineage:
    return {k: (r.moved(axis) if r.axis is not None else r) for k, r in lineage.items()}


def _batch_only(lineage: Lineage) -> Lineage:
    """Convolutions and pooling keep the batch axis (0) and mix the others."""
    return {k: (r if r.axis == 0 else r.collapsed()) for k, r in lineage.items()}


def _shape(x: Any) -> tuple[int, ...]:
    """A CrypTen tensor's shape, read past CrypTen's ``__getattribute__`` (which consults its
    configuration on every call: 50 us each)."""
    try:
        return tuple(object.__getattribute__(x, "_tensor").share.shape)
    except AttributeError:
        return tuple(x.size())


def _checked(lineage: Lineage, out: Any) -> Lineage:
    """An axis that does not fit the value's shape is forgotten (its rows are kept)."""
    size = _shape(out)
    fixed: Lineage = {}
    for key, rows in lineage.items():
        if rows.axis is not None and (rows.axis >= len(size) or rows.ids is None
                                      or size[rows.axis] != len(rows.ids)):
            rows = rows.collapsed()
        fixed[key] = rows
    return fixed

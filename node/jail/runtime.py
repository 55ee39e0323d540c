"""Layer 3 of the jail: what job code can touch at run time, whatever the static check let by.

The job's source is compiled after an AST rewrite that sends every attribute read through
``guard`` and refuses every attribute write. ``guard`` allows only names on per-type
allowlists: CrypTen tensors, torch tensors, CrypTen modules and optimisers, and the facades
that stand in for the ``crypten`` and ``torch`` modules. A job never holds a real module, a
class's internals, a frame, a function's globals or a share. Builtins are a short list of
pure functions; ``print`` goes to the party's log with a size cap. The compile step also
refuses, whatever the static check said, any name starting with '_' (``__builtins__``,
``__import__``) and any import statement.

``__import__`` is in the job's builtins for one caller only: torch's C++ side. The first call
of some torch functions (``torch.full``, ``torch.where``, ``torch.tensor``) imports ``torch``
or a submodule through ``PyImport_Import``, which looks ``__import__`` up in the builtins of
the frame that called it: the job's. ``jail_import`` accepts only torch modules that are
already imported and returns None (``PyImport_Import`` discards what ``__import__`` returns
and reads ``sys.modules`` itself), so even a job that reached it would get nothing.

Reveal control also lives here: ``RevealGuard`` wraps CrypTen's ``get_plain_text`` so it
decrypts only to the ranks the proposal's reveal map names, and only up to its budget of
elements, counted the same way at every party.
"""

from __future__ import annotations

import ast
import builtins
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from node.compat import crypten
from node.errors import JailViolation
from node.jail import lineage
from node.parsing import parse_python
from node.privacy import DEFAULT_MIN_ROWS

__all__ = ["BoundedPrint", "CONTAINER_ATTRS", "CRYPTENSOR_ATTRS", "DENY_SET", "Facade",
           "GUARD_NAME", "IMPORTABLE_PACKAGES", "JOB_FILENAME", "MODULE_ATTRS", "OPTIM_ATTRS",
           "RevealGuard", "TENSOR_ATTRS", "compile_job", "compile_unguarded", "crypten_facade",
           "deny_set", "guard", "hide_shares", "jail_import", "job_line", "torch_facade"]

JOB_FILENAME = "<job>"
GUARD_NAME = "__parley_guard__"
DENY_SET = "__parley_deny_set__"


# -- allowlists ------------------------------------------------------------------------------
_ARITH = {
    "add", "sub", "mul", "div", "matmul", "neg", "abs", "sign", "square", "sqrt", "pow", "exp",
    "log", "reciprocal", "sigmoid", "tanh", "relu", "softmax", "log_softmax", "sum", "mean",
    "var", "max", "min", "argmax", "argmin", "dot", "ger", "outer", "cumsum", "trace", "t",
    "transpose", "permute", "view", "reshape", "flatten", "unsqueeze", "squeeze", "size", "dim",
    "nelement", "numel", "expand", "repeat", "roll", "narrow", "split", "chunk", "gather",
    "scatter", "take", "index_select", "where", "clone", "eq", "ne", "lt", "le", "gt", "ge",
    "clamp", "hardtanh", "flip", "pad", "conv1d", "conv2d", "avg_pool2d", "max_pool2d",
    "dropout", "norm", "prod", "cos", "sin", "inv_sqrt", "polynomial", "shape", "T",
    "unbind", "backward", "grad", "requires_grad",
}
CRYPTENSOR_ATTRS = frozenset(_ARITH | {"get_plain_text", "mul_", "add_", "sub_", "div_",
                                       "encrypt", "cpu", "new", "binary_cross_entropy",
                                       "binary_cross_entropy_with_logits", "cross_entropy"})
TENSOR_ATTRS = frozenset(_ARITH | {"float", "long", "int", "double", "bool", "tolist", "item",
                                   "dtype", "any", "all", "round", "floor",
                                   "ceil", "sort", "topk", "unique", "bincount", "std",
                                   "count_nonzero", "logical_and", "logical_or", "logical_not",
                                   "detach", "type_as"} - {"backward", "grad"})
# ``weight`` / ``bias``: a layer's parameters, encrypted tensors like any other once the model
# is encrypted; revealing them goes through RevealGuard like any other value.
MODULE_ATTRS = frozenset({"forward", "train", "eval", "parameters", "zero_grad",
                          "update_parameters", "encrypt", "encrypted", "training", "weight",
                          "bias"})
OPTIM_ATTRS = frozenset({"step", "zero_grad"})
CONTAINER_ATTRS = {
    list: frozenset({"append", "extend", "index", "count", "pop", "insert", "reverse", "copy"}),
    dict: frozenset({"items", "keys", "values", "get", "update", "copy", "pop"}),
    tuple: frozenset({"index", "count"}),
    torch.Size: frozenset({"index", "count", "numel"}),
    str: frozenset({"lower", "upper", "strip", "split", "join", "startswith", "endswith",
                    "replace"}),
}


def _is_cryptensor(obj: Any) -> bool:
    return isinstance(obj, crypten.CrypTensor)


def _allowed(obj: Any) -> frozenset[str] | None:
    if isinstance(obj, Facade):
        return obj.allowed
    if _is_cryptensor(obj):
        return CRYPTENSOR_ATTRS
    if isinstance(obj, torch.Tensor):
        return TENSOR_ATTRS
    if isinstance(obj, crypten.nn.Module):
        return MODULE_ATTRS
    if isinstance(obj, crypten.optim.Optimizer):
        return OPTIM_ATTRS
    for kind, names in CONTAINER_ATTRS.items():
        if type(obj) is kind:
            return names
    return None


def guard(obj: Any, name: str) -> Any:
    """Every ``obj.name`` in a job's code comes here."""
    if not isinstance(name, str) or name.startswith("_"):
        raise JailViolation(f"attribute '{name}' is not allowed: names starting with '_' are "
                            f"outside the job API")
    allowed = _allowed(obj)
    if allowed is None or name not in allowed:
        if obj is None:
            raise JailViolation(f"'{name}' on None: a value revealed with get_plain_text(dst="
                                "rank) is None at every other rank; use it only where it was "
                                "revealed, or reveal it to every party")
        kind = type(obj).__name__
        raise JailViolation(f"'{name}' on a {kind} is not part of the job API")
    return getattr(obj, name)


def deny_set(*_: Any) -> None:
    raise JailViolation("jobs cannot set attributes; assign to a new name instead")


class Facade:
    """Stands in for a module: only ``allowed`` names, each a plain function or value."""

    def __init__(self, name: str, members: dict[str, Any]) -> None:
        self._name = name
        self._members = members
        self.allowed = frozenset(members)

    def __getattr__(self, name: str) -> Any:
        members = self.__dict__.get("_members", {})
        if name in members:
            return members[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<{self._name} (job API)>"


def _pick(module: Any, names: str) -> dict[str, Any]:
    return {n: getattr(module, n) for n in names.split()}


def torch_facade() -> Facade:
    functional = Facade("torch.nn.functional", _pick(torch.nn.functional, "one_hot"))
    members = _pick(torch, "tensor zeros ones zeros_like ones_like full arange linspace eye "
                           "cat stack where exp log sqrt abs sign sigmoid tanh relu softmax "
                           "argmax argmin max min sum mean var std matmul clamp round floor "
                           "ceil randn rand randint manual_seed float32 float64 int64 long "
                           "bool bincount histc sort unique")
    members["nn"] = Facade("torch.nn", {"functional": functional})
    return Facade("torch", members)


def crypten_facade(load: Callable[..., Any], load_model: Callable[..., Any],
                   tracker: lineage.Tracker | None = None,
                   laplace_noise: Callable[..., Any] | None = None) -> Facade:
    """``tracker``: the party's row lineage; a value the job encrypts from a rank's plaintext
    carries the rows revealed to that rank."""
    nn = Facade("crypten.nn", _pick(crypten.nn, "Linear ReLU Sigmoid Sequential Conv2d "
                                                "MaxPool2d AvgPool2d Flatten Dropout BatchNorm1d "
                                                "BatchNorm2d Softmax LogSoftmax BCELoss "
                                                "BCEWithLogitsLoss CrossEntropyLoss MSELoss "
                                                "L1Loss"))
    optim = Facade("crypten.optim", _pick(crypten.optim, "SGD"))
    members = _pick(crypten, "cryptensor cat stack where")
    if tracker is not None:
        def cryptensor(*args: Any, **kwargs: Any) -> Any:
            value = crypten.cryptensor(*args, **kwargs)
            lineage.put(value, tracker.from_plain(kwargs.get("src", args[1] if len(args) > 1
                                                                else 0)))
            return value

        members["cryptensor"] = cryptensor
    members.update(load=load, load_model=load_model, nn=nn, optim=optim)
    if laplace_noise is not None:
        members["laplace_noise"] = laplace_noise
    return Facade("crypten", members)


# -- builtins --------------------------------------------------------------------------------
class BoundedPrint:
    """``print`` for jobs: to the party's log, at most ``max_bytes``, crypten values hidden."""

    def __init__(self, max_bytes: int = 64_000,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.left = max_bytes
        self.dropped = False
        self.on_line = on_line  # the party also tells its own node (the job's output lines)

    def __call__(self, *args: Any) -> None:
        text = " ".join(str(a) for a in args) + "\n"
        if len(text) > self.left:
            if not self.dropped:
                sys.stderr.write("[job output truncated: log cap reached]\n")
                self.dropped = True
                if self.on_line is not None:
                    self.on_line("[job output truncated: 64 kB cap reached]")
            return
        self.left -= len(text)
        sys.stderr.write(text)
        if self.on_line is not None:
            for line in text.rstrip("\n").split("\n"):
                self.on_line(line)


def _safe_builtins(print_fn: Callable[..., None]) -> dict[str, Any]:
    """Pure functions only. str/repr are safe because hide_shares() covers CrypTen values.
    ``__import__`` is for torch's C++ side (see jail_import); job code cannot name it."""
    names = ("abs all any bool dict enumerate float int len list max min range reversed round "
             "sorted sum tuple zip pow divmod str repr set slice iter next map filter chr ord "
             "True False None")
    safe = {n: getattr(builtins, n) for n in names.split()}
    safe["print"] = print_fn
    safe["isinstance"] = _isinstance
    safe["__import__"] = jail_import
    return safe


#: Packages whose already-imported modules torch's C++ side may "import" from a job's frame.
IMPORTABLE_PACKAGES = frozenset({"torch"})


def jail_import(name: Any, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: Any = 0) -> None:
    """``__import__`` in a job's builtins: a no-op for torch modules already imported, the jail
    error for anything else.

    C code that imports while a job's frame is the current one (``PyImport_Import``: torch's
    first ``torch.full`` imports ``torch``, its first ``torch.tensor`` ``torch.storage``) looks
    ``__import__`` up in that frame's builtins, calls it for its side effect only and then
    reads the module from ``sys.modules`` itself. So this function never needs to load
    anything or hand anything back: it returns None, and an ``import`` statement, were one
    ever compiled, would bind None."""
    if not (type(name) is str and level == 0 and name.partition(".")[0] in IMPORTABLE_PACKAGES
            and sys.modules.get(name) is not None):
        shown = name[:80] if type(name) is str else type(name).__name__
        raise JailViolation(f"imports are not allowed in jobs (asked for '{shown}'); a job uses "
                            "only the `crypten` and `torch` it is given")


_PLAIN_TYPES = (int, float, bool, str, list, dict, tuple, set)


def _isinstance(obj: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not all(k in _PLAIN_TYPES for k in kinds):
        raise JailViolation("isinstance works with int, float, bool, str, list, dict, tuple "
                            "and set only")
    return isinstance(obj, kind)


def hide_shares() -> None:
    """No printed or str()-ed CrypTen value may show a share."""

    def hidden(self: Any, *args: Any) -> str:
        return f"<encrypted {type(self).__name__} of size {tuple(self.size())}>"

    for cls in (crypten.mpc.MPCTensor, crypten.mpc.primitives.ArithmeticSharedTensor,
                crypten.mpc.primitives.BinarySharedTensor):
        cls.__repr__ = hidden  # type: ignore[method-assign]
        cls.__str__ = hidden  # type: ignore[method-assign]
        cls.__format__ = hidden  # type: ignore[method-assign]


# -- the rewrite -----------------------------------------------------------------------------
class _GuardAttributes(ast.NodeTransformer):
    """Every attribute read through ``guard``, every attribute write refused; names starting
    with '_' and import statements refused outright (the names this rewrite adds are made
    after their surroundings are visited, so they are never checked)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id.startswith("_") and node.id != "_":
            raise JailViolation(f"line {node.lineno}: the name '{node.id}' is not allowed: "
                                "names starting with '_' are outside the job API")
        return node

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> ast.AST:
        raise JailViolation(f"line {node.lineno}: imports are not allowed in jobs; a job uses "
                            "only the `crypten` and `torch` it is given")

    visit_ImportFrom = visit_Import

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            call = ast.Call(func=ast.Name(GUARD_NAME, ast.Load()),
                            args=[node.value, ast.Constant(node.attr)], keywords=[])
            return ast.copy_location(call, node)
        # a store or delete: refused at run time, whatever the static check said
        call = ast.Call(func=ast.Name(DENY_SET, ast.Load()), args=[], keywords=[])
        return ast.copy_location(ast.Subscript(value=ast.List([], ast.Load()), slice=call,
                                               ctx=node.ctx), node)


def compile_job(source: str, entry: str, crypten_api: Facade, print_fn: Callable[..., None]
                ) -> Callable[..., Any]:
    """Compile job source under the runtime jail and return its entry function."""
    try:
        tree = parse_python(source, JOB_FILENAME)
    except SyntaxError as exc:
        raise JailViolation(f"line {exc.lineno}: the job's source does not parse: {exc.msg}"
                            ) from None
    tree = ast.fix_missing_locations(_GuardAttributes().visit(tree))
    code = compile(tree, JOB_FILENAME, "exec")
    namespace: dict[str, Any] = {
        "__builtins__": _safe_builtins(print_fn), GUARD_NAME: guard, DENY_SET: deny_set,
        "torch": torch_facade(), "__name__": "job",
    }
    exec(code, namespace)  # noqa: S102 - guarded code, restricted namespace, jailed process
    fn = namespace.get(entry)
    if not callable(fn):
        raise JailViolation(f"the job's source defines no function named '{entry}'")
    args = (crypten_api, namespace["torch"])[:fn.__code__.co_argcount]  # (crypten[, torch])
    return lambda: fn(*args)


def compile_unguarded(source: str, entry: str, crypten_api: Facade) -> Callable[..., Any]:
    """The job without the runtime layer: only for tests that prove the other layers hold."""
    namespace: dict[str, Any] = {"torch": torch, "__name__": "job"}
    exec(compile(source, JOB_FILENAME, "exec"), namespace)  # noqa: S102 - test builds only
    fn = namespace[entry]
    return lambda: fn(crypten_api)


# -- reveal control --------------------------------------------------------------------------
class RevealGuard:
    """Enforces the reveal map on every decryption, identically at every party, and each
    dataset's minimum aggregation (node/jail/lineage.py)."""

    def __init__(self, to: list[int], everyone: bool, budget: int, on_reveal: Callable[..., None],
                 alone: bool = False, min_rows: dict[str, int] | None = None,
                 history: dict[str, list[dict[str, Any]]] | None = None,
                 sizes: dict[str, int] | None = None) -> None:
        """``alone``: a one-party dry run; reveals are checked against the real map, then
        decrypted here (the one party plays every rank). ``min_rows``: per dataset key
        (``tag@rank``), the fewest of its rows a value revealed to anyone but its owner must
        aggregate. ``history``: per key of this party's own datasets, the rows earlier jobs
        revealed (``{"rows": packed, "job": id, "line": n}``), with ``sizes`` their row counts.
        ``on_reveal(dst, elements, rows)``: ``rows`` per key, packed, for this node's record."""
        self.alone = alone
        self.to = set(to)
        self.everyone = everyone
        self.budget = budget
        self.used = 0
        self.seconds = 0.0  # spent decrypting (the reveal phase of the job's timings)
        self.on_reveal = on_reveal
        self.min_rows = dict(min_rows or {})
        self.knowledge = lineage.Knowledge()
        self.earlier: dict[str, list[tuple[Any, str]]] = {}  # key -> (rows mask, where)
        for key, entries in (history or {}).items():
            n = (sizes or {}).get(key, 0)
            self.earlier[key] = [(lineage.unpack(e["rows"], n),
                                  f"job {e.get('job', '?')}, line {e.get('line', '?')}")
                                 for e in entries]

    def check_rows(self, dst: Any, rows_of: lineage.Lineage, line: int) -> dict[str, Any]:
        """Refuse a reveal that singles out rows; the masks of the rows it covers, per key."""
        covered: dict[str, Any] = {}
        for key, rows in sorted(rows_of.items()):
            tag, owner = lineage.split_key(key)
            if dst is not None and dst == owner:
                continue  # the dataset's own owner may see its own rows
            need = self.min_rows.get(key, self.min_rows.get(f"{tag}@*", DEFAULT_MIN_ROWS))
            if need <= 1:
                continue
            to = "every party" if dst is None else f"rank {dst}"
            if rows.k < need:
                raise JailViolation(
                    f"this reveal to {to} aggregates {rows.k} row"
                    f"{'' if rows.k == 1 else 's'} of '{tag}' (rank {owner}'s dataset), whose "
                    f"owner lets a value revealed to others aggregate no fewer than {need}; "
                    f"reveal a sum or mean over at least {need} rows")
            mask = rows.covered()
            for earlier, where in self.earlier.get(key, []):
                if earlier.shape != mask.shape:
                    continue
                differ = int((earlier ^ mask).sum())
                if 0 < differ < need:
                    raise JailViolation(
                        f"this reveal to {to} covers rows of '{tag}' (rank "
                        f"{owner}'s dataset) that differ from those of an earlier reveal "
                        f"({where}) in {differ} row{'' if differ == 1 else 's'}; the two "
                        f"together would single them out (the owner's minimum is {need})")
            covered[key] = mask
        return covered

    def check(self, dst: Any, elements: int, rows_of: lineage.Lineage | None = None) -> None:
        line = job_line()
        covered = self.check_rows(dst, rows_of or {}, line)
        if dst is None:
            if not self.everyone:
                raise JailViolation("get_plain_text() without dst reveals to every party; the "
                                    "reveal map does not allow that")
        elif not isinstance(dst, int) or isinstance(dst, bool) or dst not in self.to:
            allowed = sorted(self.to) or "none"
            raise JailViolation(f"revealing to rank {dst} is not in the reveal map "
                                f"(allowed: {allowed})")
        if self.used + elements > self.budget:
            raise JailViolation(f"reveal budget exceeded: {self.used + elements} elements, the "
                                f"proposal allows {self.budget}")
        self.used += elements
        for key, mask in covered.items():
            self.earlier.setdefault(key, []).append((mask, f"line {line}"))
        self.knowledge.learn(dst, rows_of or {})
        self.on_reveal(dst, elements, {key: {"rows": lineage.pack(mask), "line": line,
                                             "count": int(mask.sum())}
                                       for key, mask in covered.items()})

    def install(self) -> None:
        reveal = self

        for cls in (crypten.mpc.MPCTensor,):
            original = cls.get_plain_text

            def get_plain_text(self: Any, dst: Any = None, _orig: Any = original) -> Any:
                reveal.check(dst, int(self.nelement()), lineage.of(self))
                t0 = time.perf_counter()
                try:
                    return _orig(self, dst=None if reveal.alone else dst)
                finally:
                    reveal.seconds += time.perf_counter() - t0

            cls.get_plain_text = get_plain_text  # type: ignore[method-assign]
        for cls, name in ((crypten.mpc.MPCTensor, "reveal"), (crypten.mpc.MPCTensor, "decrypt"),
                          (crypten.nn.Module, "decrypt")):
            setattr(cls, name, _refuse(name))


def job_line() -> int:
    """The line of the job's source running now (0 outside a job)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == JOB_FILENAME:
            return frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return 0


def _refuse(name: str) -> Callable[..., Any]:
    def refused(*_: Any, **__: Any) -> Any:
        raise JailViolation(f"{name}() is not allowed in jobs; use get_plain_text(dst=rank)")

    return refused

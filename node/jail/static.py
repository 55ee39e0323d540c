"""Layer 2 of the jail: static checks on a job's source, before anything of it runs.

A job is ONE plain function, ``def run(crypten): ...``, written by someone other than the data
owner who approves it. :func:`check` parses the source (it never compiles or runs it), rejects
anything outside a small, reviewable subset of Python with :class:`JailRejected` (a line, a
stable rule id, a sentence for people), and otherwise returns :class:`FunctionInfo`: what the
reviewer must see (every reveal and who gets it, every asset loaded, every loop and its bound,
warnings).

This layer must hold on its own (the party's test builds run it without the runtime layer, with
the real ``torch`` module and the real builtins), and it is also the reviewer's first line of
explanation, so every rule names exactly what it refused.

Rules (ids are stable; tests and the GUI match on them)::

    syntax                 the source does not parse
    too-large              more than MAX_BYTES bytes (UTF-8) or MAX_LINES lines
    too-deep               statements nested deeper than MAX_BLOCK_DEPTH, or an expression
                           tree deeper than MAX_AST_DEPTH
    no-hidden-unicode      bidi controls, zero-width / invisible ("default ignorable")
                           characters, control / format / private-use / surrogate /
                           unassigned / line-separator characters anywhere (Trojan Source);
                           any non-ASCII character outside string literals and comments
                           (look-alike identifiers; Python NFKC-folds identifiers, so
                           fullwidth ``ｅｖａｌ`` would otherwise *be* ``eval``); the
                           expressions in an f-string's braces count as code here
    one-function           the module is exactly one ``def`` and nothing else
    entry-name             the function's name is not the proposal's entry
    params                 parameters other than (crypten) or (crypten, torch); *args,
                           **kwargs, keyword-only or positional-only markers
    no-defaults            parameter defaults (evaluated when the def runs)
    no-annotations         annotations, on parameters, the return or a variable
    no-decorators          decorators
    no-imports             import / from-import / ``__import__``
    syntax-allowlist       any AST node outside ALLOWED_NODES (lambda, nested def, class,
                           try, with, raise, assert, global, nonlocal, yield, await, async,
                           :=, del, match, * and ** unpacking)
    no-underscore          a name, attribute, keyword argument, function or parameter name
                           starting with '_' (all dunders); the bare throwaway name ``_``
                           (``for _ in range(3)``) is the one exception
    no-forbidden-name      a denylisted builtin by name (getattr, eval, open, type, ...)
    unknown-name           a free name that is neither assigned in the job nor on the
                           SAFE_GLOBALS allowlist (the allowlist is the real rule; the
                           denylist above only gives better messages)
    no-rebind              assigning to ``crypten``, ``torch`` or a builtin name, so that
                           ``range``, ``crypten.load`` ... mean what the reviewer reads
    no-format              ``.format`` / ``.format_map`` / ``.vformat`` (field access such as
                           ``"{0.__class__}"`` reaches attributes by string)
    no-forbidden-attribute modules outside the job API (``torch.os``, ``torch.sys`` exist!),
                           frames / code / generators / tracebacks (``gi_frame``, ``f_back``,
                           ...), string-named attribute access (``attrgetter``, ``getattr``),
                           file I/O and code loading (``torch.save``, ``from_file``, ``hub``,
                           ``jit``, ``ops``, ``utils`` ...), raw shares and the party channel
                           (``share``, ``data``, ``comm``), ``load`` / ``load_model`` on
                           anything but ``crypten``
    no-attribute-store     ``x.attr = ...`` (jobs cannot monkeypatch anything)
    reveal-form            ``.reveal()`` / ``.decrypt()`` (use ``get_plain_text(dst=...)``), or
                           ``get_plain_text`` referenced without being called right there
    load-form              ``crypten.load`` / ``crypten.load_model`` referenced without being
                           called right there (the reviewer could not see what it loads)

What is allowed: the statements Return, Assign, AugAssign, For, While, If, Break, Continue,
Pass, Expr; the expressions BoolOp, BinOp, UnaryOp, Compare, Call, IfExp, Attribute,
Subscript, Slice, Name, Constant (any literal: str, bytes, numbers, bool, None, ``...``), List,
Tuple, Dict, Set, list/set/dict comprehensions and generator expressions (not async), and
f-strings (JoinedStr, FormattedValue). All operators are allowed, the bitwise ones and shifts
included: an operator only calls its operands' own methods and reaches nothing by name, and
torch masks need ``&`` / ``|``. ``%``-formatting is allowed for the same reason (``"%s" % (x,)``
cannot reach attributes).

F-strings are allowed because, unlike ``str.format``, they reach nothing by name: every
expression inside the braces, the format spec's nested ones included, is an ordinary expression
that every rule here checks; a conversion (``!r`` ``!s`` ``!a``) is repr / str / ascii, which
jobs may call anyway; and a format spec is only text handed to the value's own ``__format__``
(the format mini-language: no field names, no attribute or index lookups; CrypTen values
format as a fixed "<encrypted ...>"). ``"{0.__class__}".format(x)`` stays refused
(``no-format``), inside an f-string or not.

The attribute denylist was checked by walking every attribute chain these rules let through,
from ``torch``, ``crypten`` and the safe builtins (tests/test_static.py keeps that walk as a
test): none reaches a module outside torch and crypten, the real builtins' eval / exec / open /
getattr / __import__, or a loader such as ``torch.load`` or ``pickle.loads``.

Static checks cannot see values: the runtime layer (``node.jail.runtime``) narrows what every
attribute read can reach, and enforces the reveal map. This module's job is to refuse the
obvious and the sneaky early, with a precise message, and to tell the reviewer what they are
approving.
"""

from __future__ import annotations

import ast
import bisect
import io
import re
import sys
import tokenize
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from node.errors import JailRejected
from node.parsing import parse_python

__all__ = ["ALLOWED_NODES", "ALLOWED_PARAMS", "DYNAMIC", "FORBIDDEN_ATTRIBUTES", "FORBIDDEN_NAMES",
           "FORMAT_ATTRIBUTES", "FunctionInfo", "LOAD_METHODS", "Load", "Loop", "MAX_AST_DEPTH",
           "MAX_BLOCK_DEPTH", "MAX_BYTES", "MAX_LINES", "PROBLEM_TYPE", "PROTECTED_NAMES",
           "REQUIRED_PARAMS", "REVEAL_ALIASES", "Reveal", "SAFE_GLOBALS", "check", "is_dynamic"]

# -- limits ----------------------------------------------------------------------------------
MAX_BYTES = 100_000
MAX_LINES = 2000
MAX_BLOCK_DEPTH = 10      # for / while / if nested inside the function body
MAX_AST_DEPTH = 100       # any chain of AST nodes, e.g. a + b + c + ... with 90 terms

# The parameters the runtime passes, in order; a job takes ("crypten",) or ("crypten", "torch").
ALLOWED_PARAMS = ("crypten", "torch")
REQUIRED_PARAMS = 1

#: Shown in the problem details of every rejection.
PROBLEM_TYPE = JailRejected.problem_type


# -- what check() returns --------------------------------------------------------------------
class _Dynamic(str):
    """A value computed at run time. Equal to the string ``'dynamic'``; test with is_dynamic()."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DYNAMIC"


#: Marks a tag, rank or part the reviewer cannot read off the source.
DYNAMIC: Any = _Dynamic("dynamic")
Dynamic = Literal["dynamic"]


def is_dynamic(value: object) -> bool:
    """True for the DYNAMIC marker (not for a literal tag that happens to read 'dynamic')."""
    return isinstance(value, _Dynamic)


@dataclass(frozen=True)
class Reveal:
    """A ``.get_plain_text(...)`` call: who learns the value.

    ``dst``: the literal rank; ``None`` when absent or ``None`` (every party learns it);
    DYNAMIC when computed."""

    line: int
    dst: int | None | Dynamic
    expr_text: str


@dataclass(frozen=True)
class Load:
    """A ``crypten.load(tag, src, part)`` (kind 'dataset') or ``crypten.load_model(tag)``
    (kind 'model'). ``tag``: the literal or DYNAMIC. ``src``: the literal rank, None when absent
    (the tag's only holder), or DYNAMIC. ``part``: 'features' (the default), 'labels', DYNAMIC;
    None for models."""

    line: int
    tag: str | Dynamic
    src: int | None | Dynamic
    part: str | None | Dynamic
    kind: Literal["dataset", "model"]


@dataclass(frozen=True)
class Loop:
    """A loop. ``bound``: the literal trip count (``range`` of int literals, or a literal
    list / tuple / str), else None. ``nesting``: how many loops enclose it (0 = outermost);
    ``parent``: the index in ``FunctionInfo.loops`` of the loop directly enclosing it, so the
    caller can multiply bounds along a chain. ``comprehension``: the ``for`` of a
    comprehension or generator expression."""

    line: int
    kind: Literal["for", "while"]
    bound: int | None
    nesting: int = 0
    parent: int | None = None
    comprehension: bool = False


@dataclass
class FunctionInfo:
    """What the reviewer approves: the function, and everything it reveals, loads and loops."""

    name: str
    params: list[str]
    lines: int
    reveals: list[Reveal] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    docstring: str | None = None


# -- names -----------------------------------------------------------------------------------
#: Free names a job may read: ``torch`` (the runtime provides it) and pure builtins.
SAFE_GLOBALS = frozenset(
    "torch print range len enumerate zip list dict tuple set frozenset int float bool str "
    "complex bytes abs min max sum round pow divmod sorted reversed any all map filter iter "
    "next chr ord repr ascii isinstance callable slice bin hex oct".split())

#: Builtins refused by name, with the reason shown to the job's author.
FORBIDDEN_NAMES: dict[str, str] = {
    **dict.fromkeys(("getattr", "setattr", "delattr", "hasattr"),
                    "attribute access by string is not allowed"),
    **dict.fromkeys(("eval", "exec", "compile"), "running code built at run time is not allowed"),
    **dict.fromkeys(("open", "input"), "jobs do no file or terminal I/O"),
    **dict.fromkeys(("type", "vars", "dir", "globals", "locals", "object", "super",
                     "classmethod", "staticmethod", "property", "memoryview", "issubclass"),
                    "introspection is not allowed"),
    "__import__": "imports are not allowed",
    "breakpoint": "debuggers are not allowed",
    "help": "help() starts a pager process",
    "format": "format() can reach attributes through format specs",
    "id": "id() leaks memory addresses and differs between parties",
    "hash": "hash() is randomised per process, so parties would disagree",
    **dict.fromkeys(("exit", "quit"), "a job cannot end its party process"),
    **dict.fromkeys(("copyright", "credits", "license"), "not part of the job API"),
}

#: Names a job may not assign to (the reviewer reads ``range(30)`` as the builtin).
PROTECTED_NAMES = frozenset(SAFE_GLOBALS | set(FORBIDDEN_NAMES) | set(ALLOWED_PARAMS))

# -- attributes ------------------------------------------------------------------------------
_MODULE_REASON = "modules outside the job API are not reachable from jobs"
_FRAME_REASON = "frames, code objects, generators' internals and tracebacks are off limits"
_INTROSPECT_REASON = "introspection and attribute access by string are not allowed"
_IO_REASON = "file I/O, code loading and compilation are not part of the job API"
_SHARE_REASON = ("raw secret shares and the parties' channel are off limits; reveal with "
                 "get_plain_text(dst=rank)")
_CONTROL_REASON = "jobs cannot reconfigure or restart CrypTen"

# Standard-library module names that are also ordinary tensor / container methods.
_STDLIB_NAMES_ALLOWED = frozenset({"chunk", "copy", "select", "trace"})
# Third-party packages reachable as attributes of torch / crypten / numpy objects, or likely
# to be: ``torch.np``-style aliases, and sympy (``sympify`` evaluates strings).
_THIRD_PARTY_MODULES = frozenset(
    "np numpy scipy sympy mpmath typing_extensions filelock fsspec jinja2 networkx yaml "
    "omegaconf onnx onnxruntime google protobuf pkg_resources setuptools packaging six dill "
    "cloudpickle triton requests urllib3 aiohttp cryptography zeroconf PySide6 shiboken6 "
    "platformdirs psutil tqdm ml_dtypes".split())
# Modules that torch and crypten import under another name (found by walking every attribute
# chain these rules let through, from ``torch``, ``crypten`` and the safe builtins).
_MODULE_ALIASES = frozenset(
    "mp pythondebugger onnx_converter numpy_helper container_abcs npt".split())

FORBIDDEN_ATTRIBUTES: dict[str, str] = {
    **{name: _MODULE_REASON for name in sys.stdlib_module_names
       if not name.startswith("_") and name not in _STDLIB_NAMES_ALLOWED},
    **dict.fromkeys(_THIRD_PARTY_MODULES | _MODULE_ALIASES, _MODULE_REASON),
    # torch's and crypten's own doors to files, processes, the network and code generation
    **dict.fromkeys(("hub", "utils", "jit", "package", "fx", "ops", "classes", "library",
                     "distributed", "onnx", "export", "compiler", "serialization", "profiler",
                     "overrides", "cpp_extension", "save", "from_file", "tofile", "dump",
                     "load_library", "compile", "exec", "open", "set_default_tensor_type",
                     "save_from_party", "load_from_party"), _IO_REASON),
    **dict.fromkeys(("mro", "getattr", "setattr", "delattr", "hasattr", "attrgetter",
                     "methodcaller", "globals", "locals", "vars", "type"), _INTROSPECT_REASON),
    **dict.fromkeys(("share", "shares", "data", "encoder", "comm", "communicator", "provider"),
                    _SHARE_REASON),
    **dict.fromkeys(("init", "uninit", "init_thread", "cfg", "config"), _CONTROL_REASON),
}
_FRAME_PREFIXES = ("f_", "gi_", "cr_", "ag_", "co_", "tb_", "func_", "im_")

FORMAT_ATTRIBUTES = frozenset({"format", "format_map", "vformat"})
REVEAL_ALIASES = frozenset({"reveal", "decrypt"})
LOAD_METHODS: dict[str, Literal["dataset", "model"]] = {"load": "dataset", "load_model": "model"}

# -- syntax ----------------------------------------------------------------------------------
_OPERATORS = (
    ast.And, ast.Or, ast.Add, ast.Sub, ast.Mult, ast.MatMult, ast.Div, ast.Mod, ast.Pow,
    ast.LShift, ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd, ast.FloorDiv, ast.Invert,
    ast.Not, ast.UAdd, ast.USub, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is,
    ast.IsNot, ast.In, ast.NotIn,
)
ALLOWED_NODES: frozenset[type] = frozenset({
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg,
    ast.Return, ast.Assign, ast.AugAssign, ast.For, ast.While, ast.If, ast.Break, ast.Continue,
    ast.Pass, ast.Expr,
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.IfExp,
    ast.Attribute, ast.Subscript, ast.Slice, ast.Name, ast.Load, ast.Store, ast.Constant,
    ast.List, ast.Tuple, ast.Dict, ast.Set,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.JoinedStr, ast.FormattedValue,
    *_OPERATORS,
})

_DISALLOWED_REASONS: dict[str, str] = {
    "Lambda": "lambda is not allowed: a job is one plain function",
    "FunctionDef": "nested function definitions are not allowed: a job is one plain function",
    "AsyncFunctionDef": "async def is not allowed",
    "ClassDef": "class definitions are not allowed",
    "Global": "global is not allowed",
    "Nonlocal": "nonlocal is not allowed",
    "Try": "try/except is not allowed (it could catch the jail's own errors and keep probing)",
    "TryStar": "try/except* is not allowed (it could catch the jail's own errors)",
    "Raise": "raise is not allowed",
    "Assert": "assert is not allowed (it is a raise with a message channel out of the job)",
    "With": "with is not allowed (context managers run hidden enter/exit code)",
    "AsyncWith": "async with is not allowed",
    "AsyncFor": "async for is not allowed",
    "Await": "await is not allowed",
    "Yield": "yield is not allowed (it turns the job into a generator)",
    "YieldFrom": "yield from is not allowed (it turns the job into a generator)",
    "NamedExpr": "the walrus operator := is not allowed",
    "Delete": "del is not allowed",
    "Del": "del is not allowed",
    "Starred": "* unpacking is not allowed",
    "Match": "match is not allowed (class patterns read attributes by name)",
    "AnnAssign": "annotations are not allowed",
}

# -- unicode ---------------------------------------------------------------------------------
# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties): rendered as nothing at all.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_BIDI = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
_CONTROL_NAMES = {0x09: "CHARACTER TABULATION", 0x0B: "LINE TABULATION", 0x0C: "FORM FEED",
                  0x1B: "ESCAPE", 0x00: "NULL", 0x7F: "DELETE"}


_PLAIN_ASCII = re.compile(r"[\t\n\x20-\x7e]*")


def _invisible(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _INVISIBLE_RANGES)


def _hidden(ch: str) -> bool:
    """A character that must not appear anywhere in a job, strings and comments included."""
    if ch in "\t\n":
        return False
    cp = ord(ch)
    if cp < 0x80:
        return cp < 0x20 or cp == 0x7F
    return unicodedata.category(ch) in _BAD_CATEGORIES or _invisible(cp)


def _char_name(ch: str) -> str:
    cp = ord(ch)
    name = unicodedata.name(ch, "") or _CONTROL_NAMES.get(cp, "")
    if not name:
        name = {"Cc": "<control>", "Cs": "<surrogate>", "Co": "<private use>",
                "Cn": "<unassigned>"}.get(unicodedata.category(ch), "<unnamed>")
    return f"U+{cp:04X} {name}"


# -- the check -------------------------------------------------------------------------------
def check(source: str, entry: str | None = None) -> FunctionInfo:
    """Check a job's source; return what the reviewer must see, or raise JailRejected.

    ``entry``: the function name the proposal names (any name when None). Line numbers count
    ``\r\n`` and a lone ``\r`` as one line break, as Python does."""
    if not isinstance(source, str):
        raise TypeError(f"job source must be str, not {type(source).__name__}")
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    _check_size(text)
    _check_hidden(text)
    spans = _literal_spans(text)
    if spans is None:       # does not tokenize: let the parser say why, then be conservative
        _parse(text)
        spans = []
    _check_ascii_code(text, spans)
    tree = _parse(text)
    _check_depth(tree)
    _check_ascii_fstring_code(text, tree)
    checker = _Checker(text, entry)
    checker.visit(tree)
    assert checker.info is not None
    return checker.info


def _check_size(text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        used, over = 0, 1
        for number, chunk in enumerate(text.split("\n"), start=1):
            used += len(chunk.encode("utf-8", "surrogatepass")) + 1
            if used > MAX_BYTES:
                over = number
                break
        raise JailRejected(over, "too-large", f"the source is {size:,} bytes; the limit is "
                                              f"{MAX_BYTES:,}")
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if lines > MAX_LINES:
        raise JailRejected(MAX_LINES + 1, "too-large",
                           f"the source is {lines:,} lines; the limit is {MAX_LINES:,}")


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _check_hidden(text: str) -> None:
    if _PLAIN_ASCII.fullmatch(text):
        return
    for offset, ch in enumerate(text):
        if _hidden(ch):
            line, col = _position(text, offset)
            kind = ("text-direction" if ord(ch) in _BIDI else
                    "invisible" if _invisible(ord(ch)) else "control or unprintable")
            raise JailRejected(line, "no-hidden-unicode",
                               f"{_char_name(ch)} at column {col} — {kind} characters are not "
                               "allowed anywhere in a job, strings and comments included: they "
                               "make code read differently from how it runs")


def _check_ascii_code(text: str, spans: list[tuple[int, int]]) -> None:
    """Outside string literals and comments (``spans``), a job is ASCII."""
    if text.isascii():
        return
    starts = [s for s, _ in spans]
    for offset, ch in enumerate(text):
        if ord(ch) < 0x80:
            continue
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0 and spans[i][0] <= offset < spans[i][1]:
            continue
        line, col = _position(text, offset)
        raise JailRejected(line, "no-hidden-unicode",
                           f"{_char_name(ch)} at column {col} — outside strings and comments "
                           "a job must be ASCII (look-alike letters can disguise names)")


def _check_ascii_fstring_code(text: str, tree: ast.AST) -> None:
    """An f-string is one STRING token, so _check_ascii_code let all of it by; the expressions
    in its braces are code, and must be ASCII outside their own string literals. (Python 3.8+
    gives every parsed expression its exact position, nested f-strings' included.)"""
    lines = text.split("\n")
    for node in ast.walk(tree):
        if not isinstance(node, ast.FormattedValue):
            continue
        expr = node.value
        segment = ast.get_source_segment(text, expr)
        if segment is None or segment.isascii():
            continue
        spans = _literal_spans(segment)
        if spans is None:           # a multi-line piece that does not tokenize alone
            spans = _literal_spans("(" + segment + ")") or []
            spans = [(a - 1, b - 1) for a, b in spans]
        line_text = lines[expr.lineno - 1].encode("utf-8", "surrogatepass")
        start_col = len(line_text[:expr.col_offset].decode("utf-8", "replace"))
        for offset, ch in enumerate(segment):
            if ord(ch) < 0x80 or any(a <= offset < b for a, b in spans):
                continue
            line, col = _position(segment, offset)
            line += expr.lineno - 1
            if line == expr.lineno:
                col += start_col
            raise JailRejected(line, "no-hidden-unicode",
                               f"{_char_name(ch)} at column {col} — inside an f-string's "
                               "braces is code, and outside strings and comments a job must be "
                               "ASCII (look-alike letters can disguise names)")


def _literal_spans(text: str) -> list[tuple[int, int]] | None:
    """[start, end) offsets of string literals and comments; None if the text does not
    tokenize."""
    line_starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            line_starts.append(i + 1)

    def offset(row: int, col: int) -> int:
        return line_starts[row - 1] + col if row - 1 < len(line_starts) else len(text)

    spans: list[tuple[int, int]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.STRING, tokenize.COMMENT):
                spans.append((offset(*tok.start), offset(*tok.end)))
    except (tokenize.TokenError, SyntaxError):
        return None
    return spans


def _parse(text: str) -> ast.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return parse_python(text, filename="<job>")
    except SyntaxError as exc:
        col = f" (column {exc.offset})" if exc.offset else ""
        raise JailRejected(exc.lineno or 1, "syntax",
                           f"the source does not parse: {exc.msg}{col}") from None
    except (RecursionError, MemoryError):
        raise JailRejected(1, "too-deep", "the source is nested too deeply to parse") from None
    except ValueError as exc:
        raise JailRejected(1, "syntax", f"the source does not parse: {exc}") from None


def _check_depth(tree: ast.AST) -> None:
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_AST_DEPTH:
            raise JailRejected(getattr(node, "lineno", 1), "too-deep",
                               f"an expression or statement nested more than {MAX_AST_DEPTH} "
                               "levels deep; split it into steps")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _snippet(text: str, node: ast.AST, limit: int = 80) -> str:
    """The node's source on one line; a compound statement's first line only."""
    seg = ast.get_source_segment(text, node) or type(node).__name__
    if isinstance(node, ast.stmt):
        seg = seg.split("\n", 1)[0]
    seg = " ".join(seg.split())
    return seg if len(seg) <= limit else seg[: limit - 1] + "…"


def _int_literal(node: ast.AST | None) -> int | None:
    """The value of an int literal (``3``, ``-1``); None for anything else (bools included)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _int_literal(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _argument(call: ast.Call, position: int, name: str) -> tuple[bool, ast.expr | None]:
    """(present, node) of a call's argument given by position or keyword."""
    for kw in call.keywords:
        if kw.arg == name:
            return True, kw.value
    if len(call.args) > position:
        return True, call.args[position]
    return False, None


class _Checker(ast.NodeVisitor):
    """One walk over the tree: every rule that looks at a node, and the review information."""

    def __init__(self, text: str, entry: str | None) -> None:
        self.text = text
        self.entry = entry
        self.info: FunctionInfo | None = None
        self.reveals: list[Reveal] = []
        self.loads: list[Load] = []
        self.loops: list[Loop] = []
        self.warnings: list[str] = []
        self.locals: set[str] = set()
        self.called: set[int] = set()      # id() of Attribute nodes that are a Call's func
        self.loop_stack: list[int] = []    # indexes into self.loops
        self.block_depth = 0

    # -- helpers --
    def reject(self, node: ast.AST, rule: str, reason: str, what: str | None = None
               ) -> NoReturn:
        shown = what if what is not None else _snippet(self.text, node)
        raise JailRejected(getattr(node, "lineno", 1), rule, f"`{shown}` — {reason}")

    def warn(self, node: ast.stmt | ast.expr, message: str) -> None:
        self.warnings.append(f"line {node.lineno}: {message}")

    def visit(self, node: ast.AST) -> Any:
        kind = type(node)
        if kind not in ALLOWED_NODES:
            name = kind.__name__
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.reject(node, "no-imports", "imports are not allowed: a job uses only "
                                                "`crypten` and `torch`")
            if isinstance(node, ast.AnnAssign):
                self.reject(node, "no-annotations", "annotations are not allowed")
            self.reject(node, "syntax-allowlist",
                        _DISALLOWED_REASONS.get(name, f"{name} is not allowed in jobs"))
        return super().visit(node)

    def name_rules(self, node: ast.AST, name: str, what: str | None = None) -> None:
        if name == "__import__":
            self.reject(node, "no-imports", "imports are not allowed", what)
        if name.startswith("_") and not (name == "_" and isinstance(node, (ast.Name, ast.arg))):
            self.reject(node, "no-underscore",
                        "names and attributes starting with '_' are not allowed", what)

    # -- module and function --
    def visit_Module(self, node: ast.Module) -> None:
        defs = []
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef):
                defs.append(stmt)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self.reject(stmt, "no-imports", "imports are not allowed: a job uses only "
                                                "`crypten` and `torch`")
            elif isinstance(stmt, (ast.AsyncFunctionDef, ast.ClassDef)):
                self.reject(stmt, "syntax-allowlist", _DISALLOWED_REASONS[type(stmt).__name__],
                            _snippet(self.text, stmt).split(":")[0])
            else:
                self.reject(stmt, "one-function", "a statement at module level: a job is "
                                                  "exactly one function definition and nothing "
                                                  "else")
        if not defs:
            raise JailRejected(1, "one-function", "the source defines no function: a job is "
                                                  "exactly one function definition")
        if len(defs) > 1:
            names = [d.name for d in defs]
            extra = next((d for d in defs if d.name != self.entry), defs[1]) \
                if self.entry in names else defs[1]
            self.reject(extra, "one-function", "a second function: a job is exactly one "
                                               "function definition", f"def {extra.name}")
        fn = defs[0]
        self.name_rules(fn, fn.name, f"def {fn.name}")
        if self.entry is not None and fn.name != self.entry:
            self.reject(fn, "entry-name", f"the proposal's entry is `{self.entry}`",
                        f"def {fn.name}")
        self.visit_function(fn)
        text = self.text
        self.info = FunctionInfo(
            name=fn.name, params=[a.arg for a in fn.args.args],
            lines=text.count("\n") + (0 if text.endswith("\n") or not text else 1),
            reveals=self.reveals, loads=self.loads, loops=self.loops, warnings=self.warnings,
            docstring=ast.get_docstring(fn, clean=True))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        # only reached for a def inside the job's function
        self.reject(node, "syntax-allowlist", _DISALLOWED_REASONS["FunctionDef"],
                    f"def {node.name}(...)")

    def visit_function(self, node: ast.FunctionDef) -> None:
        what = f"def {node.name}(...)"
        if node.decorator_list:
            self.reject(node.decorator_list[0], "no-decorators",
                        "decorators are not allowed (they run code when the def runs)",
                        "@" + _snippet(self.text, node.decorator_list[0]))
        args = node.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.reject(default, "no-defaults", "parameter defaults are not allowed (they are "
                                                "evaluated when the def runs)")
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None and a.annotation is not None:
                self.reject(a.annotation, "no-annotations", "annotations are not allowed "
                                                            "(they are evaluated)")
        if node.returns is not None:
            self.reject(node.returns, "no-annotations", "annotations are not allowed "
                                                        "(they are evaluated)")
        self.name_rules(node, node.name, what)
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None:
                self.name_rules(a, a.arg, a.arg)
        allowed = " or ".join(f"({', '.join(ALLOWED_PARAMS[:n])})"
                              for n in range(REQUIRED_PARAMS, len(ALLOWED_PARAMS) + 1))
        if args.posonlyargs or args.vararg or args.kwarg or args.kwonlyargs:
            self.reject(node, "params", f"only plain parameters are allowed: {allowed}", what)
        params = tuple(a.arg for a in args.args)
        if not (REQUIRED_PARAMS <= len(params) <= len(ALLOWED_PARAMS)
                and params == ALLOWED_PARAMS[:len(params)]):
            self.reject(node, "params", f"the runtime passes {allowed}",
                        f"def {node.name}({', '.join(params)})")
        self.locals = set(params) | {n.id for n in ast.walk(node)
                                     if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        self.block_depth = 0
        self.body(node.body)

    def body(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            self.visit(stmt)

    def block(self, node: ast.stmt, stmts: list[ast.stmt]) -> None:
        if not stmts:
            return
        self.block_depth += 1
        if self.block_depth > MAX_BLOCK_DEPTH:
            raise JailRejected(node.lineno, "too-deep",
                               f"blocks nested more than {MAX_BLOCK_DEPTH} deep; flatten the code")
        self.body(stmts)
        self.block_depth -= 1

    # -- statements --
    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self.block(node, node.body)
        if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
            self.visit(node.orelse[0])        # elif: same level
        else:
            self.block(node, node.orelse)

    def add_loop(self, node: ast.stmt | ast.expr, kind: Literal["for", "while"], bound: int | None,
                 comprehension: bool = False) -> int:
        parent = self.loop_stack[-1] if self.loop_stack else None
        self.loops.append(Loop(node.lineno, kind, bound, len(self.loop_stack), parent,
                               comprehension))
        return len(self.loops) - 1

    def iter_bound(self, it: ast.AST) -> int | None:
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range":
            values = [_int_literal(a) for a in it.args]
            if it.keywords or not 1 <= len(values) <= 3 or any(v is None for v in values) \
                    or (len(values) == 3 and values[2] == 0):
                return None
            return len(range(*values))  # type: ignore[arg-type]
        if isinstance(it, (ast.List, ast.Tuple, ast.Set)):
            return len(it.elts)
        if isinstance(it, ast.Constant) and isinstance(it.value, (str, bytes)):
            return len(it.value)
        return None

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        bound = self.iter_bound(node.iter)
        if bound is None:
            self.warn(node, f"for loop over `{_snippet(self.text, node.iter, 60)}` without a "
                            "literal bound: the reviewer cannot tell how many times it runs")
        self.visit(node.target)
        self.loop_stack.append(self.add_loop(node, "for", bound))
        self.block(node, node.body)
        self.loop_stack.pop()
        self.block(node, node.orelse)

    def visit_While(self, node: ast.While) -> None:
        self.warn(node, "while loop without a literal bound")
        self.loop_stack.append(self.add_loop(node, "while", None))
        self.visit(node.test)
        self.block(node, node.body)
        self.loop_stack.pop()
        self.block(node, node.orelse)

    # -- comprehensions --
    def comprehension(self, node: ast.expr, generators: list[ast.comprehension],
                      parts: list[ast.AST]) -> None:
        pushed = 0
        for gen in generators:
            if gen.is_async:
                self.reject(node, "syntax-allowlist", "async comprehensions are not allowed")
            self.visit(gen.iter)
            self.visit(gen.target)
            self.loop_stack.append(self.add_loop(node, "for", self.iter_bound(gen.iter), True))
            pushed += 1
            for cond in gen.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        del self.loop_stack[len(self.loop_stack) - pushed:]

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self.comprehension(node, node.generators, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self.comprehension(node, node.generators, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self.comprehension(node, node.generators, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self.comprehension(node, node.generators, [node.key, node.value])

    # -- expressions --
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        self.name_rules(node, name)
        if isinstance(node.ctx, ast.Store):
            if name in PROTECTED_NAMES:
                self.reject(node, "no-rebind", "the job API's and builtins' names cannot be "
                                               "assigned to: the reviewer must be able to trust "
                                               "that they mean what they say")
            return
        if name in FORBIDDEN_NAMES:
            self.reject(node, "no-forbidden-name", FORBIDDEN_NAMES[name])
        if name not in self.locals and name not in SAFE_GLOBALS:
            self.reject(node, "unknown-name",
                        "not assigned in the job, and not a name jobs may use (`torch` and "
                        "pure builtins such as range, len, print)")

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values):
            if key is None:
                self.reject(value, "syntax-allowlist", "** unpacking is not allowed",
                            "**" + _snippet(self.text, value))
            self.visit(key)
            self.visit(value)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is None:
            self.reject(node, "syntax-allowlist", "** unpacking is not allowed")
        else:
            self.name_rules(node, node.arg, f"{node.arg}=")
        self.visit(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.visit(node.value)
        attr = node.attr
        self.name_rules(node, attr)
        if isinstance(node.ctx, ast.Store):
            self.reject(node, "no-attribute-store", "jobs cannot set attributes; assign to a "
                                                    "new name instead")
        if attr in FORMAT_ATTRIBUTES:
            self.reject(node, "no-format", "str.format and friends can reach attributes "
                                           "through their fields; use an f-string, or str() "
                                           "and + or %")
        if attr in REVEAL_ALIASES:
            self.reject(node, "reveal-form", "use get_plain_text(dst=rank), so the reviewer "
                                             "sees who learns the value")
        if attr == "get_plain_text" and id(node) not in self.called:
            self.reject(node, "reveal-form", "get_plain_text must be called right here, so "
                                             "the reviewer sees who learns the value")
        if attr in LOAD_METHODS:
            if not (isinstance(node.value, ast.Name) and node.value.id == "crypten"):
                self.reject(node, "no-forbidden-attribute",
                            f"only `crypten.{attr}(...)` may load; other loaders read files "
                            "the proposal does not bind")
            if id(node) not in self.called:
                self.reject(node, "load-form", f"crypten.{attr} must be called right here, "
                                               "so the reviewer sees what it loads")
        if attr in FORBIDDEN_ATTRIBUTES:
            self.reject(node, "no-forbidden-attribute", FORBIDDEN_ATTRIBUTES[attr])
        if attr.startswith(_FRAME_PREFIXES):
            self.reject(node, "no-forbidden-attribute", _FRAME_REASON)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            self.called.add(id(func))
        self.visit(func)
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            self.visit(kw)
        if isinstance(func, ast.Attribute):
            if func.attr == "get_plain_text":
                self.record_reveal(node)
            elif func.attr in LOAD_METHODS:
                self.record_load(node, func.attr)

    # -- review information --
    def record_reveal(self, call: ast.Call) -> None:
        _, dst_node = _argument(call, 0, "dst")  # a node exactly when the argument is present
        dst: Any
        if dst_node is None or (isinstance(dst_node, ast.Constant) and dst_node.value is None):
            dst = None
            self.warn(call, "reveals to every party (get_plain_text() without dst)")
        else:
            dst = _int_literal(dst_node)
            if dst is None:
                dst = DYNAMIC
                self.warn(call, f"reveals to a computed rank (dst={_snippet(self.text, dst_node)})"
                                ": the reviewer cannot tell who learns the value")
        if self.loop_stack:
            self.warn(call, "get_plain_text() inside a loop: it reveals on every iteration")
        self.reveals.append(Reveal(call.lineno, dst, " ".join(
            (ast.get_source_segment(self.text, call) or "").split())))

    def record_load(self, call: ast.Call, method: str) -> None:
        kind = LOAD_METHODS[method]
        present, tag_node = _argument(call, 0, "tag")
        tag: Any = DYNAMIC
        if isinstance(tag_node, ast.Constant) and isinstance(tag_node.value, str):
            tag = tag_node.value
        else:
            self.warn(call, "the tag is computed, not a literal: the reviewer cannot tell which "
                            "asset is read" if present else "the load names no tag")
        src: Any = None
        part: Any = None
        if kind == "dataset":
            present, src_node = _argument(call, 1, "src")
            if present and not (isinstance(src_node, ast.Constant) and src_node.value is None):
                src = _int_literal(src_node)
                if src is None:
                    src = DYNAMIC
                    self.warn(call, "the source rank is computed, not a literal: the reviewer "
                                    "cannot tell whose data is read")
            present, part_node = _argument(call, 2, "part")
            part = "features"
            if present:
                if isinstance(part_node, ast.Constant) and isinstance(part_node.value, str):
                    part = part_node.value
                else:
                    part = DYNAMIC
                    self.warn(call, "the part is computed, not a literal: the reviewer cannot "
                                    "tell whether features or labels are read")
        self.loads.append(Load(call.lineno, tag, src, part, kind))

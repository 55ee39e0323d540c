"""Python's own parsers, safe to call from several threads at once.

CPython 3.11 (3.11.7 here) keeps one recursion counter for turning a parse tree into ``ast``
objects, shared by every thread (CPython gh-106905). When a thread gives up the interpreter in
the middle of that (a garbage collection running a callback is enough), another thread's parse
moves the counter and one of them fails with ``SystemError: AST constructor recursion depth
mismatch``. ``numpy.load`` parses each .npy header with ``ast.literal_eval``, so two dataset
imports at once in the node's worker threads could fail (CI saw it). Every ``ast`` parse and
every .npy read in Parley goes through this module, under one lock.
"""

from __future__ import annotations

import ast
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_npy", "parse_python"]

_AST_LOCK = threading.Lock()


def parse_python(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, one thread at a time."""
    with _AST_LOCK:
        return ast.parse(source, filename=filename)


def load_npy(source: Path | str | bytes | bytearray | memoryview, **kwargs: Any
             ) -> np.ndarray:
    """``numpy.load`` of one .npy array (a path or the file's bytes), never unpickling, one
    header parse at a time. ``kwargs`` go to ``numpy.load`` (``mmap_mode``)."""
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with _AST_LOCK:
        return np.load(file, allow_pickle=False, **kwargs)

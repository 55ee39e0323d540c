"""Values that cross a process or network boundary, as plain JSON: never pickle.

A party's result travels party process -> its node -> the orchestrator. Tensors become
``{"$tensor": {"dtype", "shape", "data"}}`` with the data as a flat list; anything that is not a
number, string, bool, None, list, dict with string keys or a plain tensor is refused, so a
result can never smuggle an object that executes code when read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from node.errors import JsonTooDeep, WireError

__all__ = ["MAX_JSON_DEPTH", "canonical", "decode", "digest", "encode", "json_depth",
           "loads_bounded"]

_DTYPES = {"float32", "float64", "int64", "int32", "bool", "float16", "uint8", "int8", "int16"}


MAX_JSON_DEPTH = 64  # far above any body Parley sends (a proposal nests about 6 deep)


def encode(value: Any) -> Any:
    """Turn a job's return value into JSON-able data; ``WireError`` for anything else."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise WireError("a result dict must have string keys")
        return {k: encode(v) for k, v in value.items()}
    type_name = type(value).__module__ + "." + type(value).__name__
    if type_name == "torch.Tensor":
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise WireError(f"tensors of dtype {dtype} cannot be returned")
        flat = value.detach().cpu().reshape(-1).tolist()
        return {"$tensor": {"dtype": dtype, "shape": list(value.shape), "data": flat}}
    if type_name.startswith("crypten."):
        raise WireError(
            "the job returned an encrypted value; reveal it first with "
            "get_plain_text(dst=rank) to the ranks the job names"
        )
    raise WireError(f"a job can return numbers, strings, lists, dicts and tensors, not {type_name}")


def decode(data: Any) -> Any:
    """Inverse of ``encode``; tensors come back as numpy arrays (no torch needed to read)."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        if set(data) == {"$tensor"}:
            import numpy as np

            t = data["$tensor"]
            if t.get("dtype") not in _DTYPES:
                raise WireError("unknown tensor dtype in a result")
            return np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])
        if set(data) == {"$float"}:
            return float(data["$float"])
        return {k: decode(v) for k, v in data.items()}
    return data


def loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for text from outside: ``JsonTooDeep`` past ``max_depth`` nested arrays
    and objects, never a RecursionError (100,000 brackets used to end in a 500).

    Ordinary bodies pay one ``str.count``: only a text with more opening brackets than
    ``max_depth`` is measured, on its characters at C speed (about as long as the decode).
    ``ValueError`` or ``UnicodeDecodeError`` for text that is not JSON, as ``json.loads``.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonTooDeep(_too_deep(max_depth)) from None
    if text.count("[") + text.count("{") > max_depth and json_depth(text) > max_depth:
        raise JsonTooDeep(_too_deep(max_depth))
    return value


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply a *valid* JSON text nests arrays and objects, without decoding it."""
    import numpy as np

    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    chars = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((chars == ord("[")) | (chars == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def _too_deep(max_depth: int) -> str:
    return (f"the JSON is nested more than {max_depth} levels deep; a node reads at most "
            f"{max_depth} (send a flatter document)")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: the thing a hash or (later) a signature covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()

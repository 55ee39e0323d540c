"""Checking a model at import: an ONNX graph CrypTen can convert and run, with its architecture.

``check_model`` reads the graph, refuses an op CrypTen does not support (naming it), converts it
with CrypTen once (through node/compat.py) so that a model that would fail inside a job is
refused while its owner can still do something about it, and returns the schema the catalog
keeps: inputs, outputs, parameters, opset and the architecture (node/architecture.py).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from typing import Any

from node.errors import ModelError, first_line

__all__ = ["check_model"]

def check_model(data: bytes, label: str) -> dict[str, Any]:
    """The model's schema, after making sure CrypTen can run it; ModelError otherwise."""
    import onnx
    from google.protobuf.message import DecodeError

    from node import architecture

    not_onnx = (
        f"{label} is not an ONNX model; export it with torch.onnx.export, or import the PyTorch "
        "module itself"
    )
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError):
        raise ModelError(not_onnx) from None
    graph = model.graph
    if model.ir_version <= 0 or not graph.node:
        raise ModelError(not_onnx)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise ModelError(
            f"{label} keeps its weights in separate files; save it as one file "
            "(onnx.save_model(model, path, save_as_external_data=False))"
        )
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"{label} has {len(inputs)} input(s) and {len(graph.output)} output(s); Parley runs "
            "models with exactly one input and one output: combine them in the model before export"
        )
    ops = sorted({node.op_type for node in graph.node})
    _check_crypten(data, ops, label)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {
        "inputs": [_value_schema(v) for v in inputs],
        "outputs": [_value_schema(v) for v in graph.output],
        "ops": ops,
        "parameters": int(sum(math.prod(t.dims) for t in graph.initializer)),
        "opset": int(opset),
        # what a job's proposal carries so that every party builds the same graph
        "architecture": architecture.of_model(data, label),
    }


def _value_schema(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape: list[int | None] | None = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape}


def _check_crypten(data: bytes, ops: list[str], label: str) -> None:
    from node.compat import crypten

    converter = crypten.nn.onnx_converter  # as patched by node.compat

    unsupported = []
    for op in ops:
        if op == "Identity":  # node.compat rewires these away before conversion
            continue
        try:
            converter._get_operator_class(op, {})
        except ValueError:
            unsupported.append(op)
    if unsupported:
        raise ModelError(_unsupported_message(label, unsupported))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            crypten.nn.from_onnx(io.BytesIO(data))
    except Exception as exc:  # CrypTen signals with ValueError, AssertionError, KeyError, ...
        found = re.findall(r"does not support ONNX op (\S+?)\.?$", str(exc))
        if found:
            raise ModelError(_unsupported_message(label, found)) from exc
        raise ModelError(
            f"CrypTen cannot convert {label} ({type(exc).__name__}: {first_line(exc)}); "
            "re-export it with torch.onnx.export from a model built of supported layers "
            "(Linear, Conv, ReLU, pooling, BatchNorm, ...)"
        ) from exc


def _unsupported_message(label: str, ops: list[str]) -> str:
    plural = "s" if len(ops) > 1 else ""
    return (
        f"CrypTen cannot run {label}: it uses the ONNX op{plural} {', '.join(ops)}, which CrypTen "
        "does not support; replace those layers with supported ones (e.g. ReLU or Sigmoid for "
        "other activations) or export the model with supported ops only"
    )

"""A model's architecture: its ONNX graph without its weights, as a proposal carries it.

Every party of a job that loads a model builds the same CrypTen graph; only the owner fills it
with the real weights, which enter as secret shares (``model.encrypt(src=owner)``). What the
other parties need is the graph: its nodes (ops, attributes, the constants inside the graph),
its inputs and outputs, and for each initializer its name, dims and data type, not its data.
That is what this module makes of a model: a base64 string of a deterministic serialization,
small (a 9 MB MLP's is some hundreds of bytes), which the owner's node puts in its catalog, the
orchestrator copies into the proposal (so the proposal hash covers it and every owner reviews
it), the owner's node checks against its asset before running, and the other parties rebuild
with zeros for weights.

Doc strings, node names, value infos and metadata are left out: nothing that the graph does not
need to compute, so nothing more of the model leaves its owner than the computation requires.
A graph's own constants (``Constant`` nodes) do travel, and every party sees them in the
clear; ``describe`` counts them so the owner's review says so.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from node.errors import ModelError, ProposalError

__all__ = ["MAX_BYTES", "MAX_PARAMETERS", "describe", "lines", "of_model", "parse", "rebuild",
           "same"]

MAX_BYTES = 512 * 1024  # serialized; a proposal carries it base64-encoded (4/3 as many characters)
MAX_PARAMETERS = 1 << 31  # elements over all initializers: far beyond what CrypTen can run
MAX_LAYERS_SHOWN = 64


def _too_large(size: int) -> str:
    return (f"its graph without weights is {size / 1024:,.0f} KB, over the {MAX_BYTES // 1024} KB "
            f"a proposal may carry; this usually means weights stored in the graph as constants "
            f"(Constant nodes) rather than as initializers: export it again with "
            f"torch.onnx.export(..., export_params=True) or make those constants initializers")


def of_model(data: bytes, label: str = "the model") -> str:
    """The architecture of the ONNX model ``data``; ModelError when it is too large."""
    import onnx

    model = onnx.load_model_from_string(data)
    arch = onnx.ModelProto()
    arch.ir_version = model.ir_version
    arch.opset_import.extend(model.opset_import)
    graph = arch.graph
    for node in model.graph.node:
        kept = graph.node.add()
        kept.CopyFrom(node)
        kept.ClearField("name")
        kept.ClearField("doc_string")
    for value in model.graph.input:
        _copy_value(graph.input.add(), value)
    for value in model.graph.output:
        _copy_value(graph.output.add(), value)
    for init in model.graph.initializer:
        shell = graph.initializer.add()
        shell.name = init.name
        shell.data_type = init.data_type
        shell.dims.extend(init.dims)
    blob = arch.SerializeToString(deterministic=True)
    if len(blob) > MAX_BYTES:
        raise ModelError(f"{label} cannot be used in jobs: {_too_large(len(blob))}")
    return base64.b64encode(blob).decode("ascii")


def _copy_value(out: Any, value: Any) -> None:
    out.CopyFrom(value)
    out.ClearField("doc_string")


def parse(arch: Any) -> Any:
    """The architecture as an ``onnx.ModelProto``; ProposalError for anything that is not one
    this module made, or one too large to build."""
    import onnx
    from google.protobuf.message import DecodeError

    if not isinstance(arch, str) or len(arch) > (MAX_BYTES + 2) // 3 * 4:
        size = len(arch) * 3 // 4 if isinstance(arch, str) else 0
        raise ProposalError(f"the model's architecture is not text of at most "
                            f"{MAX_BYTES // 1024} KB" + (f": {_too_large(size)}" if size else ""))
    try:
        model = onnx.load_model_from_string(base64.b64decode(arch, validate=True))
    except (binascii.Error, DecodeError, ValueError, RuntimeError):
        raise ProposalError("the model's architecture is not a base64 ONNX graph") from None
    total = 0
    for init in model.graph.initializer:
        if init.raw_data or init.float_data or init.int64_data or init.int32_data or \
                init.double_data or init.string_data or init.uint64_data:
            raise ProposalError(f"the model's architecture holds the values of '{init.name}'; "
                                f"an architecture carries no weights")
        if init.external_data or init.data_location != onnx.TensorProto.DEFAULT:
            raise ProposalError(f"the model's architecture points '{init.name}' at an external "
                                f"file; an architecture carries no weights")
        if init.data_type not in _NUMPY_TYPES or any(d < 0 for d in init.dims):
            raise ProposalError(f"the model's architecture declares '{init.name}' with an "
                                f"unsupported data type or shape")
        total += math.prod(init.dims)
    if total > MAX_PARAMETERS:
        raise ProposalError(f"the model's architecture declares {total:,} parameters, more than "
                            f"{MAX_PARAMETERS:,}")
    return model


def same(a: str, b: str) -> bool:
    """Whether two architectures describe the same graph (whatever their serialization)."""
    return a == b or parse(a) == parse(b)


def rebuild(arch: str) -> bytes:
    """ONNX bytes of the architecture with every weight zero: the graph every party builds."""
    import numpy as np

    model = parse(arch)
    for init in model.graph.initializer:
        dtype = np.dtype(_NUMPY_TYPES[init.data_type])
        init.raw_data = bytes(math.prod(init.dims) * dtype.itemsize)
    return model.SerializeToString()


def describe(arch: str) -> dict[str, Any]:
    """What an owner reads of an architecture: each layer's op and parameter shapes, the
    inputs and outputs, the totals. Names come from the model: untrusted text for a reviewer
    who is not its owner (show it through node.display.safe)."""
    model = parse(arch)
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    layers, constants = [], 0
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type == "Constant":
            for attr in node.attribute:
                constants += (math.prod(attr.t.dims) if attr.HasField("t")
                              else max(1, len(attr.floats), len(attr.ints)))
        params = [{"name": name, "shape": shapes[name]} for name in node.input if name in shapes]
        layers.append({"op": node.op_type, "parameters": params})
    return {
        "inputs": [_value(v) for v in graph.input if v.name not in shapes],
        "outputs": [_value(v) for v in graph.output],
        "layers": layers[:MAX_LAYERS_SHOWN],
        "more_layers": max(0, len(layers) - MAX_LAYERS_SHOWN),
        "ops": dict(sorted(ops.items())),
        "parameters": int(sum(math.prod(s) for s in shapes.values())),
        "tensors": len(shapes),
        "constants": constants,
        "bytes": len(base64.b64decode(arch)),
    }


def lines(description: dict[str, Any]) -> list[str]:
    """``describe``'s answer as short lines: one per layer, then the totals."""
    def dims(shape: Any) -> str:
        return "×".join("?" if d is None else str(d) for d in shape) if shape else "scalar"

    out = []
    for layer in description["layers"]:
        params = ", ".join(f"{p['name']} {dims(p['shape'])}" for p in layer["parameters"])
        out.append(f"{layer['op']}" + (f"  {params}" if params else ""))
    if description["more_layers"]:
        out.append(f"… and {description['more_layers']} more layers ("
                   + ", ".join(f"{n} {op}" for op, n in description["ops"].items()) + " in all)")
    ins = ", ".join(dims(v["shape"]) for v in description["inputs"]) or "?"
    outs = ", ".join(dims(v["shape"]) for v in description["outputs"]) or "?"
    out.append(f"input {ins} → output {outs}; {description['parameters']:,} parameters in "
               f"{description['tensors']} tensors (encrypted); graph {description['bytes']:,} "
               f"bytes")
    if description["constants"]:
        out.append(f"{description['constants']:,} constant values inside the graph, which every "
                   f"party sees in the clear")
    return out


def _value(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape}


# ONNX TensorProto data types an initializer may have, as numpy type names
_NUMPY_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
                7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
                13: "uint64"}

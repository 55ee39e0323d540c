"""Stand-ins for assets in a dry run: random values in the shape of the real ones.

A dry run of a received proposal shows its owner what the job does without touching the real
data: every dataset is replaced by random numbers of the same shape (labels 0/1), and a model
held by another party by a one-layer model with the same input and output widths. Nothing here
is derived from the real values.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["mock_dataset", "mock_model"]


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array, dtype=np.float32),
                              allow_pickle=False)
    return buf.getvalue()


def mock_dataset(schema: dict[str, Any], seed: int = 0) -> dict[str, bytes]:
    """Features (standard normal) and, if the real one has them, 0/1 labels."""
    rng = np.random.default_rng(seed)
    rows, cols = (list(schema.get("shape") or [0, 0]) + [1])[:2]
    parts = {"features": _npy(rng.standard_normal((int(rows), int(cols))))}
    if schema.get("label"):
        parts["labels"] = _npy(rng.integers(0, 2, size=int(rows)).astype(np.float32))
    return parts


def _width(values: list[dict[str, Any]]) -> int:
    shape = (values or [{}])[0].get("shape") or [None, 1]
    return int(shape[-1] or 1)


def mock_model(schema: dict[str, Any], seed: int = 0) -> bytes:
    """An ONNX model ``y = x W^T + b`` with the real model's input and output widths."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n_in, n_out = _width(schema.get("inputs", [])), _width(schema.get("outputs", []))
    weight = numpy_helper.from_array(rng.standard_normal((n_out, n_in)).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(n_out, dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["output"], alpha=1.0, beta=1.0,
                          transB=1)], "mock",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, n_out])],
        [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()

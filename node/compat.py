"""Make CrypTen 0.4.1 import and compute correctly on torch 2.13.

Everything in Parley gets CrypTen from here (``from node.compat import crypten``), never by
``import crypten`` directly, so the fixes below are always in place first. Five fixes:

1. torch 2.13 moved its TorchScript ONNX exporter to ``torch.onnx._internal.torchscript_exporter``;
   CrypTen imports ``torch.onnx._internal.registration`` at import time. We alias the moved module.
2. ``torch.onnx.export`` now defaults to the dynamo exporter, which ignores the custom symbolic
   functions CrypTen registers. We export with ``dynamo=False``.
3. The TorchScript exporter emits ``Identity`` nodes (BatchNorm, layers holding equal parameter
   tensors), which CrypTen rejects ("does not support ONNX op Identity"). We rewire the graph
   around them before conversion; an Identity is a no-op, so the model computes the same.
4. ``FixedPointEncoder.decode`` divides negative values by ``scale - 1`` with floor rounding, so a
   negative value a few units of least precision above an integer decodes one too low: -3 + 2**-16
   comes back as -3.99998. Secret-shared results carry such tiny truncation errors routinely
   (more often with three parties, where truncation goes through the wrap-count protocol), which
   is the "occasional off-by-one with 3 parties". We decode with an exact floor division.
5. A reveal to one party (``get_plain_text(dst=r)``) used ``torch.distributed.reduce``, and
   gloo's reduce first leaves each rank holding the complete sum of a slice of the elements:
   with 2 parties, half the revealed values ended up in plaintext at the party that was not to
   see them, and crossed the link in the clear. We reduce by direct sends instead: every other
   party sends its share straight to ``r``, which alone adds them up.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import torch
import torch.onnx

try:  # torch < 2.9 kept the registry here; crypten imports it by this name.
    import torch.onnx._internal.registration  # noqa: F401
except ImportError:  # pragma: no branch - depends on the installed torch
    from torch.onnx._internal.torchscript_exporter import registration as _registration

    sys.modules["torch.onnx._internal.registration"] = _registration

import crypten  # noqa: E402  (must follow the alias above)
import crypten.nn.onnx_converter as _onnx_converter  # noqa: E402
import onnx  # noqa: E402
from crypten.communicator.distributed_communicator import (  # noqa: E402
    DistributedCommunicator as _DistributedCommunicator,
)
from crypten.encoder import FixedPointEncoder, nearest_integer_division  # noqa: E402

__all__ = ["crypten", "strip_identity_nodes", "export_onnx", "decode_fixed_point"]


def export_onnx(f: Any, pytorch_model: torch.nn.Module, dummy_input: Any) -> Any:
    """Export with the TorchScript exporter, the only one that honours CrypTen's symbolics."""
    torch.onnx.export(
        pytorch_model,
        dummy_input,
        f,
        do_constant_folding=False,
        export_params=True,
        input_names=["input"],
        output_names=["output"],
        operator_export_type=torch.onnx.OperatorExportTypes.ONNX,
        opset_version=_onnx_converter._OPSET_VERSION,
        dynamo=False,
    )
    return f


def strip_identity_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove ``Identity`` nodes in place; the model computes the same.

    The exporter emits an Identity when two parameters hold equal tensors (it keeps one copy).
    Such an Identity becomes a copy of the initializer under its output name: rewiring it to
    the shared name instead would give one node the same input twice, which CrypTen's graph
    runner never marks as available. An Identity on an activation is rewired to its input.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    for ident in [n for n in graph.node if n.op_type == "Identity"]:
        source, target = ident.input[0], ident.output[0]
        if source in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[source])
            copy.name = target
            graph.initializer.append(copy)
            initializers[target] = copy
        elif target in graph_outputs:  # the producer writes the graph output directly
            for node in graph.node:
                node.output[:] = [target if name == source else name for name in node.output]
                node.input[:] = [target if name == source else name for name in node.input]
        else:
            for node in graph.node:
                node.input[:] = [source if name == target else name for name in node.input]
        graph.node.remove(ident)
    return model


def _load_onnx_model(onnx_string_or_file: Any) -> onnx.ModelProto:
    if hasattr(onnx_string_or_file, "seek"):
        onnx_string_or_file.seek(0)
        model = onnx.load(onnx_string_or_file)
    else:
        model = onnx.load_model_from_string(onnx_string_or_file)
    return strip_identity_nodes(model)


def decode_fixed_point(self: FixedPointEncoder, tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Exact decoding of CrypTen's fixed-point integers (see fix 4 in the module docstring)."""
    if tensor is None:
        return None
    if tensor.is_floating_point():
        raise TypeError("input must be a LongTensor")
    scale = int(self._scale)
    if scale > 1:
        whole = tensor.div(scale, rounding_mode="floor")
        frac = tensor - whole * scale  # in [0, scale)
        return (whole.float() + frac.float() / scale).data
    return nearest_integer_division(tensor, scale).data


def _reduce_by_sends(self: Any, input: Any, dst: int, op: Any = None, batched: bool = False
                     ) -> Any:
    """Reduce to ``dst`` so that no other rank ever holds a partial result (fix 5)."""
    import torch.distributed as dist

    op = dist.ReduceOp.SUM if op is None else op
    world, rank = self.get_world_size(), self.get_rank()
    if world < 2:
        return input
    tensors = input if batched else [input]
    if rank != dst:
        for tensor in tensors:
            self.send(tensor, dst)
        return None
    out = [t.clone() for t in tensors]
    for src in range(world):
        if src == dst:
            continue
        for acc in out:
            share = self.recv(acc, src)
            if op == dist.ReduceOp.SUM:
                acc += share
            elif op == dist.ReduceOp.BXOR:
                acc ^= share
            else:
                raise ValueError(f"reduce by sends supports SUM and BXOR, not {op}")
    return out if batched else out[0]


_onnx_converter._export_pytorch_model = export_onnx
_DistributedCommunicator.reduce = _reduce_by_sends
_onnx_converter._load_onnx_model = _load_onnx_model
FixedPointEncoder.decode = decode_fixed_point  # type: ignore[method-assign]


def onnx_bytes_from_pytorch(pytorch_model: torch.nn.Module, dummy_input: torch.Tensor) -> bytes:
    """ONNX bytes for a PyTorch module, exported the way CrypTen needs (with its symbolics)."""
    f = _onnx_converter._from_pytorch_to_bytes(pytorch_model, dummy_input)
    data = f.getvalue() if isinstance(f, io.BytesIO) else f.read()
    return data

"""Small ONNX graphs for the importer's and the cutter's tests, written with ``onnx.helper``."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def tensor(name: str, shape: list[Any] | None) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def model(nodes: list[Any], *, shape: list[Any] = (1, 4, 8, 8), inits: list[Any] = (),
          weights: dict[str, list[int]] | None = None, output: str | None = None,
          opset: int = 13, extra_inputs: list[Any] = ()) -> Any:
    """A model reading ``x`` of ``shape``; ``weights`` are declared inputs (no data)."""
    out = output or nodes[-1].output[0]
    inputs = [tensor("x", list(shape)), *extra_inputs,
              *(tensor(k, v) for k, v in (weights or {}).items())]
    graph = helper.make_graph(nodes, "g", inputs, [tensor(out, None)], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def conv(x: str, y: str, w: str, *, bias: str | None = None, **attrs: Any) -> Any:
    ins = [x, w] + ([bias] if bias else [])
    return helper.make_node("Conv", ins, [y], name=y, **attrs)


def op(kind: str, ins: list[str], y: str, **attrs: Any) -> Any:
    return helper.make_node(kind, ins, [y], name=y, **attrs)


def const(name: str, value: Any) -> Any:
    """A Constant node holding ``value`` (a scalar or an array)."""
    arr = np.asarray(value, dtype=np.float32)
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(arr, name))


def init(name: str, value: Any, dtype: Any = np.float32) -> Any:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def to_bytes(proto: Any) -> bytes:
    return proto.SerializeToString()

"""A chain as an ONNX graph with the weights as constants: the benchmark's ONNX Runtime input.

:func:`chain_to_onnx` writes every layer of a normalized chain as the standard ONNX operator
(``Conv`` with its pads, strides, dilations and groups; ``Add`` of a ``[1, C, 1, 1]`` bias;
``BatchNormalization`` in inference form; ``Relu``; ``Clip`` for relu6 and clip; ``Add`` of an
earlier tensor for a residual; ``MaxPool`` and ``AveragePool`` with ``count_include_pad=1`` and
floor mode, as :mod:`playground.chain.reference` pools). The weights, biases and batch-norm
statistics are *initializers* (the values :func:`playground.chain.reference.make_inputs` makes),
so ONNX Runtime may fold and pre-pack them once at session start, as it does for a deployed
model; the only graph input is ``data``. Needs the ``onnx`` package (the benchmark's
environment: ``benchmarks/requirements-bench.txt``), never the app.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from playground.chain.spec import tensor_shapes

OPSET = 17


def _ints(pair) -> list[int]:
    return [int(v) for v in pair]


def chain_to_onnx(chain: dict, inputs: list[tuple[str, np.ndarray]]) -> onnx.ModelProto:
    """The normalized ``chain`` as a checked ONNX model whose initializers are ``inputs``'
    parameters (everything but ``data``)."""
    dtype = chain["input"]["dtype"]
    if dtype != "float32":
        raise ValueError(f"chain_to_onnx: float32 chains only, got {dtype}")
    arrays = dict(inputs)
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), name)
             for name, a in inputs if name != "data"]
    nodes, x = [], "data"

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    for layer in chain["layers"]:
        name, op = layer["name"], layer["op"]
        if op == "conv2d":
            pt, pl, pb, pr = layer["padding"]
            nodes.append(helper.make_node(
                "Conv", [x, name + "_weight"], [name], pads=[pt, pl, pb, pr],
                strides=_ints(layer["stride"]), dilations=_ints(layer["dilation"]),
                group=int(layer["groups"]), kernel_shape=_ints(layer["kernel"])))
        elif op in ("max_pool2d", "avg_pool2d"):
            kind = "MaxPool" if op == "max_pool2d" else "AveragePool"
            extra = {"count_include_pad": 1} if kind == "AveragePool" else {}
            nodes.append(helper.make_node(
                kind, [x], [name], kernel_shape=_ints(layer["kernel"]),
                strides=_ints(layer["stride"]), pads=list(layer["padding"]), ceil_mode=0,
                **extra))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", [x], [name]))
        elif op in ("relu6", "clip"):
            low, high = (0.0, 6.0) if op == "relu6" else (layer["min"], layer["max"])
            nodes.append(helper.make_node("Clip", [x, const(name + "_min", low),
                                                   const(name + "_max", high)], [name]))
        elif op == "bias_add":
            bias = arrays[name + "_bias"]
            nodes.append(helper.make_node(
                "Add", [x, const(name + "_bias4", bias.reshape(1, -1, 1, 1))], [name]))
        elif op == "batch_norm":
            nodes.append(helper.make_node(
                "BatchNormalization", [x, *(f"{name}_{p}" for p in ("gamma", "beta", "mean",
                                                                    "var"))],
                [name], epsilon=float(layer["eps"])))
        elif op == "add":
            nodes.append(helper.make_node("Add", [x, layer["other"]], [name]))
        else:
            raise ValueError(f"chain_to_onnx: no ONNX operator for {op!r}")
        x = name
    # The parameters of bias_add were re-shaped into "<name>_bias4": drop the 1-D originals.
    used = {i for n in nodes for i in n.input}
    inits = [t for t in inits if t.name in used]
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, chain["input"]["shape"])
    out = helper.make_tensor_value_info(x, TensorProto.FLOAT, list(tensor_shapes(chain)[x]))
    graph = helper.make_graph(nodes, "chain", [data], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="schedule-playground benchmarks")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model

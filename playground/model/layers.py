"""ONNX nodes -> chain layers: the one table of what the importer understands.

=======================  ===============================================================
ONNX                     chain layers
=======================  ===============================================================
Conv (2-D)               ``conv2d`` (groups, strides, dilations, pads or ``auto_pad``),
                         then ``bias_add`` when it has a bias
BatchNormalization       ``batch_norm`` (inference form; ``epsilon``)
Relu, Sigmoid            ``relu``, ``sigmoid``: every op whose record in
                         :mod:`playground.chain.ops` names ONNX op types (``onnx``)
Clip                     ``relu6`` for [0, 6], ``relu`` for [0, none], else ``clip``; the
                         bounds as attributes (opset < 11) or constant inputs
Add                      ``add`` of two data tensors of one shape (the cutter places it
                         where its other input is in the chain or is the chain's input)
MaxPool                  ``max_pool2d`` (no dilation; ``ceil_mode`` only where it rounds
                         as floor does; the Indices output unused)
AveragePool              ``avg_pool2d``; with padding only when ``count_include_pad=1``
                         (the chain's average counts the padding, as PyTorch's default)
=======================  ===============================================================

Every other op (and a mappable op outside these limits) is kept as a node that is not a
chain layer, with the reason; the cutter ends chains there and lists it.
"""

from __future__ import annotations

import math
from typing import Any

from playground.chain.ops import OPS, tensor_field
from playground.chain.spec import INPUT_NAME, chain_flop, normalize_chain, output_shape
from playground.errors import ChainError
from playground.model.graph import PARAM_SLOTS, SOURCE_OPS, Node

#: float32's largest value: an unbounded side of a Clip.
FLT_MAX = 3.4028234663852886e38
#: ONNX ops that map to one chain op, without attributes (from the op table).
_PLAIN = {onnx: name for name, op in OPS.items() for onnx in op.onnx}
_MAPPED = frozenset({"Conv", "MaxPool", "AveragePool", "BatchNormalization", "Clip", "Add",
                     *_PLAIN})
_PASS_THROUGH = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze"})


class _Skip(Exception):
    """Internal: the node is not a chain layer; the message says why."""


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


class _Graph:
    """Static tensors, aliases and constant values while walking the sorted nodes."""

    def __init__(self, proto: Any, input_name: str) -> None:
        graph = proto.graph
        self.inits = {i.name: i for i in graph.initializer}
        self.static = set(self.inits) | {i.values.name for i in graph.sparse_initializer}
        self.static |= {i.name for i in graph.input if i.name != input_name}
        self.alias: dict[str, str] = {}
        self.producer: dict[str, Any] = {}

    def resolve(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def value(self, t: str, what: str) -> float:
        """The scalar held by constant tensor ``t`` (an initializer, a Constant, or one passed
        through Identity, Cast or Reshape)."""
        import onnx
        from onnx import numpy_helper

        t = self.resolve(t)
        for _ in range(16):
            if t in self.inits:
                init = self.inits[t]
                if init.data_location == onnx.TensorProto.EXTERNAL:
                    raise _Skip(f"its {what} is in an external data file (not read)")
                if math.prod(init.dims) != 1:
                    raise _Skip(f"its {what} is not a scalar")
                return float(numpy_helper.to_array(init).reshape(-1)[0])
            node = self.producer.get(t)
            if node is None:
                break
            if node.op_type == "Constant":
                a = _attrs(node)
                if "value" in a:
                    if math.prod(a["value"].dims) != 1:
                        raise _Skip(f"its {what} is not a scalar")
                    return float(numpy_helper.to_array(a["value"]).reshape(-1)[0])
                for key in ("value_float", "value_int"):
                    if key in a:
                        return float(a[key])
                break
            if node.op_type not in _PASS_THROUGH or not node.input:
                break
            t = self.resolve(node.input[0])
        raise _Skip(f"its {what} is not a constant")


def _pads(attrs: dict, hw: tuple[int, ...], kernel: list[int], strides: list[int],
          dilations: list[int]) -> list[int]:
    """[top, left, bottom, right] from ``pads`` or ``auto_pad``."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise _Skip(f"pads {pads} are not 2-D")
        return pads
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _Skip(f"auto_pad {auto!r} is unknown")
    begin, end = [], []
    for size, k, s, d in zip(hw, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return [begin[0], begin[1], end[0], end[1]]


def _window(node: Any, attrs: dict, x: tuple[int, ...], w: tuple[int, ...] | None,
            out: tuple[int, ...] | None) -> dict:
    if len(x) != 4:
        raise _Skip(f"its input has rank {len(x)} (chains are 2-D, NCHW)")
    kernel = list(attrs.get("kernel_shape") or (w[2:] if w and len(w) == 4 else []))
    if len(kernel) != 2:
        raise _Skip("its kernel shape is unknown")
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    layer = {"kernel": kernel, "stride": strides, "dilation": dilations,
             "padding": _pads(attrs, x[2:], kernel, strides, dilations)}
    if node.op_type == "Conv":
        channels = out[1] if out else (w[0] if w else None)
        if channels is None:
            raise _Skip("its output channels are unknown")
        return {"op": "conv2d", "channels": int(channels), "groups": int(attrs.get("group", 1)),
                "in_channels": x[1], **layer}
    if dilations != [1, 1]:
        raise _Skip(f"dilations {dilations} (chain pools have none)")
    del layer["dilation"]
    if attrs.get("ceil_mode", 0):
        pt, pl, pb, pr = layer["padding"]
        spans = [n + a + b - k for n, a, b, k in zip(x[2:], (pt, pl), (pb, pr), kernel,
                                                        strict=True)]
        if any(span % s for span, s in zip(spans, strides, strict=True)):
            raise _Skip("ceil_mode=1 rounds its output up (chain pools round down)")
    if node.op_type == "AveragePool":
        if any(layer["padding"]) and not attrs.get("count_include_pad", 0):
            raise _Skip("it pads with count_include_pad=0 (the chain's average counts the "
                        "padding)")
        return {"op": "avg_pool2d", **layer}
    return {"op": "max_pool2d", **layer}


def _clip(g: _Graph, node: Any, attrs: dict, opset: int) -> dict:
    if opset < 11:
        low, high = attrs.get("min", -FLT_MAX), attrs.get("max", FLT_MAX)
    else:
        ins = [*node.input, "", ""]
        low = g.value(ins[1], "min") if ins[1] else -FLT_MAX
        high = g.value(ins[2], "max") if ins[2] else FLT_MAX
    if low == 0 and high == 6:
        return {"op": "relu6"}
    if low == 0 and high >= FLT_MAX:
        return {"op": "relu"}
    return {"op": "clip", "min": max(low, -FLT_MAX), "max": min(high, FLT_MAX)}


def _layers(g: _Graph, node: Any, data: list[str], shapes: dict, opset: int
            ) -> list[dict]:
    """The chain layers of one data-path node; raises :class:`_Skip` with the reason."""
    op, attrs = node.op_type, _attrs(node)
    ins = [g.resolve(t) for t in node.input]
    out = shapes.get(node.output[0]) if node.output else None
    if op == "Add":
        if len(data) != 2:
            raise _Skip("it adds a constant (a chain's add takes two tensors)")
        a, b = (shapes.get(t) for t in data)
        if a is None or a != b or len(a) != 4:
            raise _Skip(f"its inputs' shapes {a} and {b} differ (no broadcasting)")
        return [{"op": "add"}]
    if op in _MAPPED:
        if len(data) != 1 or ins[0] != data[0]:
            raise _Skip("a weight or bound of it is computed, not constant")
    else:
        raise _Skip("")
    x = shapes.get(data[0])
    if x is None:
        raise _Skip("its input's shape is unknown")
    if op in ("MaxPool", "AveragePool") and len(node.output) > 1 and node.output[1]:
        raise _Skip("it returns the Indices output")
    if op == "Conv":
        layers = [_window(node, attrs, x, shapes.get(ins[1]), out)]
        if len(ins) > 2 and ins[2]:
            layers.append({"op": "bias_add"})
        return layers
    if op in ("MaxPool", "AveragePool"):
        return [_window(node, attrs, x, None, out)]
    if op == "BatchNormalization":
        if attrs.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise _Skip("it is in training mode")
        if not attrs.get("spatial", 1):  # opsets 7-8: one scale per element, not per channel
            raise _Skip("spatial=0 (its parameters are per element, not per channel)")
        # ONNX keeps epsilon as float32: 1e-5 reads 9.9999997e-06; say what was meant
        return [{"op": "batch_norm", "eps": float(f"{attrs.get('epsilon', 1e-5):.7g}")}]
    if op in _PLAIN:
        return [{"op": _PLAIN[op]}]
    return [_clip(g, node, attrs, opset)]


def _checked(layers: list[dict], x: tuple[int, ...], out: tuple[int, ...] | None,
             dtype: str) -> tuple[tuple[int, ...], float]:
    """The layers' output shape and window FLOPs, checked by the chain spec itself."""
    probe = []
    for layer in layers:  # an op reading a second tensor reads the input here
        second = tensor_field(layer["op"])
        probe.append({**layer, second: INPUT_NAME} if second else layer)
    try:
        chain = normalize_chain({"input": {"shape": list(x), "dtype": dtype}, "layers": probe})
    except ChainError as e:
        raise _Skip(e.message) from None
    ours = tuple(output_shape(chain))
    if out is not None and tuple(out) != ours:
        raise _Skip(f"it computes {list(ours)} here but ONNX infers {list(out)}")
    window = OPS[chain["layers"][0]["op"]].kind != "elementwise"
    flop = chain_flop(dict(chain, layers=chain["layers"][:1])) if window else 0.0
    return ours, flop


def map_nodes(proto: Any, names: list[str], input_name: str, shapes: dict[str, tuple],
              opset: int, dtype: str = "float32") -> tuple[list[Node], list[str]]:
    """The data-path :class:`Node` s of a sorted graph, and its outputs (aliases resolved).

    ``shapes`` (from shape inference) is completed in place with the shapes the layers
    compute where inference left them unknown.
    """
    g = _Graph(proto, input_name)
    nodes: list[Node] = []
    for node, name in zip(proto.graph.node, names, strict=True):
        for o in node.output:
            g.producer[o] = node
        ins = [g.resolve(t) for t in node.input]
        used = [t for t in ins if t]
        if node.op_type in SOURCE_OPS or (used and all(t in g.static for t in used)):
            g.static.update(o for o in node.output if o)
            continue
        if node.op_type == "Identity" and len(used) == 1 and node.output:
            g.alias[node.output[0]] = used[0]
            continue
        slots = PARAM_SLOTS.get(node.op_type, frozenset())
        # A mapped op's weight that is not constant is data (and refused); elsewhere a
        # parameter slot (a Reshape's shape, say) is not part of the data path.
        data = [t for k, t in enumerate(ins) if t and t not in g.static
                and (k not in slots or node.op_type in _MAPPED)]
        layers: list[dict] = []
        reason, flop, shape = "", 0.0, None
        try:
            if not node.output or not node.output[0]:
                raise _Skip("it writes no output")
            layers = _layers(g, node, data, shapes, opset)
            out = shapes.get(node.output[0])
            shape, flop = _checked(layers, shapes[data[0]], out, dtype)
            shapes.setdefault(node.output[0], shape)
        except _Skip as e:
            layers, reason = [], str(e)
            shape = shapes.get(node.output[0]) if node.output and node.output[0] else None
        nodes.append(Node(name, node.op_type, tuple(data), tuple(o for o in node.output if o),
                          tuple(layers), reason, shape, flop))
    outputs = [g.resolve(o.name) for o in proto.graph.output]
    return nodes, outputs

"""A model as the cutter reads it: its data-path nodes, each mapped to a chain layer or not.

:func:`playground.model.onnx_read.load_model` makes a :class:`Model` from an ONNX file;
:mod:`playground.model.cut` cuts it into chains. The model is plain data (``to_dict`` /
``from_dict``), so that it can be read in a worker process and sent back as JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

from playground.chain.ops import OPS
from playground.chain.spec import WINDOW_OPS
from playground.errors import PlaygroundError

#: Inputs of these ops that hold parameters (weights, shapes, bounds), not data.
PARAM_SLOTS: dict[str, frozenset[int]] = {
    "Conv": frozenset({1, 2}), "ConvTranspose": frozenset({1, 2}),
    "BatchNormalization": frozenset({1, 2, 3, 4}), "InstanceNormalization": frozenset({1, 2}),
    "LayerNormalization": frozenset({1, 2}), "Clip": frozenset({1, 2}),
    "Reshape": frozenset({1}), "Gemm": frozenset({1, 2}), "MatMul": frozenset({1}),
    "PRelu": frozenset({1}), "Resize": frozenset({1, 2, 3}), "Upsample": frozenset({1}),
    "Pad": frozenset({1, 2, 3}), "Slice": frozenset({1, 2, 3, 4}), "Split": frozenset({1}),
    "Squeeze": frozenset({1}), "Unsqueeze": frozenset({1}), "Expand": frozenset({1}),
    "ReduceMean": frozenset({1}), "ReduceSum": frozenset({1}), "Tile": frozenset({1}),
}
SOURCE_OPS = frozenset({"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform",
                         "EyeLike"})


class ModelError(PlaygroundError):
    """A model file that cannot be read as a network of chains; the message is one line that
    says what is wrong or what is missing (e.g. the input shape)."""


@dataclass(frozen=True)
class Node:
    """One node of the model's data path (weights and constants are not nodes).

    Attributes
    ----------
    name
        The ONNX node's name (made unique: ``<op_type>_<index>`` when the file has none).
    op_type
        The ONNX operator, e.g. ``"Conv"``.
    inputs, outputs
        The data tensors it reads and writes (weights, constants and exporter noise such as
        Identity are resolved away).
    layers
        The chain layers it maps to, unnamed: one (``{"op": "conv2d", "channels": 64, ...}``)
        or two (a Conv with a bias: ``conv2d`` then ``bias_add``); an ``add`` layer's
        ``other`` is left out (the cutter fills it). Empty when it is not a chain layer.
    reason
        Why it is not a chain layer (empty for a layer, or for an op the spec has no layer for).
    shape
        Its first output's shape (NCHW for a layer), when known.
    flop
        Floating-point operations of a window layer (a multiply-add counts 2; a pool one per
        window element); 0 otherwise.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[dict, ...] = ()
    reason: str = ""
    shape: tuple[int, ...] | None = None
    flop: float = 0.0

    @property
    def is_layer(self) -> bool:
        return bool(self.layers)

    @property
    def is_window(self) -> bool:
        return bool(self.layers) and self.layers[0]["op"] in WINDOW_OPS

    @property
    def is_conv(self) -> bool:
        return bool(self.layers) and OPS[self.layers[0]["op"]].kind == "conv"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["inputs"], out["outputs"] = list(self.inputs), list(self.outputs)
        out["layers"] = [dict(x) for x in self.layers]
        out["shape"] = list(self.shape) if self.shape is not None else None
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Node:
        shape = raw.get("shape")
        return cls(raw["name"], raw["op_type"], tuple(raw["inputs"]), tuple(raw["outputs"]),
                   tuple(raw.get("layers", ())), raw.get("reason", ""),
                   tuple(shape) if shape is not None else None, float(raw.get("flop", 0.0)))


@dataclass(frozen=True)
class Model:
    """A model's data path in topological order, with its input and every tensor's shape.

    Attributes
    ----------
    name
        The graph's name (or the file's).
    opset
        The default domain's opset version.
    input_name, input_shape, dtype
        The one data input, its (static) NCHW shape and the chains' dtype.
    nodes
        Data-path nodes, producers before consumers.
    shapes
        Tensor name -> shape, for every data tensor whose shape is known.
    outputs
        The graph's outputs (data tensors): a tensor listed here is used outside any chain.
    """

    name: str
    opset: int
    input_name: str
    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    dtype: str = "float32"
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    @property
    def flop(self) -> float:
        """The model's conv and pool FLOPs (the window layers it maps)."""
        return math.fsum(n.flop for n in self.nodes if n.is_window)

    @property
    def not_layers(self) -> dict[str, int]:
        """Op type -> count of the nodes that are not chain layers."""
        return dict(sorted(Counter(n.op_type for n in self.nodes if not n.layers).items()))

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ModelError(f"the model has no node named {name!r}")

    def summary(self) -> str:
        layers = sum(n.is_layer for n in self.nodes)
        convs = sum(n.is_conv for n in self.nodes)
        return (f"{self.name}: input {self.input_name} {list(self.input_shape)}, "
                f"{len(self.nodes)} nodes, {layers} chain layers ({convs} convs), "
                f"{self.flop / 1e9:,.2f} GFLOP in convs and pools")

    def to_dict(self) -> dict:
        return {"name": self.name, "opset": self.opset, "input_name": self.input_name,
                "input_shape": list(self.input_shape), "dtype": self.dtype,
                "nodes": [n.to_dict() for n in self.nodes],
                "shapes": {k: list(v) for k, v in self.shapes.items()},
                "outputs": list(self.outputs)}

    @classmethod
    def from_dict(cls, raw: dict) -> Model:
        return cls(raw["name"], int(raw["opset"]), raw["input_name"],
                   tuple(raw["input_shape"]), tuple(Node.from_dict(n) for n in raw["nodes"]),
                   raw.get("dtype", "float32"),
                   {k: tuple(v) for k, v in raw.get("shapes", {}).items()},
                   tuple(raw.get("outputs", ())))

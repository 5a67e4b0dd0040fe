"""Three well-known networks' convolutional parts, written with ``onnx.helper`` (no download).

* :func:`resnet18` — torchvision's ResNet-18 (224x224): a 7x7 stem, max pool, four stages of
  two basic blocks (64, 128, 256, 512 channels; 1x1 stride-2 downsample convs), global
  average pool and the 1000-way Gemm. Conv, BatchNormalization, Relu, Add as PyTorch exports
  them unfused: 20 convs.
* :func:`mobilenet_v2` — torchvision's MobileNet v2 (224x224): 17 inverted residual blocks
  (expand 1x1, depthwise 3x3, project 1x1; residual where shapes allow), batch norm folded
  into conv biases as PyTorch's ONNX export does, ReLU6 as Clip with Constant bounds: 52
  convs.
* :func:`yolo_tiny` — YOLOv3-tiny's Darknet backbone and first head (416x416): 3x3 convs
  doubling from 16 to 1024 channels between 2x2 max pools (the last one stride 1, padded),
  then 1x1/3x3 convs and the 255-channel detection conv: 10 convs. Darknet uses leaky ReLU,
  which the chains do not have: ``activation="leaky"`` writes it as in the original (and
  every activation then ends a chain), the default ``"relu"`` a ReLU in its place.

Weights are declared, not stored: by default each weight is a graph input with its shape and
no data (a few KB per model; the importer never reads weights), and ``weights="random"``
stores seeded random initializers instead (tens of MB, for ONNX Runtime).
"""

from __future__ import annotations

from typing import Any

#: name -> (builder, input shape); the page and the command line list these.
EXAMPLES = ("resnet18", "mobilenet_v2", "yolo_tiny")


class _Net:
    """A graph under construction: tensors named in order, weights declared or random."""

    def __init__(self, name: str, shape: tuple[int, int, int, int], weights: str) -> None:
        if weights not in ("declared", "random"):
            raise ValueError(f"weights must be 'declared' or 'random', got {weights!r}")
        import numpy as np

        self.name, self.weights = name, weights
        self.rng = np.random.default_rng(0)
        self.nodes: list[Any] = []
        self.inputs: list[Any] = []
        self.inits: list[Any] = []
        self.channels: dict[str, int] = {"input": shape[1]}
        self.shape = shape
        self.counter: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self.counter[prefix] = self.counter.get(prefix, 0) + 1
        return f"{prefix}{self.counter[prefix]}"

    def weight(self, name: str, shape: list[int]) -> str:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        if self.weights == "declared":
            self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        else:
            scale = 1.0 / max(1, int(np.prod(shape[1:])) if len(shape) > 1 else 1) ** 0.5
            value = (self.rng.standard_normal(shape) * scale).astype(np.float32)
            if name.endswith(("_var", "_scale")):
                value = np.abs(value) + 0.5
            self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], channels: int, prefix: str, **attrs: Any) -> str:
        from onnx import helper

        name = self._name(prefix)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.channels[name] = channels
        return name

    def conv(self, x: str, cout: int, k: int, s: int = 1, *, groups: int = 1,
             bias: bool = False, pad: int | None = None) -> str:
        cin = self.channels[x]
        name = f"conv{self.counter.get('conv', 0) + 1}"
        ins = [x, self.weight(f"{name}_w", [cout, cin // groups, k, k])]
        if bias:
            ins.append(self.weight(f"{name}_b", [cout]))
        p = k // 2 if pad is None else pad
        return self.node("Conv", ins, cout, "conv", kernel_shape=[k, k], strides=[s, s],
                         pads=[p, p, p, p], group=groups)

    def bn(self, x: str) -> str:
        c = self.channels[x]
        name = f"bn{self.counter.get('bn', 0) + 1}"
        params = [self.weight(f"{name}_{p}", [c]) for p in ("scale", "shift", "mean", "var")]
        return self.node("BatchNormalization", [x, *params], c, "bn", epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], self.channels[x], "relu")

    def leaky(self, x: str) -> str:
        return self.node("LeakyRelu", [x], self.channels[x], "leaky", alpha=0.1)

    def relu6(self, x: str) -> str:
        """Clip(x, 0, 6) with its bounds in Constant nodes, as PyTorch exports ReLU6."""
        from onnx import TensorProto, helper

        bounds = []
        for value in (0.0, 6.0):
            out = self._name("const")
            self.nodes.append(helper.make_node(
                "Constant", [], [out], name=out,
                value=helper.make_tensor(out, TensorProto.FLOAT, [], [value])))
            bounds.append(out)
        return self.node("Clip", [x, *bounds], self.channels[x], "relu6_")

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b], self.channels[a], "add")

    def maxpool(self, x: str, k: int, s: int, pads: list[int]) -> str:
        return self.node("MaxPool", [x], self.channels[x], "maxpool", kernel_shape=[k, k],
                         strides=[s, s], pads=pads)

    def classifier(self, x: str, classes: int = 1000) -> str:
        """GlobalAveragePool, Flatten, Gemm: the tail that is not a chain."""
        c = self.channels[x]
        pooled = self.node("GlobalAveragePool", [x], c, "gap")
        flat = self.node("Flatten", [pooled], c, "flatten", axis=1)
        return self.node("Gemm", [flat, self.weight("fc_w", [classes, c]),
                                  self.weight("fc_b", [classes])], classes, "fc", transB=1)

    def end(self, x: str, classifier: bool) -> Any:
        """The model, its output ``x`` or (with ``classifier``) the classifier's."""
        return self.model(self.classifier(x)) if classifier else self.model(x)

    def model(self, output: str) -> Any:
        """The ``onnx.ModelProto``, its output's shape filled in by shape inference."""
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.shape)),
             *self.inputs],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="playground.model.examples")
        inferred = onnx.shape_inference.infer_shapes(model).graph
        shape = next(v for v in (*inferred.value_info, *inferred.output) if v.name == output)
        model.graph.output[0].CopyFrom(shape)
        return model


def resnet18(batch: int = 1, size: int = 224, weights: str = "declared",
             classifier: bool = True) -> Any:
    """torchvision's ResNet-18 as an ``onnx.ModelProto`` (see the module docstring); without
    ``classifier`` it ends at the last block (the conv part alone)."""
    net = _Net("resnet18", (batch, 3, size, size), weights)
    x = net.relu(net.bn(net.conv("input", 64, 7, 2)))
    x = net.maxpool(x, 3, 2, [1, 1, 1, 1])
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = net.relu(net.bn(net.conv(x, width, 3, stride)))
            y = net.bn(net.conv(y, width, 3))
            shortcut = x
            if stride != 1 or net.channels[x] != width:
                shortcut = net.bn(net.conv(x, width, 1, stride))
            x = net.relu(net.add(y, shortcut))
    return net.end(x, classifier)


#: MobileNet v2's inverted residual settings: expansion t, channels c, repeats n, stride s.
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(batch: int = 1, size: int = 224, weights: str = "declared",
                 classifier: bool = True) -> Any:
    """torchvision's MobileNet v2 as an ``onnx.ModelProto`` (see the module docstring);
    without ``classifier`` it ends at the last 1x1 conv (the conv part alone)."""
    net = _Net("mobilenet_v2", (batch, 3, size, size), weights)
    x = net.relu6(net.conv("input", 32, 3, 2, bias=True))
    for t, c, n, s in MOBILENET_V2:
        for i in range(n):
            stride = s if i == 0 else 1
            cin = net.channels[x]
            y = x if t == 1 else net.relu6(net.conv(x, cin * t, 1, bias=True))
            y = net.relu6(net.conv(y, cin * t, 3, stride, groups=cin * t, bias=True))
            y = net.conv(y, c, 1, bias=True)
            x = net.add(y, x) if stride == 1 and cin == c else y
    x = net.relu6(net.conv(x, 1280, 1, bias=True))
    return net.end(x, classifier)


def yolo_tiny(batch: int = 1, size: int = 416, weights: str = "declared",
              activation: str = "relu", classifier: bool = False) -> Any:
    """YOLOv3-tiny's backbone and first head as an ``onnx.ModelProto`` (see the module
    docstring); ``activation`` is ``"relu"`` or ``"leaky"`` (Darknet's own). It has no
    classifier (``classifier`` is accepted for a uniform signature and must be False)."""
    if classifier:
        raise ValueError("yolo_tiny has no classifier")
    if activation not in ("relu", "leaky"):
        raise ValueError(f"activation must be 'relu' or 'leaky', got {activation!r}")
    net = _Net("yolo_tiny", (batch, 3, size, size), weights)
    act = net.relu if activation == "relu" else net.leaky

    def cba(x: str, cout: int, k: int) -> str:
        return act(net.bn(net.conv(x, cout, k)))

    x = "input"
    for width in (16, 32, 64, 128, 256):
        x = net.maxpool(cba(x, width, 3), 2, 2, [0, 0, 0, 0])
    x = net.maxpool(cba(x, 512, 3), 2, 1, [0, 0, 1, 1])  # Darknet's stride-1 pool, padded
    x = cba(cba(x, 1024, 3), 256, 1)
    return net.end(net.conv(cba(x, 512, 3), 255, 1, bias=True), False)


def build(name: str, **options: Any) -> Any:
    """The example ``name`` (one of :data:`EXAMPLES`) as an ``onnx.ModelProto``."""
    builders = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "yolo_tiny": yolo_tiny}
    if name not in builders:
        from playground.model.graph import ModelError

        raise ModelError(f"no example model {name!r} (choose one of {', '.join(EXAMPLES)})")
    return builders[name](**options)


def example_bytes(name: str, **options: Any) -> bytes:
    """The example ``name`` serialized, as a ``.onnx`` file holds it."""
    return build(name, **options).SerializeToString()

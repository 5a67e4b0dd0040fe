"""The layer ops: one record per op, and the only place that knows what an op is.

Each op is a class (a record: class attributes and static methods, never instantiated) in
the module of its family, :mod:`.window` (convolution, pooling) or :mod:`.elementwise`, on the
defaults of :class:`.base.Op`, and listed in :data:`OPS` here. It carries every per-op fact
the playground uses:

- ``name`` (what a layer's ``"op"`` says), ``prefix`` (automatic names: ``conv1``, ``bn2``),
  ``kind`` (``"conv"`` and ``"pool"`` slide a window over their input and may pad it, so they
  change H and W; ``"elementwise"`` ops keep the shape), ``onnx`` (ONNX op types that map to
  the op one to one, without attributes);
- ``fields``: the layer's fields in normalized order, with defaults, limits and how the
  editor shows them (:func:`.base.field`), and ``check`` (what spans several fields);
- ``params``: the op's inputs after ``data`` (weights...), in calling order, with their shapes
  and the range their random values are drawn from; ``helpers``: the extra per-channel
  blocks the builder adds;
- ``infer`` (the output shape, refusing inputs it cannot take), ``flop`` (the work, a
  multiply-add counting 2), ``starter`` (the fields of a layer added in the editor) and
  ``label`` (a short description such as ``conv3x3/1 64``);
- ``te`` (the op as a te stage) and ``numpy`` (the float64 reference).

:mod:`playground.chain.spec` (validation, shapes, FLOPs), :mod:`playground.chain.compute`,
:mod:`playground.chain.reference`, the chain editor, the export and the ONNX importer read these
records; adding an op is one class in its family's module, listed in :data:`OPS`, plus its
tests.

Exported scripts embed these modules verbatim (they import only numpy; TVM is imported inside
the ``te`` builders, so that the spec reads the records without loading TVM), written to pass
the import safety scan: no names starting with ``__``, no imports beyond numpy and math.
"""

from playground.chain.ops.base import TENSOR
from playground.chain.ops.elementwise import Add, BatchNorm, BiasAdd, Clip, Relu, Relu6, Sigmoid
from playground.chain.ops.window import AvgPool2d, Conv2d, MaxPool2d

#: Every op by name, in the order the editor offers them.
OPS = {op.name: op for op in (Conv2d, MaxPool2d, AvgPool2d, BiasAdd, BatchNorm, Relu, Relu6,
                              Clip, Sigmoid, Add)}


def tensor_field(name):
    """The field of op ``name`` that names a second input tensor (``add``'s ``other``), or
    None: such an op reads two tensors of the chain."""
    return next((f["name"] for f in OPS[name].fields if f["kind"] == TENSOR), None)


def chain_shapes(chain):
    """The shape of the input (``data``) and of every layer's output, by name (the chain
    normalized and valid)."""
    shapes = {"data": list(chain["input"]["shape"])}
    current = shapes["data"]
    for layer in chain["layers"]:
        current = OPS[layer["op"]].infer(layer, current, shapes)
        shapes[layer["name"]] = current
    return shapes


def chain_flop(chain):
    """Floating-point operations the chain needs (a multiply-add counts 2), by formula."""
    shapes = chain_shapes(chain)
    total, previous = 0.0, "data"
    for layer in chain["layers"]:
        total += OPS[layer["op"]].flop(layer, shapes[previous], shapes[layer["name"]])
        previous = layer["name"]
    return total

"""The chain as a TensorIR function: one te stage per layer, named after the layer.

This module imports only tvm and the op table (:mod:`playground.chain.ops`, whose ``te``
builders make each layer's stages): exported scripts embed both verbatim, so that a script
rebuilds exactly the function the playground scheduled. It reads a *normalized* chain (see
:func:`playground.chain.spec.normalize_chain`).

Stages and therefore schedule blocks are named after the layers: a conv2d ``conv1`` gives a
block ``conv1_pad`` (only when it pads) and ``conv1``; a pooling layer ``maxpool1`` gives
``maxpool1_pad`` (when it pads: -inf for max, zeros for average) and ``maxpool1`` (loops ``n,
c, h, w, rh, rw``); a batch norm ``bn1`` gives ``bn1_scale``,
``bn1_shift`` (per-channel, computed once) and ``bn1``; every other layer gives one block of its
own name. Loop names are ``n, k, h, w`` (k: output channel) and ``rc, rh, rw`` for reductions,
so that ``split(h)`` yields ``h_0, h_1`` and exported schedules read well.
"""

import tvm
from tvm import te

from playground.chain.ops import OPS


def chain_tensors(chain):
    """Build the chain's te tensors.

    Returns
    -------
    (args, output)
        ``args`` are the placeholders in calling order: the input ``data``, then each layer's
        parameters in layer order (``conv1_weight``, ``bias1_bias``, ``bn1_gamma`` ...).
    """
    spec = chain["input"]
    data = te.placeholder(tuple(spec["shape"]), spec["dtype"], name="data")
    params = []
    tensors = {"data": data}
    x = data
    for layer in chain["layers"]:
        op = OPS[layer["op"]]
        mine = {suffix: te.placeholder(shape(layer, int(x.shape[1])), x.dtype,
                                       name=layer["name"] + suffix)
                for suffix, shape, _ in op.params}
        params.extend(mine.values())
        x = op.te(x, layer, mine, tensors)
        tensors[layer["name"]] = x
    return [data, *params], x


def chain_module(chain):
    """The chain as an IRModule with one PrimFunc ``main(data, params..., output)``."""
    args, output = chain_tensors(chain)
    return tvm.IRModule({"main": te.create_prim_func([*args, output])})

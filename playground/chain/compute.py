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
from tvm import s_tir, te

from playground.chain.ops import OPS
from playground.chain.winograd import TILES, winograd_conv, winograd_refusal


def chain_tensors(chain, winograd=None):
    """Build the chain's te tensors (``winograd``: conv layer name -> Winograd tile size m,
    for the convs built by F(m x m, 3x3)).

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
        if layer["name"] in (winograd or {}):
            x = winograd_conv(x, layer, mine["_weight"], winograd[layer["name"]])
        else:
            x = op.te(x, layer, mine, tensors)
        tensors[layer["name"]] = x
    return [data, *params], x


def chain_module(chain, winograd=None):
    """The chain as an IRModule with one PrimFunc ``main(data, params..., output)``; the convs
    named in ``winograd`` (name -> tile size m) by Winograd's F(m x m, 3x3)."""
    args, output = chain_tensors(chain, winograd)
    return tvm.IRModule({"main": te.create_prim_func([*args, output])})


def winograd_convs(sch, chain):
    """The convs of ``chain`` that ``sch`` computes by Winograd: name -> tile size m (read off
    the ``<conv>_Y`` blocks, whose second axis is m)."""
    out = {}
    for layer in chain["layers"]:
        if layer["op"] != "conv2d":
            continue
        try:
            block = sch.get(sch.get_sblock(layer["name"] + "_Y"))
        except Exception:  # no such block (TVM raises its own error type): a direct conv
            continue
        out[layer["name"]] = int(block.iter_vars[1].dom.extent)
    return out


def winograd(sch, chain, block, tile=2):
    """The schedule step ``winograd``: compute conv ``block`` by Winograd's F(tile x tile,
    3x3) from here on (see :mod:`playground.chain.winograd`).

    It is an algebraic rewrite, not a TensorIR primitive: it rebuilds the chain's function
    with that conv's stages swapped and returns a new schedule of it, to go on with (``sch``
    is left as it was). So it comes before every other step (several convs may each take
    one); anything else before it is refused, as is a conv it cannot compute.

    Raises
    ------
    ValueError
        One line: why it does not apply and what to do instead.
    """
    name = block if isinstance(block, str) else sch.get(block).name_hint
    layer = next((x for x in chain["layers"] if x["name"] == name), None)
    if layer is None:
        raise ValueError(f"{name} is not a layer of the chain: winograd takes a conv layer's "
                         "block (conv1, conv2 ...)")
    why = winograd_refusal(layer)
    if why:
        raise ValueError(why)
    if tile not in TILES:
        raise ValueError(f"tile must be one of {', '.join(map(str, TILES))}, got {tile!r}")
    done = winograd_convs(sch, chain)
    if name in done:
        raise ValueError(f"{name} is already computed by Winograd F({done[name]}x"
                         f"{done[name]}, 3x3)")
    try:
        tvm.ir.assert_structural_equal(sch.mod, chain_module(chain, done))
    except ValueError:
        raise ValueError("winograd rewrites the chain's program, so it must come before "
                         "every other step — undo to the start (or to the last winograd "
                         "step), apply it, then schedule") from None
    return s_tir.Schedule(chain_module(chain, {**done, name: tile}), error_render_level="detail")

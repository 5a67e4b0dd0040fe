"""The chain as a TensorIR function: one te stage per layer, named after the layer.

This module imports only tvm and numpy: exported scripts embed its source verbatim, so that a
script rebuilds exactly the function the playground scheduled. It reads a *normalized* chain
(see :func:`playground.chain.spec.normalize_chain`).

Stages and therefore schedule blocks are named after the layers: a conv2d ``conv1`` gives a
block ``conv1_pad`` (only when it pads) and ``conv1``; a pooling layer ``maxpool1`` gives
``maxpool1_pad`` (when it pads: -inf for max, zeros for average) and ``maxpool1`` (loops ``n,
c, h, w, rh, rw``); a batch norm ``bn1`` gives ``bn1_scale``,
``bn1_shift`` (per-channel, computed once) and ``bn1``; every other layer gives one block of its
own name. Loop names are ``n, k, h, w`` (k: output channel) and ``rc, rh, rw`` for reductions,
so that ``split(h)`` yields ``h_0, h_1`` and exported schedules read well.
"""

import tvm
from tvm import te, tirx


def _pad_stage(x, layer, value=0.0):
    """Padding (zeros, or ``value``) as its own stage, so that users can inline it or compute
    it at a tile."""
    pt, pl, pb, pr = layer["padding"]
    if not (pt or pl or pb or pr):
        return x
    n, c, h, w = (int(v) for v in x.shape)
    zero = tirx.const(value, x.dtype)

    def pad(n_, c_, h_, w_):
        inside = tirx.all(h_ >= pt, h_ < h + pt, w_ >= pl, w_ < w + pl)
        return tirx.if_then_else(inside, x[n_, c_, h_ - pt, w_ - pl], zero)

    # te names loop variables after the lambda's parameters.
    return te.compute((n, c, h + pt + pb, w + pl + pr),
                      lambda n, c, h, w: pad(n, c, h, w), name=layer["name"] + "_pad")


def _conv2d(x, layer, params):
    n, c, h, w = (int(v) for v in x.shape)
    k, groups = layer["channels"], layer["groups"]
    (kh, kw), (sh, sw), (dh, dw) = layer["kernel"], layer["stride"], layer["dilation"]
    pt, pl, pb, pr = layer["padding"]
    cpg, kpg = c // groups, k // groups
    weight = te.placeholder((k, cpg, kh, kw), x.dtype, name=layer["name"] + "_weight")
    params.append(weight)
    padded = _pad_stage(x, layer)
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    rc = te.reduce_axis((0, cpg), name="rc")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")

    def body(n, k, h, w):
        ci = rc if groups == 1 else k // kpg * cpg + rc
        return te.sum(padded[n, ci, h * sh + rh * dh, w * sw + rw * dw] * weight[k, rc, rh, rw],
                      axis=[rc, rh, rw])

    return te.compute((n, k, oh, ow), lambda n, k, h, w: body(n, k, h, w), name=layer["name"])


def _pool2d(x, layer):
    """Max or average pooling over kernel windows; the average divides by the window size
    (zero padding counted, as PyTorch's default)."""
    n, c, h, w = (int(v) for v in x.shape)
    (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
    pt, pl, pb, pr = layer["padding"]
    is_max = layer["op"] == "max_pool2d"
    padded = _pad_stage(x, layer, float("-inf") if is_max else 0.0)
    oh = (h + pt + pb - kh) // sh + 1
    ow = (w + pl + pr - kw) // sw + 1
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    if is_max:
        def body(n, c, h, w):
            return te.max(padded[n, c, h * sh + rh, w * sw + rw], axis=[rh, rw])
    else:
        scale = tirx.const(1.0 / (kh * kw), x.dtype)

        def body(n, c, h, w):
            return te.sum(padded[n, c, h * sh + rh, w * sw + rw] * scale, axis=[rh, rw])

    return te.compute((n, c, oh, ow), lambda n, c, h, w: body(n, c, h, w), name=layer["name"])


def _elementwise(x, layer, params, tensors):
    name, op, dtype = layer["name"], layer["op"], x.dtype
    c = int(x.shape[1])
    if op == "relu":
        return te.compute(x.shape, lambda n, c, h, w: te.max(x[n, c, h, w],
                                                             tirx.const(0, dtype)), name=name)
    if op in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if op == "relu6" else (layer["min"], layer["max"])
        return te.compute(x.shape, lambda n, c, h, w: te.min(
            te.max(x[n, c, h, w], tirx.const(lo, dtype)), tirx.const(hi, dtype)), name=name)
    if op == "bias_add":
        bias = te.placeholder((c,), dtype, name=name + "_bias")
        params.append(bias)
        return te.compute(x.shape, lambda n, c, h, w: x[n, c, h, w] + bias[c], name=name)
    if op == "batch_norm":
        gamma, beta, mean, var = (te.placeholder((c,), dtype, name=f"{name}_{p}")
                                  for p in ("gamma", "beta", "mean", "var"))
        params.extend([gamma, beta, mean, var])
        eps = tirx.const(layer["eps"], dtype)
        scale = te.compute((c,), lambda c: gamma[c] / te.sqrt(var[c] + eps), name=name + "_scale")
        shift = te.compute((c,), lambda c: beta[c] - mean[c] * scale[c], name=name + "_shift")
        return te.compute(x.shape, lambda n, c, h, w: x[n, c, h, w] * scale[c] + shift[c],
                          name=name)
    if op == "add":
        other = tensors[layer["other"]]
        return te.compute(x.shape, lambda n, c, h, w: x[n, c, h, w] + other[n, c, h, w],
                          name=name)
    raise ValueError(f"unknown op {op!r}")


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
        if layer["op"] == "conv2d":
            x = _conv2d(x, layer, params)
        elif layer["op"] in ("max_pool2d", "avg_pool2d"):
            x = _pool2d(x, layer)
        else:
            x = _elementwise(x, layer, params, tensors)
        tensors[layer["name"]] = x
    return [data, *params], x


def chain_module(chain):
    """The chain as an IRModule with one PrimFunc ``main(data, params..., output)``."""
    args, output = chain_tensors(chain)
    return tvm.IRModule({"main": te.create_prim_func([*args, output])})

"""Ops that keep the shape: one value in, one out, per element (with per-channel parameters
or a second tensor)."""

import numpy as np

from playground.chain.ops.base import FLOAT, TENSOR, LayerError, Op, field


def _per_channel(low, high):
    """A parameter of one value per channel, drawn from [low, high)."""
    return lambda layer, c: (c,), lambda layer, c: (low, high)


def _te_map(x, layer, fn):
    """An elementwise stage named after the layer: ``fn(value, channel)`` per element."""
    from tvm import te

    return te.compute(x.shape, lambda n, c, h, w: fn(x[n, c, h, w], c), name=layer["name"])


def _te_clip(x, layer, lo, hi):
    from tvm import te, tirx

    lo, hi = tirx.const(lo, x.dtype), tirx.const(hi, x.dtype)
    return _te_map(x, layer, lambda v, c: te.min(te.max(v, lo), hi))


class BiasAdd(Op):
    """Adds one learned value per channel."""

    name, prefix, short = "bias_add", "bias", "bias"
    params = (("_bias", *_per_channel(-0.5, 0.5)),)

    @staticmethod
    def te(x, layer, params, tensors):
        return _te_map(x, layer, lambda v, c: v + params["_bias"][c])

    @staticmethod
    def numpy(x, layer, params, tensors):
        return x + params["_bias"][None, :, None, None]


class BatchNorm(Op):
    """Batch normalization in inference form: (x - mean) / sqrt(var + eps) * gamma + beta,
    folded per channel into a scale and a shift (blocks ``<name>_scale``, ``<name>_shift``,
    computed once)."""

    name, prefix, short = "batch_norm", "bn", "bn"
    fields = (field("eps", FLOAT, 1e-5, step=1e-5, shown="%.1e"),)
    params = (("_gamma", *_per_channel(0.5, 1.5)), ("_beta", *_per_channel(-0.5, 0.5)),
              ("_mean", *_per_channel(-0.5, 0.5)), ("_var", *_per_channel(0.5, 1.5)))
    helpers = ("_scale", "_shift")

    @staticmethod
    def check(layer):
        if layer["eps"] <= 0:
            raise LayerError("eps", f"eps must be > 0, got {layer['eps']}")

    @staticmethod
    def te(x, layer, params, tensors):
        from tvm import te, tirx

        name, c = layer["name"], int(x.shape[1])
        gamma, beta, mean, var = (params[s] for s in ("_gamma", "_beta", "_mean", "_var"))
        eps = tirx.const(layer["eps"], x.dtype)
        scale = te.compute((c,), lambda c: gamma[c] / te.sqrt(var[c] + eps), name=name + "_scale")
        shift = te.compute((c,), lambda c: beta[c] - mean[c] * scale[c], name=name + "_shift")
        return _te_map(x, layer, lambda v, c: v * scale[c] + shift[c])

    @staticmethod
    def numpy(x, layer, params, tensors):
        scale = params["_gamma"] / np.sqrt(params["_var"] + layer["eps"])
        shift = params["_beta"] - params["_mean"] * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class Relu(Op):
    """max(x, 0)."""

    name, prefix, onnx = "relu", "relu", ("Relu",)

    @staticmethod
    def te(x, layer, params, tensors):
        from tvm import te, tirx

        return _te_map(x, layer, lambda v, c: te.max(v, tirx.const(0, x.dtype)))

    @staticmethod
    def numpy(x, layer, params, tensors):
        return np.maximum(x, 0.0)


class Relu6(Op):
    """min(max(x, 0), 6)."""

    name, prefix = "relu6", "relu6_"

    @staticmethod
    def te(x, layer, params, tensors):
        return _te_clip(x, layer, 0.0, 6.0)

    @staticmethod
    def numpy(x, layer, params, tensors):
        return np.clip(x, 0.0, 6.0)


class Clip(Op):
    """min(max(x, min), max)."""

    name, prefix = "clip", "clip"
    fields = (field("min", FLOAT, 0.0, step=0.5), field("max", FLOAT, 6.0, step=0.5))

    @staticmethod
    def check(layer):
        if layer["min"] > layer["max"]:
            raise LayerError("max", f"min {layer['min']} is larger than max {layer['max']}")

    @staticmethod
    def te(x, layer, params, tensors):
        return _te_clip(x, layer, layer["min"], layer["max"])

    @staticmethod
    def numpy(x, layer, params, tensors):
        return np.clip(x, layer["min"], layer["max"])


class Sigmoid(Op):
    """1 / (1 + exp(-x))."""

    name, prefix, onnx = "sigmoid", "sigmoid", ("Sigmoid",)

    @staticmethod
    def te(x, layer, params, tensors):
        from tvm import te

        return _te_map(x, layer, lambda v, c: te.sigmoid(v))

    @staticmethod
    def numpy(x, layer, params, tensors):
        return 1.0 / (1.0 + np.exp(-x))


class Add(Op):
    """Adds an earlier tensor of the same shape (a residual connection)."""

    name, prefix = "add", "add"
    fields = (field("other", TENSOR, label="other (added tensor)"),)

    @staticmethod
    def infer(layer, shape, shapes):
        other = layer["other"]
        if other not in shapes:
            raise LayerError("other", f"add refers to {other!r}, which is not an earlier layer "
                                      f"(earlier: {', '.join(shapes)})")
        if shapes[other] != list(shape):
            raise LayerError("other", f"cannot add {other} of shape {shapes[other]} to a "
                                      f"tensor of shape {list(shape)}")
        return list(shape)

    @staticmethod
    def starter(shapes, last):
        same = [n for n, s in shapes.items() if s == shapes[last] and n != last]
        return {"other": same[-1] if same else last}

    @staticmethod
    def te(x, layer, params, tensors):
        from tvm import te

        other = tensors[layer["other"]]
        return te.compute(x.shape, lambda n, c, h, w: x[n, c, h, w] + other[n, c, h, w],
                          name=layer["name"])

    @staticmethod
    def numpy(x, layer, params, tensors):
        return x + tensors[layer["other"]]

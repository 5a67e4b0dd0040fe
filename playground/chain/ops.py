"""The layer ops: one record per op, and the only place that knows what an op is.

Each op is a class below (a record: class attributes and static methods, never instantiated)
listed in :data:`OPS`. It carries every per-op fact the playground uses:

- ``name`` (what a layer's ``"op"`` says), ``prefix`` (automatic names: ``conv1``, ``bn2``),
  ``kind`` (``"conv"`` and ``"pool"`` slide a window over their input and may pad it, so they
  change H and W; ``"elementwise"`` ops keep the shape), ``onnx`` (ONNX op types that map to
  the op one to one, without attributes);
- ``fields``: the layer's fields in normalized order, with defaults, limits and how the
  editor shows them (:func:`field`), and ``check`` (what spans several fields);
- ``params``: the op's inputs after ``data`` (weights...), in calling order, with their shapes
  and the range their random values are drawn from; ``helpers``: the extra per-channel
  blocks the builder adds;
- ``infer`` (the output shape, refusing inputs it cannot take), ``flop`` (the work, a
  multiply-add counting 2), ``starter`` (the fields of a layer added in the editor) and
  ``label`` (a short description such as ``conv3x3/1 64``);
- ``te`` (the op as a te stage) and ``numpy`` (the float64 reference).

:mod:`playground.chain.spec` (validation, shapes, FLOPs), :mod:`playground.chain.compute`,
:mod:`playground.chain.reference`, the chain editor, the export and the ONNX importer read these
records; adding an op is one class here, listed in :data:`OPS`, plus its tests.

Exported scripts embed this module verbatim (it imports only numpy; TVM is imported inside the
``te`` builders, so that the spec reads the records without loading TVM) and it is written to
pass the import safety scan: no names starting with ``__``, no imports beyond numpy and math.
"""

import math

import numpy as np

#: Field kinds: one integer, an (h, w) pair, four paddings (top, left, bottom, right; two in
#: the editor), a number, the name of an earlier tensor.
INT, PAIR, SIDES, FLOAT, TENSOR = "int", "pair", "sides", "float", "tensor"


class LayerError(ValueError):
    """A layer that cannot be built: ``LayerError(field, message)``; the spec adds the layer."""


def field(name, kind, default=None, *, minimum=1, label="", required="", optional=False,
          editable=True, step=None, shown=None, tip=""):
    """One field of an op's layers.

    ``default`` (a value, or a function of the layer's fields before this one) fills it in
    when absent; ``required`` (what it means) makes it mandatory; ``optional`` leaves it out
    when absent. ``label``, ``step``, ``shown`` (a printf format), ``tip`` and ``editable``
    are for the chain editor.
    """
    return {"name": name, "kind": kind, "default": default, "minimum": minimum,
            "label": label or name, "required": required, "optional": optional,
            "editable": editable, "step": step, "shown": shown, "tip": tip}


def window_hw(h, w, layer):
    """Output height and width of a window layer on an h x w input (may be <= 0)."""
    (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
    (dh, dw), (pt, pl, pb, pr) = layer.get("dilation", (1, 1)), layer["padding"]
    return (h + pt + pb - (kh - 1) * dh - 1) // sh + 1, (w + pl + pr - (kw - 1) * dw - 1) // sw + 1


def _per_channel(low, high):
    """A parameter of one value per channel, drawn from [low, high)."""
    return lambda layer, c: (c,), lambda layer, c: (low, high)


class Op:
    """The defaults every op record starts from.

    Each op also defines ``te(x, layer, params, tensors)``, its te stage(s) on the te tensor
    ``x`` (``params``: its parameters' placeholders by suffix, ``tensors``: the earlier layers'
    outputs by name), and ``numpy(x, layer, params, tensors)``, the same on float64 arrays.
    """

    name = ""
    prefix = ""
    short = ""  # in one-line descriptions of a chain; the name when empty
    kind = "elementwise"
    onnx = ()
    fields = ()
    params = ()  # (suffix, shape(layer, channels), (low, high)(layer, channels))
    helpers = ()  # suffixes of the per-channel blocks the builder adds (bn1_scale)

    @staticmethod
    def check(layer):
        """Raise :class:`LayerError` when the fields disagree (each is valid on its own)."""

    @staticmethod
    def infer(layer, shape, shapes):
        """The output shape for an input of ``shape`` (``shapes``: the earlier tensors')."""
        return list(shape)

    @staticmethod
    def flop(layer, shape, out):
        """Floating-point operations from input ``shape`` to output ``out``: one per element."""
        return float(math.prod(out))

    @staticmethod
    def starter(shapes, last):
        """The fields of a layer of this op added after tensor ``last`` in the editor."""
        return {}

    @classmethod
    def label(cls, layer):
        return cls.short or cls.name


# ----------------------------------------------------------------------------- window ops

def _te_pad(x, layer, value=0.0):
    """Padding (zeros, or ``value``) as its own stage ``<name>_pad``, so that users can inline
    it or compute it at a tile."""
    from tvm import te, tirx

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


def _np_windows(x, layer, fill=0.0):
    """windows[n, c, y, x, i, j] = padded x[n, c, y*sh + i*dh, x*sw + j*dw], in float64."""
    pt, pl, pb, pr = layer["padding"]
    x = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)),
               constant_values=fill)
    (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
    dh, dw = layer.get("dilation", (1, 1))
    oh, ow = window_hw(x.shape[2], x.shape[3], dict(layer, padding=[0, 0, 0, 0]))
    windows = np.lib.stride_tricks.sliding_window_view(
        x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return windows[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def conv2d_nchw(x, weight, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """2-D convolution (cross-correlation, like TVM and PyTorch) in float64.

    ``padding`` is (top, left, bottom, right). One matrix product per (image, group) over a
    strided window view (im2col without copying every window into a Python loop), so the
    seed's 12.9 GFLOP convolution checks in a few seconds on 2 cores.
    """
    weight = np.asarray(weight, dtype=np.float64)
    k, cpg, kh, kw = weight.shape
    windows = _np_windows(x, {"kernel": [kh, kw], "stride": stride, "padding": padding,
                              "dilation": dilation})
    n, _, oh, ow = windows.shape[:4]
    kpg = k // groups
    out = np.empty((n, k, oh, ow))
    for g in range(groups):
        wg = weight[g * kpg:(g + 1) * kpg].reshape(kpg, -1)  # (kpg, cpg*kh*kw)
        for i in range(n):
            cols = windows[i, g * cpg:(g + 1) * cpg].transpose(1, 2, 0, 3, 4)
            cols = cols.reshape(oh * ow, cpg * kh * kw)
            out[i, g * kpg:(g + 1) * kpg] = (cols @ wg.T).T.reshape(kpg, oh, ow)
    return out


def _fan_in_bounds(layer, c):
    """Weights drawn from +-1/sqrt(fan-in): activations stay O(1) through a deep chain."""
    bound = 1.0 / np.sqrt(c // layer["groups"] * math.prod(layer["kernel"]))
    return -bound, bound


class Conv2d(Op):
    """2-D convolution (cross-correlation), grouped or depthwise; pads with zeros."""

    name, prefix, short, kind = "conv2d", "conv", "conv", "conv"
    fields = (
        field("channels", INT, required="output channels"),
        field("kernel", PAIR, 3),
        field("stride", PAIR, 1),
        field("padding", SIDES, 0, minimum=0, label="pad"),
        field("dilation", PAIR, 1, label="dilate"),
        field("groups", INT, 1),
        # The input channels the weight was made for: filled in from the incoming tensor
        # when absent, refused when it disagrees.
        field("in_channels", INT, optional=True, label="in ch.",
              tip="Optional: the input channels this conv's weight was made for. Empty: "
                  "whatever the layer before gives. Set, it is checked against the tensor "
                  "the layer receives (a 3-channel weight after a 10-channel layer is "
                  "refused, as the forum's program should have been)."),
    )
    params = (("_weight",
               lambda layer, c: (layer["channels"], c // layer["groups"], *layer["kernel"]),
               _fan_in_bounds),)

    @staticmethod
    def infer(layer, shape, shapes):
        n, c, h, w = shape
        g, k = layer["groups"], layer["channels"]
        kh, kw = layer["kernel"]
        if c % g:
            raise LayerError("groups", f"groups={g} does not divide its {c} input channels")
        if k % g:
            raise LayerError("groups", f"groups={g} does not divide its {k} output channels")
        expected = layer.get("in_channels", c)
        if expected != c:
            dims = f"{k}x{expected // g if expected % g == 0 else expected}x{kh}x{kw}"
            raise LayerError("in_channels", f"expects {expected} input channels (weight "
                                            f"{dims}) but receives {c}")
        oh, ow = window_hw(h, w, layer)
        if oh < 1 or ow < 1:
            (dh, dw), (pt, pl, pb, pr) = layer["dilation"], layer["padding"]
            raise LayerError("kernel", f"kernel {kh}x{kw} (dilated extent {(kh - 1) * dh + 1}x"
                                       f"{(kw - 1) * dw + 1}) is larger than its padded input "
                                       f"{h + pt + pb}x{w + pl + pr}")
        return [n, k, oh, ow]

    @staticmethod
    def flop(layer, shape, out):
        return 2.0 * math.prod(out) * (shape[1] // layer["groups"]) * math.prod(layer["kernel"])

    @staticmethod
    def starter(shapes, last):
        return {"channels": shapes[last][1], "kernel": 3, "padding": 1}

    @staticmethod
    def label(layer):
        (kh, kw), (sh, _) = layer["kernel"], layer["stride"]
        g = layer["groups"]
        dw = " dw" if g > 1 and g == layer.get("in_channels") else (f" g{g}" if g > 1 else "")
        return f"conv{kh}x{kw}/{sh}{dw} {layer['channels']}"

    @staticmethod
    def te(x, layer, params, tensors):
        from tvm import te

        n, c, h, w = (int(v) for v in x.shape)
        k, groups = layer["channels"], layer["groups"]
        (sh, sw), (dh, dw) = layer["stride"], layer["dilation"]
        cpg, kpg = c // groups, k // groups
        weight = params["_weight"]
        padded = _te_pad(x, layer)
        oh, ow = window_hw(h, w, layer)
        rc = te.reduce_axis((0, cpg), name="rc")
        rh = te.reduce_axis((0, layer["kernel"][0]), name="rh")
        rw = te.reduce_axis((0, layer["kernel"][1]), name="rw")

        def body(n, k, h, w):
            ci = rc if groups == 1 else k // kpg * cpg + rc
            return te.sum(padded[n, ci, h * sh + rh * dh, w * sw + rw * dw]
                          * weight[k, rc, rh, rw], axis=[rc, rh, rw])

        return te.compute((n, k, oh, ow), lambda n, k, h, w: body(n, k, h, w),
                          name=layer["name"])

    @staticmethod
    def numpy(x, layer, params, tensors):
        return conv2d_nchw(x, params["_weight"], layer["stride"], layer["padding"],
                           layer["dilation"], layer["groups"])


class _Pool(Op):
    """Pooling as torch.nn.functional.max_pool2d / avg_pool2d: floor mode; stride defaults to
    the kernel; an average counts the zero padding (count_include_pad=True, PyTorch's
    default); max pooling pads with -inf, so padding never wins a maximum."""

    kind = "pool"
    fields = (
        field("kernel", PAIR, 2),
        field("stride", PAIR, lambda layer: layer["kernel"]),
        field("padding", SIDES, 0, minimum=0, label="pad"),
        field("dilation", PAIR, 1, editable=False),
    )
    is_max = True

    @staticmethod
    def check(layer):
        if layer["dilation"] != [1, 1]:
            raise LayerError("dilation", f"pooling supports dilation 1 only, got "
                                         f"{layer['dilation']}")
        (kh, kw), (pt, pl, pb, pr) = layer["kernel"], layer["padding"]
        if max(pt, pb) * 2 > kh or max(pl, pr) * 2 > kw:
            raise LayerError("padding", f"padding {layer['padding']} must be at most half the "
                                        f"kernel {kh}x{kw} (as in PyTorch)")

    @staticmethod
    def infer(layer, shape, shapes):
        n, c, h, w = shape
        oh, ow = window_hw(h, w, layer)
        if oh < 1 or ow < 1:
            kh, kw = layer["kernel"]
            raise LayerError("kernel", f"window {kh}x{kw} is larger than its input {h}x{w}")
        return [n, c, oh, ow]

    @staticmethod
    def flop(layer, shape, out):
        return float(math.prod(out)) * math.prod(layer["kernel"])  # a max or add per element

    @staticmethod
    def starter(shapes, last):
        return {"kernel": 2, "stride": 2}

    @classmethod
    def label(cls, layer):
        (kh, kw), (sh, _) = layer["kernel"], layer["stride"]
        return f"{cls.prefix}{kh}x{kw}/{sh}"

    @classmethod
    def te(cls, x, layer, params, tensors):
        from tvm import te, tirx

        n, c, h, w = (int(v) for v in x.shape)
        (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
        padded = _te_pad(x, layer, float("-inf") if cls.is_max else 0.0)
        oh, ow = window_hw(h, w, layer)
        rh = te.reduce_axis((0, kh), name="rh")
        rw = te.reduce_axis((0, kw), name="rw")
        scale = tirx.const(1.0 / (kh * kw), x.dtype)

        def body(n, c, h, w):
            v = padded[n, c, h * sh + rh, w * sw + rw]
            return te.max(v, axis=[rh, rw]) if cls.is_max else te.sum(v * scale, axis=[rh, rw])

        return te.compute((n, c, oh, ow), lambda n, c, h, w: body(n, c, h, w),
                          name=layer["name"])

    @classmethod
    def numpy(cls, x, layer, params, tensors):
        if cls.is_max:
            return _np_windows(x, layer, -np.inf).max(axis=(4, 5))
        return _np_windows(x, layer).sum(axis=(4, 5)) / math.prod(layer["kernel"])


class MaxPool2d(_Pool):
    """Maximum over each window (padding never wins)."""

    name, prefix = "max_pool2d", "maxpool"


class AvgPool2d(_Pool):
    """Average over each window, zero padding counted."""

    name, prefix, is_max = "avg_pool2d", "avgpool", False


# ----------------------------------------------------------------------------- elementwise

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

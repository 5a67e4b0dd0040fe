"""Ops that slide a window over their input and may pad it: convolution and pooling."""

import math

import numpy as np

from playground.chain.ops.base import INT, PAIR, SIDES, LayerError, Op, field, window_hw


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

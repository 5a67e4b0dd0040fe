"""Numpy reference for a chain, in float64, independent of TVM; and the chain's inputs.

Like :mod:`playground.chain.compute` this module needs only numpy, and exported scripts embed its
source, so that a script checks its kernel against the same reference the playground uses.

Convolutions go through one matrix product per (image, group) over a strided window view
(im2col without the copy of every window into a Python loop), so the seed's 12.9 GFLOP
convolution checks in a few seconds on 2 cores.
"""

import numpy as np

_TOLERANCE = {"float32": (1e-4, 1e-4), "float16": (2e-2, 2e-2)}  # (rtol, atol) per dtype


def tolerance(dtype):
    """(rtol, atol) to compare a kernel's output of ``dtype`` with the float64 reference."""
    return _TOLERANCE[dtype]


def make_inputs(chain, seed=0):
    """Random inputs for every argument of the chain's function, in calling order.

    Returns a list of ``(name, array)``: ``data`` first, then each layer's parameters, as the
    function built by :func:`playground.chain.compute.chain_tensors` expects them. Values are scaled
    so that activations stay O(1) through a deep chain (weights ~ 1/sqrt(fan-in)).
    """
    rng = np.random.default_rng(seed)
    spec = chain["input"]
    dtype = spec["dtype"]
    shape = list(spec["shape"])
    out = [("data", rng.uniform(-1.0, 1.0, size=shape))]
    c = shape[1]
    for layer in chain["layers"]:
        name, op = layer["name"], layer["op"]
        if op == "conv2d":
            kh, kw = layer["kernel"]
            cpg = c // layer["groups"]
            bound = 1.0 / np.sqrt(cpg * kh * kw)
            weight = rng.uniform(-bound, bound, size=(layer["channels"], cpg, kh, kw))
            out.append((name + "_weight", weight))
            c = layer["channels"]
        elif op == "bias_add":
            out.append((name + "_bias", rng.uniform(-0.5, 0.5, size=(c,))))
        elif op == "batch_norm":
            out.append((name + "_gamma", rng.uniform(0.5, 1.5, size=(c,))))
            out.append((name + "_beta", rng.uniform(-0.5, 0.5, size=(c,))))
            out.append((name + "_mean", rng.uniform(-0.5, 0.5, size=(c,))))
            out.append((name + "_var", rng.uniform(0.5, 1.5, size=(c,))))
    return [(name, np.ascontiguousarray(a.astype(dtype))) for name, a in out]


def conv2d_nchw(x, weight, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """2-D convolution (cross-correlation, like TVM and PyTorch) in float64.

    ``padding`` is (top, left, bottom, right).
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    pt, pl, pb, pr = padding
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, _, h, w = x.shape
    k, cpg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    kpg = k // groups
    out = np.empty((n, k, oh, ow))
    for g in range(groups):
        xg = x[:, g * cpg:(g + 1) * cpg]
        # windows[n, c, y, x, i, j] = xg[n, c, y*sh + i*dh, x*sw + j*dw]
        windows = np.lib.stride_tricks.sliding_window_view(xg, (eh, ew), axis=(2, 3))
        windows = windows[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]
        wg = weight[g * kpg:(g + 1) * kpg].reshape(kpg, -1)  # (kpg, cpg*kh*kw)
        for i in range(n):
            cols = windows[i].transpose(1, 2, 0, 3, 4).reshape(oh * ow, cpg * kh * kw)
            out[i, g * kpg:(g + 1) * kpg] = (cols @ wg.T).T.reshape(kpg, oh, ow)
    return out


def pool2d_nchw(x, kind, kernel, stride, padding):
    """Max or average pooling in float64 (floor mode; the average counts zero padding)."""
    pt, pl, pb, pr = padding
    fill = -np.inf if kind == "max_pool2d" else 0.0
    x = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)),
               constant_values=fill)
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw][:, :, :oh, :ow]
    if kind == "max_pool2d":
        return windows.max(axis=(4, 5))
    return windows.sum(axis=(4, 5)) / (kh * kw)


def reference_output(chain, inputs):
    """The chain's output for ``inputs`` (as from :func:`make_inputs`), in float64."""
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in inputs}
    tensors = {"data": arrays["data"]}
    x = arrays["data"]
    for layer in chain["layers"]:
        name, op = layer["name"], layer["op"]
        if op == "conv2d":
            x = conv2d_nchw(x, arrays[name + "_weight"], layer["stride"], layer["padding"],
                            layer["dilation"], layer["groups"])
        elif op in ("max_pool2d", "avg_pool2d"):
            x = pool2d_nchw(x, op, layer["kernel"], layer["stride"], layer["padding"])
        elif op == "relu":
            x = np.maximum(x, 0.0)
        elif op == "relu6":
            x = np.clip(x, 0.0, 6.0)
        elif op == "clip":
            x = np.clip(x, layer["min"], layer["max"])
        elif op == "bias_add":
            x = x + arrays[name + "_bias"][None, :, None, None]
        elif op == "batch_norm":
            scale = arrays[name + "_gamma"] / np.sqrt(arrays[name + "_var"] + layer["eps"])
            shift = arrays[name + "_beta"] - arrays[name + "_mean"] * scale
            x = x * scale[None, :, None, None] + shift[None, :, None, None]
        elif op == "add":
            x = x + tensors[layer["other"]]
        else:
            raise ValueError(f"unknown op {op!r}")
        tensors[name] = x
    return x


def compare(actual, expected, dtype):
    """Compare a kernel's output with the reference: shape, then dtype, then values.

    Returns a dict with ``correct``, ``max_abs_error``, ``max_rel_error``, ``mismatches``
    (elements outside tolerance), ``nonfinite`` (NaN/inf: e.g. elements the kernel never wrote
    over the poisoned output) and ``message`` (one line).
    """
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return {"correct": False, "max_abs_error": float("inf"), "max_rel_error": float("inf"),
                "mismatches": int(expected.size), "nonfinite": 0,
                "message": f"shape {list(actual.shape)} != expected {list(expected.shape)}"}
    if str(actual.dtype) != dtype:
        return {"correct": False, "max_abs_error": float("inf"), "max_rel_error": float("inf"),
                "mismatches": int(expected.size), "nonfinite": 0,
                "message": f"dtype {actual.dtype} != expected {dtype}"}
    rtol, atol = tolerance(dtype)
    a = actual.astype(np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(a)))
    diff = np.abs(a - expected)
    diff[~np.isfinite(diff)] = np.inf
    rel = diff / np.maximum(np.abs(expected), atol)
    bad = diff > atol + rtol * np.abs(expected)
    mismatches = int(np.count_nonzero(bad))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    if mismatches:
        first = np.unravel_index(int(np.argmax(bad)), bad.shape)
        message = (f"{mismatches} of {expected.size} elements differ (first at "
                   f"{list(map(int, first))}: {a[first]!r} vs {expected[first]!r}); "
                   f"{nonfinite} not finite (never written?)")
    else:
        message = f"matches the float64 reference (rtol {rtol}, atol {atol})"
    return {"correct": mismatches == 0, "max_abs_error": max_abs, "max_rel_error": max_rel,
            "mismatches": mismatches, "nonfinite": nonfinite, "message": message}

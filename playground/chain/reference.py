"""Numpy reference for a chain, in float64, independent of TVM; and the chain's inputs.

Like :mod:`playground.chain.compute` this module needs only numpy and the op table (each op's
``numpy`` function in :mod:`playground.chain.ops` is its reference), and exported scripts embed
its source, so that a script checks its kernel against the same reference the playground uses.
"""

import numpy as np

from playground.chain.ops import OPS, chain_shapes

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
    shapes = chain_shapes(chain)
    previous = "data"
    for layer in chain["layers"]:
        c = shapes[previous][1]
        for suffix, shape_of, bounds in OPS[layer["op"]].params:
            low, high = bounds(layer, c)
            out.append((layer["name"] + suffix, rng.uniform(low, high, size=shape_of(layer, c))))
        previous = layer["name"]
    return [(name, np.ascontiguousarray(a.astype(dtype))) for name, a in out]


def reference_output(chain, inputs):
    """The chain's output for ``inputs`` (as from :func:`make_inputs`), in float64."""
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in inputs}
    tensors = {"data": arrays["data"]}
    x = arrays["data"]
    for layer in chain["layers"]:
        op = OPS[layer["op"]]
        x = op.numpy(x, layer, {s: arrays[layer["name"] + s] for s, _, _ in op.params}, tensors)
        tensors[layer["name"]] = x
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

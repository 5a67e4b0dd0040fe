"""The numpy reference against TVM-free formulas, and the comparison helper."""

import numpy as np
import pytest

from playground.chain.ops.window import conv2d_nchw
from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import normalize_chain


def naive_conv(x, w, stride, padding, dilation, groups):
    pt, pl, pb, pr = padding
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, _c, h, wd = x.shape
    k, cpg, kh, kw = w.shape
    oh = (h - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (wd - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((n, k, oh, ow))
    for o in range(k):
        g = o // (k // groups)
        for y in range(oh):
            for z in range(ow):
                patch = x[:, g * cpg:(g + 1) * cpg,
                          y * stride[0]:y * stride[0] + (kh - 1) * dilation[0] + 1:dilation[0],
                          z * stride[1]:z * stride[1] + (kw - 1) * dilation[1] + 1:dilation[1]]
                out[:, o, y, z] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), [
    ((1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((2, 1), (1, 2, 0, 1), (1, 1), 1),
    ((1, 2), (2, 2, 2, 2), (2, 1), 2),
    ((1, 1), (1, 1, 1, 1), (1, 1), 4),
])
def test_conv_matches_a_naive_loop(stride, padding, dilation, groups):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 11))
    w = rng.standard_normal((8, 4 // groups, 3, 2))
    np.testing.assert_allclose(conv2d_nchw(x, w, stride, padding, dilation, groups),
                               naive_conv(x, w, stride, padding, dilation, groups), rtol=1e-12,
                               atol=1e-12)


def test_elementwise_layers_and_residual():
    chain = normalize_chain({"input": {"shape": [1, 2, 3, 3]}, "layers": [
        {"op": "bias_add"}, {"op": "batch_norm", "eps": 0.5}, {"op": "relu6"},
        {"op": "add", "other": "data"}, {"op": "clip", "min": -1, "max": 1}, {"op": "relu"}]})
    inputs = make_inputs(chain, 3)
    a = {k: v.astype(np.float64) for k, v in inputs}
    x = a["data"] + a["bias1_bias"][None, :, None, None]
    scale = a["bn1_gamma"] / np.sqrt(a["bn1_var"] + 0.5)
    x = (x - a["bn1_mean"][None, :, None, None]) * scale[None, :, None, None] \
        + a["bn1_beta"][None, :, None, None]
    x = np.maximum(np.clip(np.clip(x, 0, 6) + a["data"], -1, 1), 0)
    np.testing.assert_allclose(reference_output(chain, inputs), x, rtol=1e-12)


def test_inputs_are_deterministic_and_in_calling_order():
    chain = normalize_chain({"input": {"shape": [1, 2, 5, 5]}, "layers": [
        {"op": "conv2d", "channels": 3}, {"op": "bias_add"}]})
    first, second = make_inputs(chain, 7), make_inputs(chain, 7)
    assert [n for n, _ in first] == ["data", "conv1_weight", "bias1_bias"]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, second, strict=True))


def test_compare_reports_shape_dtype_mismatches_and_unwritten_elements():
    expected = np.ones((2, 3))
    assert compare(np.ones((3, 2), "float32"), expected, "float32")["message"].startswith(
        "shape [3, 2] != expected [2, 3]")
    assert not compare(np.ones((2, 3), "float64"), expected, "float32")["correct"]
    poisoned = np.ones((2, 3), "float32")
    poisoned[1, 2] = np.nan
    result = compare(poisoned, expected, "float32")
    assert not result["correct"] and result["nonfinite"] == 1 and result["mismatches"] == 1
    assert compare(np.ones((2, 3), "float32") + 1e-6, expected, "float32")["correct"]

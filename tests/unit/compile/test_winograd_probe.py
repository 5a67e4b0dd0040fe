"""The Winograd probe of the benchmark (``benchmarks/winograd_probe.py``): its hand-scheduled
F(m x m, 3x3) kernels compute the chain, checked against the float64 reference on a
NaN-filled output, whole-image and in chunks of tile rows, on sizes the tiles do not divide;
and it takes only the chains it can compute."""

from __future__ import annotations

import sys

import paths
import pytest

from playground.chain.spec import normalize_chain

sys.path.insert(0, str(paths.ROOT / "benchmarks"))
from winograd_probe import eligible, winograd_competitor

CONV3 = {"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1}


@pytest.mark.parametrize(("shape", "tail", "m", "rows"), [
    ([1, 16, 8, 8], [{"op": "batch_norm"}, {"op": "relu"}], 2, 0),
    ([2, 32, 7, 5], [{"op": "batch_norm"}, {"op": "add", "other": "data"}, {"op": "relu"}], 2, 2),
    ([1, 8, 9, 10], [], 4, 1),
])
def test_the_kernels_compute_the_chain(shape, tail, m, rows):
    chain = normalize_chain({"input": {"shape": shape}, "layers": [CONV3, *tail]})
    assert eligible(chain) is not None
    competitor, error = winograd_competitor(chain, m, lanes=8, rows=rows)
    assert competitor is not None, error  # the message of the comparison when it is wrong
    assert error < 0.05 and competitor.sample() > 0


@pytest.mark.parametrize("layer", [
    {**CONV3, "stride": 2}, {**CONV3, "kernel": 5, "padding": 2}, {**CONV3, "dilation": 2},
    {**CONV3, "channels": 16, "groups": 16}, {**CONV3, "padding": 0},
])
def test_only_padded_3x3_stride_1_dense_convs_are_taken(layer):
    assert eligible(normalize_chain({"input": {"shape": [1, 16, 8, 8]},
                                     "layers": [layer]})) is None
    after_pool = {"input": {"shape": [1, 16, 8, 8]},
                  "layers": [CONV3, {"op": "max_pool2d", "kernel": 2}]}
    assert eligible(normalize_chain(after_pool)) is None

"""The benchmark's chain -> ONNX export (``benchmarks/onnx_chain.py``) against the numpy
reference: every op the chains use, run by ONNX's own reference evaluator (pure numpy, part of
the ``onnx`` package, which the app pins for model import). ONNX Runtime is a benchmark-only
dependency: ``auto_bench.py`` checks its output against the reference before timing it."""

from __future__ import annotations

import sys

import paths
import pytest

from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import normalize_chain

sys.path.insert(0, str(paths.ROOT / "benchmarks"))
from onnx_chain import chain_to_onnx

#: Small chains that cover every op the benchmark's chains use, with odd paddings and strides.
CHAINS = {
    "conv_bias_bn_relu_maxpool": {
        "input": {"shape": [1, 4, 9, 9]},
        "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": [1, 0, 1, 2],
                    "stride": 2}, {"op": "bias_add"}, {"op": "batch_norm"}, {"op": "relu"},
                   {"op": "max_pool2d", "kernel": 2, "stride": 1, "padding": 1}]},
    "depthwise_relu6_pointwise_add": {
        "input": {"shape": [2, 8, 7, 7]},
        "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1, "groups": 8},
                   {"op": "relu6"}, {"op": "conv2d", "channels": 8, "kernel": 1},
                   {"op": "add", "other": "data"}]},
    "bn_relu_1x1_avgpool_clip": {  # a DenseNet transition, and a clip
        "input": {"shape": [1, 6, 8, 8]},
        "layers": [{"op": "batch_norm"}, {"op": "relu"},
                   {"op": "conv2d", "channels": 4, "kernel": 1, "dilation": 1},
                   {"op": "avg_pool2d", "kernel": 3, "stride": 2, "padding": 1},
                   {"op": "clip", "min": -0.1, "max": 0.2}]},
    "dilated_grouped": {
        "input": {"shape": [1, 8, 10, 10]},
        "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 2, "dilation": 2,
                    "groups": 2}]},
}


def _check(name: str, run) -> None:
    chain = normalize_chain(CHAINS[name])
    inputs = make_inputs(chain, 3)
    model = chain_to_onnx(chain, inputs)
    assert [i.name for i in model.graph.input] == ["data"]  # the weights are initializers
    out = run(model, inputs[0][1])
    check = compare(out, reference_output(chain, inputs), "float32")
    assert check["correct"], (name, check["message"])


@pytest.mark.parametrize("name", CHAINS)
def test_the_onnx_graph_computes_the_chain(name):
    from onnx.reference import ReferenceEvaluator

    _check(name, lambda model, data: ReferenceEvaluator(model).run(None, {"data": data})[0])


def test_a_chain_that_is_not_float32_is_refused():
    chain = normalize_chain({"input": {"shape": [1, 4, 6, 6], "dtype": "float16"},
                             "layers": [{"op": "relu"}]})
    with pytest.raises(ValueError, match="float32 chains only"):
        chain_to_onnx(chain, make_inputs(chain, 0))

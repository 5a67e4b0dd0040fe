"""The op table: every record is complete and consistent with the spec, the builder and the
reference; and the op added through the table alone (``sigmoid``) is validated, named,
counted, referenced, compiled and imported from ONNX like the others."""

import numpy as np
import pytest
from model_graphs import conv, model, op, to_bytes

from playground.chain.edits import PAIRS, SINGLE, field_values
from playground.chain.ops import OPS
from playground.chain.ops.base import PAIR, SIDES, TENSOR, Op
from playground.chain.reference import make_inputs, reference_output
from playground.chain.spec import (
    DERIVED_SUFFIXES,
    WINDOW_OPS,
    chain_flop,
    default_name,
    normalize_chain,
    output_shape,
)
from playground.errors import ChainError

BASE = {"input": {"shape": [1, 4, 7, 9]},
        "layers": [{"op": "conv2d", "channels": 6, "kernel": 3, "padding": 1}]}


def with_op(name: str) -> dict:
    """``BASE`` and a layer of op ``name`` with the fields the editor would give it."""
    chain = normalize_chain(BASE)
    last = chain["layers"][-1]["name"]
    shapes = {"data": [1, 4, 7, 9], last: output_shape(chain)}
    return normalize_chain({**BASE, "layers": [*BASE["layers"],
                                               {"op": name, **OPS[name].starter(shapes, last)}]})


@pytest.mark.parametrize("name", list(OPS))
def test_every_record_is_complete(name):
    record = OPS[name]
    assert issubclass(record, Op) and record.name == name and record.prefix
    assert record.kind in ("conv", "pool", "elementwise")
    assert (name in WINDOW_OPS) == (record.kind != "elementwise")
    assert callable(record.te) and callable(record.numpy) and record.__doc__
    for f in record.fields:
        assert f["name"] in (PAIRS if f["kind"] in (PAIR, SIDES) else SINGLE)
    for suffix in (*(p[0] for p in record.params), *record.helpers):
        assert suffix in DERIVED_SUFFIXES


def test_prefixes_name_layers_apart():
    prefixes = [op.prefix for op in OPS.values()]
    assert len(set(prefixes)) == len(prefixes)
    assert all(default_name(name, 2) == OPS[name].prefix + "2" for name in OPS)


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_normalizes_with_its_defaults_and_its_fields_reach_the_editor(name):
    chain = with_op(name)
    layer = chain["layers"][-1]
    assert layer["name"] == default_name(name, 1 + (name == "conv2d"))
    assert normalize_chain(chain) == chain
    values = field_values(chain)
    for f in OPS[name].fields:
        keys = [f"1.{f['name']}_h", f"1.{f['name']}_w"] if f["kind"] in (PAIR, SIDES) \
            else [f"1.{f['name']}"]
        assert all(k in values for k in keys), (keys, values)
    # Params come in calling order, one input each, of the shape the record gives.
    inputs = dict(make_inputs(chain, 0))
    c = output_shape(dict(chain, layers=chain["layers"][:1]))[1]
    for suffix, shape, _ in OPS[name].params:
        assert inputs[layer["name"] + suffix].shape == tuple(shape(layer, c))
    assert chain_flop(chain) > chain_flop(dict(chain, layers=chain["layers"][:1]))


def test_fields_are_checked_by_their_kind():
    with pytest.raises(ChainError, match=r"sigmoid1: unknown field 'alpha' for a sigmoid layer"):
        normalize_chain({**BASE, "layers": [{"op": "sigmoid", "alpha": 1}]})
    with pytest.raises(ChainError, match=r"add1: add needs other, the name of an earlier layer"):
        normalize_chain({**BASE, "layers": [{"op": "add"}]})
    with pytest.raises(ChainError, match=r"bn1: eps must be a finite number, got 'x'"):
        normalize_chain({**BASE, "layers": [{"op": "batch_norm", "eps": "x"}]})
    with pytest.raises(ChainError, match=r"maxpool1: pooling supports dilation 1 only"):
        normalize_chain({**BASE, "layers": [{"op": "max_pool2d", "dilation": 2}]})
    pool = normalize_chain({**BASE, "layers": [{"op": "avg_pool2d", "kernel": 3}]})["layers"][0]
    assert pool["stride"] == [3, 3]  # a default that follows another field
    assert [f["kind"] for f in OPS["add"].fields] == [TENSOR]


def test_sigmoid_is_an_elementwise_op_named_counted_and_referenced():
    chain = with_op("sigmoid")
    assert chain["layers"][-1] == {"op": "sigmoid", "name": "sigmoid1"}
    assert output_shape(chain) == [1, 6, 7, 9]
    assert chain_flop(chain) - chain_flop(dict(chain, layers=chain["layers"][:1])) == 6 * 7 * 9
    inputs = make_inputs(chain, 3)
    x = reference_output(dict(chain, layers=chain["layers"][:1]), inputs)
    np.testing.assert_allclose(reference_output(chain, inputs), 1.0 / (1.0 + np.exp(-x)),
                               rtol=1e-12)
    assert [n for n, _ in inputs] == ["data", "conv1_weight"]  # no parameters of its own


def test_onnx_sigmoid_maps_to_the_sigmoid_op():
    from playground.model import load_model

    m = load_model(to_bytes(model([conv("x", "y", "w", pads=[1, 1, 1, 1]),
                                   op("Sigmoid", ["y"], "z")], weights={"w": [8, 4, 3, 3]})))
    assert [n.layers for n in m.nodes][1] == ({"op": "sigmoid"},)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPS))
def test_each_op_compiles_and_matches_its_reference(name):
    import tvm

    from playground.chain.compute import chain_module

    chain = with_op(name)
    ex = tvm.compile(chain_module(chain), target="llvm")
    dev = tvm.cpu()
    for seed in (0, 1):
        inputs = make_inputs(chain, seed)
        expected = reference_output(chain, inputs)
        out = tvm.runtime.tensor(np.full(expected.shape, np.nan, dtype="float32"), dev)
        ex["main"](*(tvm.runtime.tensor(a, dev) for _, a in inputs), out)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)

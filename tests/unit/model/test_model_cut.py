"""The cutter's invariants on random graphs (hypothesis): branches, residuals, ops that are not
chain layers, several outputs, any ``max_convs``."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_graphs import conv, op, tensor
from onnx import helper

from playground.chain.spec import INPUT_NAME, WINDOW_OPS, normalize_chain
from playground.model import cut_chains, load_model
from playground.model.cut import cut

KINDS = ("conv", "conv", "conv_bias", "relu", "bn", "add", "maxpool", "avgpool", "tanh")


@st.composite
def graphs(draw):
    """An ONNX model of up to 14 random nodes, each reading any earlier tensor."""
    tensors = {"x": (4, 8)}  # name -> (channels, size)
    nodes, weights = [], {}
    for i in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(KINDS))
        src = draw(st.sampled_from(sorted(tensors)))
        c, size = tensors[src]
        y = f"t{i}"
        if kind.startswith("conv"):
            cout, k = draw(st.sampled_from([4, 8])), draw(st.sampled_from([1, 3]))
            stride = draw(st.sampled_from([1, 2])) if size >= 4 else 1
            weights[f"w{i}"] = [cout, c, k, k]
            bias = None
            if kind == "conv_bias":
                bias = weights.setdefault(f"b{i}", [cout]) and f"b{i}"
            nodes.append(conv(src, y, f"w{i}", bias=bias, strides=[stride, stride],
                              pads=[k // 2] * 4))
            tensors[y] = (cout, (size + 2 * (k // 2) - k) // stride + 1)
        elif kind == "add":
            same = sorted(t for t, s in tensors.items() if s == (c, size))
            other = draw(st.sampled_from(same))
            nodes.append(op("Add", [src, other], y))
            tensors[y] = (c, size)
        elif kind in ("maxpool", "avgpool") and size >= 2:
            nodes.append(op("MaxPool" if kind == "maxpool" else "AveragePool", [src], y,
                            kernel_shape=[2, 2], strides=[2, 2]))
            tensors[y] = (c, size // 2)
        elif kind == "bn":
            for p in ("s", "b", "m", "v"):
                weights[f"{p}{i}"] = [c]
            nodes.append(op("BatchNormalization", [src, *(f"{p}{i}" for p in "sbmv")], y))
            tensors[y] = (c, size)
        else:
            nodes.append(op("Tanh" if kind == "tanh" else "Relu", [src], y))
            tensors[y] = (c, size)
    read = {t for n in nodes for t in n.input}
    produced = [n.output[0] for n in nodes]
    outputs = [t for t in produced if t not in read]  # every dead end is an output ...
    outputs += draw(st.lists(st.sampled_from(produced), max_size=2))  # ... and maybe more
    graph = helper.make_graph(
        nodes, "random", [tensor("x", [1, 4, 8, 8]), *(tensor(k, v) for k, v in weights.items())],
        [tensor(t, None) for t in dict.fromkeys(outputs)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto=graphs(), max_convs=st.integers(1, 4), inner=st.booleans())
def test_cutting_invariants(proto, max_convs, inner):
    m = load_model(proto.SerializeToString())
    pieces = cut(m, max_convs, inner_residuals=inner)
    by_name = {n.name: n for n in m.nodes}
    covered = Counter(name for p in pieces for name in p.nodes)
    # every conv and pool in exactly one chain; no node in two
    assert all(covered[n.name] == 1 for n in m.nodes if n.is_window)
    assert max(covered.values(), default=1) == 1
    # the chains' FLOPs are the model's conv and pool FLOPs
    assert abs(sum(p.flop for p in pieces) - m.flop) <= 1e-9 * max(1.0, m.flop)
    readers: dict[str, set[str]] = {}
    for n in m.nodes:
        for t in n.inputs:
            readers.setdefault(t, set()).add(n.name)
    for p in pieces:
        assert normalize_chain(p.chain) == p.chain
        assert sum(x["op"] in WINDOW_OPS for x in p.chain["layers"]) <= max_convs
        inside = set(p.nodes)
        for name in p.nodes[:-1]:  # an inner tensor is read only inside, and is no output
            t = by_name[name].outputs[0]
            assert readers.get(t, set()) <= inside and t not in m.outputs
        _check_layers_follow_nodes(p, by_name)
        if not inner:
            assert all(x["other"] == INPUT_NAME for x in p.chain["layers"] if x["op"] == "add")
    chains = cut_chains(m, max_convs, inner_residuals=inner)
    assert sum(c.count for c in chains) == len(pieces)
    assert len({c.key for c in chains}) == len(chains)


def _check_layers_follow_nodes(piece, by_name) -> None:
    """The chain's layers are its nodes' layers in order, each reading what its node reads:
    a residual add's ``other`` names the layer that wrote the node's other input."""
    layers = iter(piece.chain["layers"])
    first = by_name[piece.nodes[0]]
    tensor_of = {INPUT_NAME: first.inputs[0]}
    for name in piece.nodes:
        node = by_name[name]
        for mapped in node.layers:
            layer = next(layers)
            assert layer["op"] == mapped["op"]
            if layer["op"] == "add":
                assert tensor_of[layer["other"]] in node.inputs
            tensor_of[layer["name"]] = node.outputs[0]
    assert next(layers, None) is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                     max_size=4),
       end=st.integers(0, 10**6))
def test_damaged_files_are_read_or_refused_in_one_line(cuts, end):
    """Bytes changed or cut off anywhere: a model, or a ModelError, never anything else."""
    from playground.model import ModelError
    from playground.model.examples import example_bytes

    data = bytearray(example_bytes("mobilenet_v2", size=32))
    for at, value in cuts:
        data[at % len(data)] = value
    data = bytes(data[: max(1, end % (len(data) + 1))])
    try:
        m = load_model(data)
    except ModelError as e:
        assert "\n" not in e.message
        return
    cut_chains(m, 2)

"""Reading ONNX models: the example networks against their known architectures, every mapped
op and its limits, exporter noise, and each bad input refused with one line."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from model_graphs import const, conv, init, model, op, tensor, to_bytes
from onnx import TensorProto, helper

from playground.chain.spec import normalize_chain, tensor_shapes
from playground.model import ModelError, cut_chains, left_out, load_model
from playground.model.cut import cut
from playground.model.examples import EXAMPLES, example_bytes, yolo_tiny
from playground.model.graph import Model

W = {"w": [8, 4, 3, 3]}


def _load(proto, **kw) -> Model:
    return load_model(to_bytes(proto), **kw)


def _layers(m: Model) -> list[list[str]]:
    return [[layer["op"] for layer in n.layers] for n in m.nodes]


# -- the examples against the known architectures ---------------------------------------------

def test_resnet18_is_torchvision_resnet18():
    m = load_model(example_bytes("resnet18"))
    convs = [n for n in m.nodes if n.is_conv]
    assert len(convs) == 20  # 1 stem + 16 in basic blocks + 3 downsample
    assert sum(n.layers[0]["kernel"] == [1, 1] for n in convs) == 3
    assert m.flop == pytest.approx(3.6289e9, rel=1e-4)  # 1.814 GMACs, as published
    assert m.node("conv1").shape == (1, 64, 112, 112)
    assert m.node("maxpool1").shape == (1, 64, 56, 56)
    assert m.not_layers == {"Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1}
    chains = cut_chains(m)
    inputs = Counter(tuple(c.chain["input"]["shape"]) for c in chains for _ in c.occurrences)
    assert inputs[(1, 64, 56, 56)] == 4  # two identical blocks + a stride-2 block + its shortcut
    assert [c.count for c in chains].count(2) == 1  # layer1's two blocks are one chain, x2
    assert sum(c.count for c in chains) == 15
    # after each downsampling add, its relu is a chain of its own and the next block reads
    # it as its input: every residual add reads its chain's input
    assert [len(c.chain["layers"]) for c in chains].count(1) == 3
    assert all(x["other"] == "data" for c in chains for x in c.chain["layers"]
               if x["op"] == "add")
    # the three downsampling adds read two chains' outputs: they are left out
    assert left_out(m, chains) == {"Add": 3, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1}


def test_mobilenet_v2_is_torchvision_mobilenet_v2():
    m = load_model(example_bytes("mobilenet_v2"))
    convs = [n for n in m.nodes if n.is_conv]
    assert len(convs) == 52
    depthwise = [n for n in convs if n.layers[0]["groups"] > 1]
    assert len(depthwise) == 17 and all(n.layers[0]["groups"] == n.layers[0]["in_channels"]
                                        for n in depthwise)
    assert all([x["op"] for x in n.layers] == ["conv2d", "bias_add"] for n in convs)
    assert sum(n.op_type == "Add" for n in m.nodes) == 10
    assert m.flop == pytest.approx(0.599e9, rel=2e-3)  # ~300 MMACs, as published
    assert m.node("conv52").shape == (1, 1280, 7, 7)
    chains = cut_chains(m)
    # every inverted residual block with its residual is one chain: no add is left out
    assert left_out(m, chains) == {"Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1}
    assert sum(c.count for c in chains) == 18 and len(chains) == 13
    assert all(c.windows <= 3 for c in chains)
    clip = [x for c in chains for x in c.chain["layers"] if x["op"] in ("clip", "relu6")]
    assert clip and all(x["op"] == "relu6" for x in clip)  # Clip(0, 6) from Constant bounds


def test_yolo_tiny_backbone():
    m = load_model(example_bytes("yolo_tiny"))
    assert sum(n.is_conv for n in m.nodes) == 10
    pools = [n for n in m.nodes if n.op_type == "MaxPool"]
    assert [n.shape[2] for n in pools] == [208, 104, 52, 26, 13, 13]
    assert pools[-1].layers[0]["padding"] == [0, 0, 1, 1]  # Darknet's stride-1 pool
    assert m.nodes[-1].shape == (1, 255, 13, 13)
    assert sum(c.count for c in cut_chains(m)) == 6


def test_leaky_relu_ends_every_chain():
    m = _load(yolo_tiny(size=64, activation="leaky"))
    chains = cut_chains(m, max_convs=8)
    assert left_out(m, chains) == {"LeakyRelu": 9}
    # each chain is [pool,] conv, bn (or the head's conv + bias): a leaky ReLU ends it
    assert all(sum(x["op"] == "conv2d" for x in c.chain["layers"]) == 1 for c in chains)
    assert all(c.chain["layers"][-1]["op"] in ("batch_norm", "bias_add") for c in chains)


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("max_convs", [1, 2, 3, 5])
def test_examples_cut_into_valid_chains(name, max_convs):
    m = load_model(example_bytes(name, size=64))
    pieces = cut(m, max_convs)
    convs = [n.name for n in m.nodes if n.is_conv]
    covered = Counter(x for p in pieces for x in p.nodes)
    assert all(covered[c] == 1 for c in convs)  # each conv in exactly one chain
    assert sum(p.flop for p in pieces) == pytest.approx(m.flop)
    for p in pieces:
        assert normalize_chain(p.chain) == p.chain
        assert sum(x["op"] in ("conv2d", "max_pool2d", "avg_pool2d")
                   for x in p.chain["layers"]) <= max_convs
    chains = cut_chains(m, max_convs)
    assert sum(c.count for c in chains) == len(pieces)


def test_model_round_trips_as_json():
    m = load_model(example_bytes("resnet18", size=32))
    again = Model.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m


# -- ops and their attributes -------------------------------------------------------------------

@pytest.mark.parametrize(("auto_pad", "pads"), [
    ("SAME_UPPER", [0, 0, 1, 1]), ("SAME_LOWER", [1, 1, 0, 0]), ("VALID", [0, 0, 0, 0])])
def test_conv_auto_pad(auto_pad, pads):
    m = _load(model([conv("x", "y", "w", kernel_shape=[2, 2], auto_pad=auto_pad)],
                    weights={"w": [8, 4, 2, 2]}))
    assert m.nodes[0].layers[0]["padding"] == pads


def test_conv_attributes_and_bias():
    m = _load(model([conv("x", "y", "w", bias="b", strides=[2, 2], dilations=[2, 2],
                          pads=[2, 2, 2, 2], group=2)],
                    weights={"w": [8, 2, 3, 3], "b": [8]}))
    layer, bias = m.nodes[0].layers
    assert (layer["stride"], layer["dilation"], layer["groups"]) == ([2, 2], [2, 2], 2)
    assert bias == {"op": "bias_add"} and m.nodes[0].shape == (1, 8, 4, 4)


@pytest.mark.parametrize(("bounds", "layer"), [
    ((0.0, 6.0), {"op": "relu6"}), ((0.0, None), {"op": "relu"}),
    ((-1.0, 1.0), {"op": "clip", "min": -1.0, "max": 1.0})])
def test_clip_with_constant_inputs(bounds, layer):
    nodes, names = [], []
    for i, v in enumerate(bounds):
        if v is None:
            names.append("")
        else:
            nodes.append(const(f"c{i}", v))
            names.append(f"c{i}")
    m = _load(model([*nodes, op("Clip", ["x", *names], "y")]))
    assert m.nodes[0].layers == (layer,)


def test_clip_with_initializer_bounds_and_attributes():
    m = _load(model([op("Clip", ["x", "lo", "hi"], "y")],
                    inits=[init("lo", 0.0), init("hi", 6.0)]))
    assert m.nodes[0].layers == ({"op": "relu6"},)
    old = _load(model([op("Clip", ["x"], "y", min=-2.0, max=3.0)], opset=10))
    assert old.nodes[0].layers == ({"op": "clip", "min": -2.0, "max": 3.0},)


def test_exporter_noise_is_understood():
    """Identity aliases, a Reshape of an initializer and a Constant are not data-path nodes."""
    nodes = [op("Reshape", ["s_flat", "s_shape"], "scale"),
             op("Identity", ["x"], "x2"),
             op("BatchNormalization", ["x2", "scale", "b", "mean", "var"], "y"),
             op("Identity", ["y"], "y2"), op("Relu", ["y2"], "z")]
    inits = [init("s_flat", [1, 1, 1, 1]), init("s_shape", [4], dtype="int64"),
             init("b", [0] * 4), init("mean", [0] * 4), init("var", [1] * 4)]
    m = _load(model(nodes, inits=inits))
    assert [n.op_type for n in m.nodes] == ["BatchNormalization", "Relu"]
    assert m.nodes[1].inputs == ("y",)
    assert m.not_layers == {}


def test_pools_count_include_pad_and_ceil_mode():
    def pool(kind, **attrs):
        return _load(model([op(kind, ["x"], "y", kernel_shape=[3, 3], **attrs)])).nodes[0]

    assert pool("AveragePool", pads=[1, 1, 1, 1], count_include_pad=1).layers[0]["op"] == \
        "avg_pool2d"
    refused = pool("AveragePool", pads=[1, 1, 1, 1])
    assert not refused.layers and "count_include_pad=0" in refused.reason
    assert pool("AveragePool").layers  # no padding: count_include_pad does not matter
    assert pool("MaxPool", strides=[1, 1], ceil_mode=1).layers  # rounds the same either way
    up = pool("MaxPool", strides=[2, 2], ceil_mode=1)
    assert not up.layers and "ceil_mode" in up.reason


def test_add_of_a_constant_is_not_a_layer():
    m = _load(model([op("Add", ["x", "c"], "y")], inits=[init("c", [[[1.0]]] * 4)]))
    assert not m.nodes[0].layers and "constant" in m.nodes[0].reason


def test_residual_add_from_the_chain_input_and_from_inside():
    nodes = [conv("x", "a", "w1", pads=[1, 1, 1, 1]), op("Relu", ["a"], "r"),
             conv("r", "c", "w2", pads=[1, 1, 1, 1]), op("Add", ["c", "r"], "s"),
             op("Add", ["x", "s"], "t")]
    m = _load(model(nodes, weights={"w1": [4, 4, 3, 3], "w2": [4, 4, 3, 3]}))
    (c,) = cut_chains(m, inner_residuals=True)
    adds = [x for x in c.chain["layers"] if x["op"] == "add"]
    assert [x["other"] for x in adds] == ["relu1", "data"]
    # by default an add reads only its chain's input: the chain is cut at relu's output
    first, second = cut_chains(m)
    assert first.nodes == ("a", "r") and second.nodes == ("c", "s")
    assert second.chain["layers"][1]["other"] == "data"
    assert left_out(m, [first, second]) == {"Add": 1}  # x + s: x is neither chain's input


def test_dynamic_dims_ask_for_the_input_shape():
    proto = model([conv("x", "y", "w")], shape=["N", 4, "H", "W"], weights=W)
    with pytest.raises(ModelError, match=r"dynamic dims \[N, 4, H, W\].*--input-shape"):
        _load(proto)
    m = _load(proto, input_shape=(2, 4, 16, 16))
    assert m.nodes[0].shape == (2, 8, 14, 14)
    with pytest.raises(ModelError, match="contradicts"):
        _load(proto, input_shape=(2, 3, 16, 16))


def test_external_weights_are_not_needed():
    w = _declared("w", [8, 4, 3, 3])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="weights.bin")
    m = _load(model([conv("x", "y", "w")], inits=[w]))
    assert m.nodes[0].is_conv


# -- bad inputs: one clear line each ------------------------------------------------------------

def _declared(name: str, dims: list[int]) -> TensorProto:
    """An initializer with dims and no data."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT)
    t.dims.extend(dims)
    return t


def _cycle() -> bytes:
    nodes = [op("Add", ["x", "b"], "a"), op("Relu", ["a"], "b")]
    return to_bytes(model(nodes))


def _million_nodes() -> bytes:
    """A graph of 10^6 Relu nodes, written as protobuf fields (helper would take minutes)."""
    def field(num: int, payload: bytes) -> bytes:
        n, out = len(payload), bytearray([(num << 3) | 2])
        while True:
            out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
            n >>= 7
            if not n:
                return bytes(out) + payload

    node = field(1, op("Relu", ["x"], "y").SerializeToString())
    head = to_bytes(model([op("Relu", ["x"], "y")]))
    return head + field(7, node * 1_000_000)


def _huge_initializer() -> bytes:
    big = _declared("w", [512, 1024, 1024])
    return to_bytes(model([conv("x", "y", "w")], inits=[big]))


BAD = {
    "truncated": (lambda: example_bytes("resnet18")[:3000], "truncated"),
    "not onnx": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not an ONNX model"),
    "empty": (lambda: b"", "empty"),
    "cycle": (_cycle, r"cycle: (a -> b -> a|b -> a -> b)"),
    "10^6 nodes": (_million_nodes, "more than 100,000 nodes"),
    "2 GB initializer": (_huge_initializer, r"declares \[512, 1024, 1024\] \(2.0 GB\)"),
    "dynamic dims": (lambda: to_bytes(model([conv("x", "y", "w")], shape=["N", 4, 8, 8],
                                            weights=W)), "give its shape"),
    "two inputs": (lambda: to_bytes(model([op("Add", ["x", "z"], "y")],
                                          extra_inputs=[tensor("z", [1, 4, 8, 8])])),
                   "2 data inputs"),
    "old opset": (lambda: to_bytes(model([op("Relu", ["x"], "y")], opset=6)), "opset 6"),
    "rank 3": (lambda: to_bytes(model([op("Relu", ["x"], "y")], shape=[1, 4, 8])), "rank 3"),
    "dangling": (lambda: to_bytes(model([op("Relu", ["nowhere"], "y")])), "no node, input"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_one_clear_line(case):
    make, said = BAD[case]
    with pytest.raises(ModelError, match=said) as e:
        load_model(make())
    assert "\n" not in e.value.message and len(e.value.message) < 300


def test_size_cap_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.onnx"
    path.write_bytes(example_bytes("resnet18"))
    with pytest.raises(ModelError, match=r"above the cap of 1\.0 KB"):
        load_model(path, max_bytes=1024)
    assert load_model(path).name == "resnet18"


def test_max_convs_is_checked():
    with pytest.raises(ModelError, match="max_convs"):
        cut(load_model(example_bytes("yolo_tiny", size=64)), 0)


def test_chain_shapes_match_the_model():
    m = load_model(example_bytes("mobilenet_v2", size=96))
    for p in cut(m, 3):
        shapes = tensor_shapes(p.chain)
        last = m.node(p.nodes[-1])
        assert tuple(shapes[p.chain["layers"][-1]["name"]]) == last.shape


@pytest.mark.parametrize("name", EXAMPLES)
def test_nodes_are_counted_from_the_wire(name):
    from playground.model.examples import build
    from playground.model.onnx_read import count_nodes

    # random weights: initializers' raw data among the fields the count skips
    proto = build(name, weights="random") if name == "mobilenet_v2" else build(name)
    assert count_nodes(proto.SerializeToString()) == len(proto.graph.node)
    assert count_nodes(proto.SerializeToString(), limit=5) == 6  # stops past the limit


def test_command_line_cut_only(capsys):
    from playground.__main__ import main

    assert main(["model", "mobilenet_v2", "--cut-only", "--json", "--max-convs", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sum(c["count"] for c in out["chains"]) > 18  # more, shorter chains than with 3
    assert all(sum(x["op"] == "conv2d" for x in c["chain"]["layers"]) <= 2
               for c in out["chains"])
    assert out["model_flop"] == pytest.approx(sum(c["flop"] * c["count"]
                                                  for c in out["chains"]))


@pytest.mark.parametrize(("case", "args"), [("truncated", []), ("dynamic dims", []),
                                            ("dynamic dims", ["--input-shape", "1,3,8,8"])])
def test_command_line_says_what_is_wrong_in_one_line(tmp_path, capsys, case, args):
    from playground.__main__ import main

    path = tmp_path / "bad.onnx"
    path.write_bytes(BAD[case][0]())
    assert main(["model", str(path), "--cut-only", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


ODD = {
    "no output name": (lambda: model([helper.make_node("Conv", ["x", "w"], [""], name="c"),
                                      op("Relu", ["x"], "y")], weights=W), "writes no output"),
    "weight of rank 2": (lambda: model([conv("x", "y", "w")], weights={"w": [8, 4]}),
                         "kernel shape is unknown"),
    "groups": (lambda: model([conv("x", "y", "w", group=3)], weights=W), "groups=3"),
    "stride 0": (lambda: model([conv("x", "y", "w", strides=[0, 0])], weights=W),
                 "stride must be >= 1"),
    "window too large": (lambda: model([op("MaxPool", ["x"], "y", kernel_shape=[99, 99])]),
                         "larger than its input"),
    "training batch norm": (lambda: model([helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], name="bn",
        training_mode=1)], weights={k: [4] for k in "sbmv"}), "training mode"),
    "batch norm per element": (lambda: model([op(
        "BatchNormalization", ["x", "s", "b", "m", "v"], "y", spatial=0)], opset=8,
        weights={k: [4, 8, 8] for k in "sbmv"}), "spatial=0"),
    "clip bound not a scalar": (lambda: model([op("Clip", ["x", "lo"], "y")],
                                              inits=[init("lo", [0.0, 1.0])]), "not a scalar"),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_nodes_are_not_layers_and_say_why(case):
    make, said = ODD[case]
    m = _load(make())
    assert not m.nodes[0].layers and said in m.nodes[0].reason
    cut_chains(m)


@pytest.mark.slow
def test_public_api_resolves_without_tvm():
    """The page imports the importer and the cutter in the server: they never load TVM."""
    import subprocess
    import sys

    code = ("import sys, playground.model as m\n"
            "[getattr(m, n) for n in m.__all__]\n"
            "m.cut_chains(m.load_model(__import__('playground.model.examples', fromlist=['x'])"
            ".example_bytes('yolo_tiny')))\n"
            "print('tvm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"

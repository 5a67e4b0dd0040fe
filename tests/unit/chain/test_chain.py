"""Chains: normalization, validation messages that name the layer and the numbers, shapes."""

import pytest

from playground.chain.spec import (
    MAX_ELEMENTS,
    OPS,
    chain_flop,
    normalize_chain,
    output_shape,
    tensor_shapes,
)
from playground.errors import ChainError

SEED_1 = {"input": {"shape": [16, 3, 244, 244]},
          "layers": [{"op": "conv2d", "channels": 10, "kernel": 16}, {"op": "relu"}]}


def test_seed_first_program_normalizes_with_readable_names():
    chain = normalize_chain(SEED_1)
    assert [layer["name"] for layer in chain["layers"]] == ["conv1", "relu1"]
    conv = chain["layers"][0]
    assert conv["kernel"] == [16, 16] and conv["padding"] == [0, 0, 0, 0]
    assert output_shape(chain) == [16, 10, 229, 229]
    # 2 * N*K*OH*OW * C*KH*KW multiply-adds, plus one op per relu element: 12.9 GFLOP.
    assert chain_flop(chain) == pytest.approx(2 * 16 * 10 * 229 * 229 * 3 * 16 * 16
                                              + 16 * 10 * 229 * 229)
    assert round(chain_flop(chain) / 1e9, 1) == 12.9


def test_seed_second_program_is_refused_naming_conv2_and_channels():
    raw = {"input": {"shape": [16, 3, 244, 244]},
           "layers": [{"op": "conv2d", "channels": 10, "kernel": 16}, {"op": "relu"},
                      {"op": "conv2d", "channels": 10, "kernel": 16, "in_channels": 3}]}
    with pytest.raises(ChainError) as e:
        normalize_chain(raw)
    assert str(e.value) == ("conv2: expects 3 input channels (weight 10x3x16x16) but "
                            "receives 10")
    assert e.value.where == "layer:conv2.in_channels"


def test_corrected_seed_second_program_builds():
    raw = {"input": {"shape": [16, 3, 244, 244]},
           "layers": [{"op": "conv2d", "channels": 10, "kernel": 16}, {"op": "relu"},
                      {"op": "conv2d", "channels": 10, "kernel": 16, "in_channels": 10}]}
    assert tensor_shapes(normalize_chain(raw))["conv2"] == [16, 10, 214, 214]


@pytest.mark.parametrize(("raw", "message"), [
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "conv2d", "channels": 4,
                                                    "kernel": 11}]},
     "conv1: kernel 11x11 (dilated extent 11x11) is larger than its padded input 8x8"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "conv2d", "channels": 4,
                                                    "kernel": 3, "dilation": 4}]},
     "conv1: kernel 3x3 (dilated extent 9x9) is larger than its padded input 8x8"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "conv2d", "channels": 0}]},
     "conv1: channels must be >= 1, got 0"),
    ({"input": {"shape": [1, -3, 8, 8]}, "layers": [{"op": "relu"}]},
     "input: shape[1] (C) must be >= 1, got -3"),
    ({"input": {"shape": [1, 6, 8, 8]}, "layers": [{"op": "conv2d", "channels": 4,
                                                    "groups": 4}]},
     "conv1: groups=4 does not divide its 6 input channels"),
    ({"input": {"shape": [1, 4, 8, 8]}, "layers": [{"op": "conv2d", "channels": 6,
                                                    "groups": 4}]},
     "conv1: groups=4 does not divide its 6 output channels"),
    ({"input": {"shape": [64, 64, 1024, 1024]}, "layers": [{"op": "relu"}]},
     f"relu1: its output [64, 64, 1024, 1024] has 4,294,967,296 elements, above the cap of "
     f"{MAX_ELEMENTS:,}"),
    ({"input": {"shape": [1, 3, 8, 8], "dtype": "int8"}, "layers": [{"op": "relu"}]},
     "input: unknown dtype 'int8' (choose one of float32, float16)"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "softmax"}]},
     f"layer 1: unknown op 'softmax' (choose one of {', '.join(OPS)})"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "conv2d", "channels": 4,
                                                    "kernel": 3.5}]},
     "conv1: kernel must be an integer, got 3.5"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "add", "other": "conv7"}]},
     "add1: add refers to 'conv7', which is not an earlier layer (earlier: data)"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "conv2d", "channels": 4,
                                                    "kernel": 3}, {"op": "add",
                                                                   "other": "data"}]},
     "add1: cannot add data of shape [1, 3, 8, 8] to a tensor of shape [1, 4, 6, 6]"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "relu", "name": "conv1_pad"}]},
     "layer 1: name 'conv1_pad' is reserved"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "relu", "name": "a"},
                                                   {"op": "relu", "name": "a"}]},
     "layer name 'a' is used twice"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "clip", "min": 2, "max": 1}]},
     "clip1: min 2.0 is larger than max 1.0"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": []}, "chain: add at least one layer"),
    ({"input": {"shape": [1, 3, 8]}, "layers": [{"op": "relu"}]},
     "input: shape must be 4 integers (N, C, H, W), got [1, 3, 8]"),
    ({"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "relu", "alpha": 1}]},
     "relu1: unknown field 'alpha' for a relu layer (known: name, op)"),
])
def test_bad_chains_are_refused_with_a_message_naming_what_is_wrong(raw, message):
    with pytest.raises(ChainError) as e:
        normalize_chain(raw)
    assert str(e.value) == message


def test_flop_cap_names_the_total():
    raw = {"input": {"shape": [4, 256, 128, 128]},
           "layers": [{"op": "conv2d", "channels": 256, "kernel": 7, "padding": 3}]}
    with pytest.raises(ChainError, match=r"GFLOP is above the cap"):
        normalize_chain(raw)


def test_padding_forms_and_depthwise():
    chain = normalize_chain({"input": {"shape": [1, 8, 10, 12]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": [3, 5], "padding": [1, 2], "groups": 8,
         "stride": 2}]})
    conv = chain["layers"][0]
    assert conv["padding"] == [1, 2, 1, 2] and conv["stride"] == [2, 2]
    assert output_shape(chain) == [1, 8, 5, 6]


def test_normalization_is_idempotent():
    chain = normalize_chain(SEED_1)
    assert normalize_chain(chain) == chain


def test_an_edit_of_several_fields_keeps_the_valid_ones_and_says_why_for_each_other():
    """H = 100000, W = 100000 and C = 3 typed in turn: C is applied at once, H and W each
    get their own error and the value the chain still uses (issue 22, point 5)."""
    from playground.chain.edits import apply_fields, field_values

    chain = normalize_chain({"input": {"shape": [1, 32, 64, 64]},
                             "layers": [{"op": "conv2d", "channels": 64, "kernel": 3},
                                        {"op": "relu"}]})
    values = {**field_values(chain), "input.h": 100000, "input.w": 100000, "input.c": 3}
    new, errors = apply_fields(chain, values)
    assert new["input"]["shape"] == [1, 3, 64, 64]
    assert [(e.field, e.kept) for e in errors] == [("input.h", 64), ("input.w", 64)]
    assert all("larger than" in e.message for e in errors)
    # Two changed fields of one layer, both valid: both kept.
    values = {**field_values(new), "0.channels": 6, "0.groups": 3}
    together, errors = apply_fields(new, values)
    assert errors == [] and together["layers"][0]["groups"] == 3
    # Unchanged values change nothing; a kernel pair edits one side; "auto" in channels.
    assert apply_fields(chain, field_values(chain)) == (chain, [])
    wide, _ = apply_fields(chain, {**field_values(chain), "0.kernel_w": 5, "0.in_channels": 32})
    assert wide["layers"][0]["kernel"] == [3, 5] and wide["layers"][0]["in_channels"] == 32

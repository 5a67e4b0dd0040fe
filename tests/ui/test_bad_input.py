"""A table of bad inputs across chains, primitive arguments, uploaded scripts and URL query
strings: each is answered by the library's error with a one-line message naming what is wrong,
and the session a user built is unchanged."""

import base64
import json
import zlib

import pytest
from helpers import CONV_RELU, CONV_RELU_CONV, fuse_two_convs

from playground.errors import PlaygroundError
from playground.io.export import export_script
from playground.io.script_import import import_script
from playground.io.url_state import decode_state, encode_state, import_query
from playground.schedule.session import Session

BASE = Session.new(CONV_RELU_CONV, fuse_two_convs())
GOOD_SCRIPT = export_script(BASE.chain, BASE.steps, title="good")


def _chain(**input_):
    return {"input": {"shape": [1, 8, 16, 16], **input_}, "layers": CONV_RELU["layers"]}


def _layer(**fields):
    return {"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "conv2d", **fields}]}


CHAINS = [
    (_chain(shape=[1, 8, 16]), "shape must be 4 integers"),
    (_chain(shape="1x8x16x16"), "shape must be 4 integers"),
    (_chain(shape=[1, 8, 16, 0]), "shape[3] (W) must be >= 1, got 0"),
    (_chain(shape=[1, 8, 16, -5]), "must be >= 1, got -5"),
    (_chain(shape=[1, 8, 16, 1e12]), "is larger than 65536"),
    (_chain(shape=[1, 8, 16, "16"]), "must be an integer, got '16'"),
    (_chain(shape=[1, 8, 16, True]), "must be an integer, got True"),
    (_chain(dtype="float64"), "unknown dtype 'float64'"),
    (_layer(channels=8, kernel=0), "conv1: kernel must be >= 1, got 0"),
    (_layer(channels=8, kernel=[3, 3, 3]), "conv1: kernel needs 1, 2 or 2 values, got 3"),
    (_layer(channels=8, stride=-1), "conv1: stride must be >= 1, got -1"),
    (_layer(channels=8, padding=-1), "conv1: padding must be >= 0, got -1"),
    (_layer(channels=8, dilation=0), "conv1: dilation must be >= 1, got 0"),
    (_layer(channels=8, groups=3), "conv1: groups=3 does not divide its 8 input channels"),
    (_layer(channels=10 ** 9), "conv1: channels = 1000000000 is larger than 65536"),
    (_layer(channels=8, kernel=40), "conv1: kernel 40x40 (dilated extent 40x40) is larger"),
    (_layer(kernel=3), "conv1: conv2d needs channels"),
    (_layer(channels=8, in_channels=3), "conv1: expects 3 input channels"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "batch_norm", "eps": -1}]},
     "bn1: eps must be > 0"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "clip", "min": float("nan")}]},
     "clip1: min must be a finite number"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "relu", "name": "Bad Name"}]},
     "name 'Bad Name' must be lower-case letters"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": "relu"}, "layers must be a list"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "relu"}] * 40},
     "40 layers is more than the 32 allowed"),
    ([1, 2, 3], "a chain must be an object"),
]


@pytest.mark.parametrize(("raw", "fragment"), CHAINS)
def test_bad_chain_parameters(raw, fragment):
    with pytest.raises(PlaygroundError) as e:
        BASE.with_chain(raw)
    assert fragment in str(e.value) and "\n" not in str(e.value)


STEPS = [
    ({"primitive": "split", "args": {"block": "conv2", "loop": "k", "factors": "8"}},
     "factors must be a list of 2 to 8 integers"),
    ({"primitive": "split", "args": {"block": "conv2", "loop": "k",
                                     "factors": [None, 10 ** 12]}},
     "factor 1000000000000 must be an integer from 1 to 65536"),
    ({"primitive": "split", "args": {"block": "conv2", "loop": "k", "factors": [-2, 4]}},
     "factor -2 must be an integer"),
    ({"primitive": "reorder", "args": {"block": "conv2", "loops": ["k", "k"]}},
     "loops names a loop twice"),
    ({"primitive": "reorder", "args": {"block": "conv2", "loops": []}},
     "loops must be a non-empty list of loop names"),
    ({"primitive": "fuse", "args": {"block": "conv2", "loops": ["no_such"]}},
     "block conv2 has no loop 'no_such'"),
    ({"primitive": "cache_read", "args": {"block": "conv2", "read_buffer_index": 99,
                                          "storage_scope": "global"}},
     "read_buffer_index must be between 0 and 64, got 99"),
    ({"primitive": "cache_read", "args": {"block": "conv2", "read_buffer_index": 0,
                                          "storage_scope": "texture"}},
     "storage_scope must be one of global, shared, local"),
    ({"primitive": "compute_at", "args": {"block": "conv2", "target_block": "conv2",
                                          "target_loop": "w_0"}},
     "conv2 is already inside loop w_0"),
    ({"primitive": "compute_inline", "args": {"block": "conv2"}},
     "conv2 is a reduction (it accumulates with an init)"),
    ({"primitive": "compute_inline", "args": {"block": "../../etc/passwd"}},
     "block '../../etc/passwd' does not exist"),
    ({"primitive": "annotate", "args": {"block": "conv2", "loop": "k", "key": "pragma_import_c",
                                        "value": 1}}, "key must be one of"),
    ({"primitive": "transform_layout", "args": {"block": "conv2", "buffer": ["write", 0],
                                                "index_map": "lambda n, k, h, w: (n, k / 2)"}},
     "index_map may use only its parameters"),
    ({"primitive": "transform_layout", "args": {"block": "conv2", "buffer": ["write", 0],
                                                "index_map": "lambda n, k, h, w: (k,"}},
     "index_map is not valid Python"),
    ({"primitive": "decompose_reduction", "args": {"block": "conv2", "loop": "w_0",
                                                   "extra": 1}}, "unknown argument 'extra'"),
    ({"primitive": 42, "args": {}}, "unknown primitive '42'"),
    ({"primitive": "split", "args": "block=conv2"}, "args must be an object"),
    ({"args": {}}, "a step must be an object with primitive and args"),
]


@pytest.mark.parametrize(("raw", "fragment"), STEPS)
def test_bad_primitive_arguments(raw, fragment):
    with pytest.raises(PlaygroundError) as e:
        BASE.apply(raw)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert BASE.cursor == 7 and len(BASE.steps) == 7


SCRIPTS = [
    ("import os\nos.system('touch /tmp/playground_pwned')\n", "line 1"),
    ("CHAIN = __import__('os')\n", "line 1"),
    ("x = ().__class__.__bases__[0].__subclasses__()\n", "line 1"),
    (GOOD_SCRIPT.replace('sch.split(loop(sch, "conv2", "h")',
                         'getattr(sch, "split")(loop(sch, "conv2", "h")', 1), "line"),
    (GOOD_SCRIPT.replace("def apply_schedule(sch):",
                         "def apply_schedule(sch):\n    open('/etc/passwd')", 1), "line"),
    (GOOD_SCRIPT.replace("def apply_schedule(sch):",
                         "def apply_schedule(sch):\n    for i in range(3):\n        pass", 1),
     "line"),
    (GOOD_SCRIPT[: GOOD_SCRIPT.index('"layers"') + 12], "line"),
    ("\x00\x01\x02garbage", ""),
    ("x" * (11 * 1024 * 1024), "limit"),
    ("CHAIN = " + "(" * 100_000, ""),
    ("TARGET = 'cpu'\n", "CHAIN"),
    (GOOD_SCRIPT.replace('sch.get_sblock("conv1")', 'sch.get_sblock("conv7")', 1),
     "conv7"),
    ('{"chain": {"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "relu"}]}, '
     '"steps": [{"primitive": "split", "args": {"block": "relu1", "loop": "zz", '
     '"factors": [2, 8]}}]}', "no loop 'zz'"),
    ("{not json", ""),
]


@pytest.mark.parametrize(("text", "fragment"), SCRIPTS)
def test_bad_uploaded_scripts(text, fragment, tmp_path):
    with pytest.raises(PlaygroundError) as e:
        import_script(text)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


QUERIES = [
    ("", "base64url"),
    ("!!!notbase64", "not base64url"),
    (_b64(b"plain text, not zlib"), "not compressed session data"),
    (_b64(zlib.compress(b"[1, 2, 3]")), "must be an object with chain and steps"),
    (_b64(zlib.compress(b"{bad json")), "does not hold valid JSON"),
    (_b64(zlib.compress(b"\x00" * 4_000_000, 9)), "decompresses to more than"),
    (_b64(zlib.compress(json.dumps({"chain": {}, "steps": [], "evil": 1}).encode())),
     "unknown field 'evil'"),
    (encode_state(BASE.chain, BASE.steps)[:-8], ""),
    ("A" * 100_000, "above the limit"),
]


@pytest.mark.parametrize(("text", "fragment"), QUERIES)
def test_bad_url_query_strings(text, fragment):
    with pytest.raises(PlaygroundError) as e:
        decode_state(text)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_query_with_a_chain_that_does_not_build():
    bad = {"chain": {"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "conv2d"}]},
           "steps": []}
    text = _b64(zlib.compress(json.dumps(bad).encode()))
    with pytest.raises(PlaygroundError, match="conv1: conv2d needs channels"):
        import_query({"state": text})


def test_the_table_is_large_enough():
    assert len(CHAINS) + len(STEPS) + len(SCRIPTS) + len(QUERIES) + 1 >= 40

"""The catalogue of TVM's messages, entry by entry: a step that triggers it (or, where the
pre-checks now refuse the step first, TVM's recorded text), and the plain sentence it gives."""

from __future__ import annotations

import pytest
from helpers import CONV_RELU, CONV_RELU_CONV

from playground.errors import StepError
from playground.explain import BUILD_ENTRIES, STEP_ENTRIES, explain_build, explain_step, plain
from playground.schedule.session import Session
from playground.schedule.steps import CATALOG
from playground.schedule.steps import Step as S

CONV_RELU_ADD = {"input": {"shape": [1, 8, 16, 16]},
                 "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                            {"op": "relu"}, {"op": "add", "other": "conv1"}]}
STRIDED = {"input": {"shape": [2, 2, 6, 4]},
           "layers": [{"op": "conv2d", "channels": 8, "kernel": 1, "stride": 2, "padding": 1}]}
DECOMPOSED = [S("decompose_reduction", {"block": "conv1", "loop": "h"})]

#: entry -> (chain, steps before, the step, a phrase of the plain sentence)
STEP_CASES = {
    "inline-reduction": (CONV_RELU, [], S("compute_inline", {"block": "conv1"}),
                         "conv1 is a reduction (it accumulates with an init)"),
    "inline-output": (CONV_RELU, [], S("compute_inline", {"block": "relu1"}),
                      "relu1 writes the kernel's output"),
    "not-allocated": (CONV_RELU, [], S("storage_align", {"block": "relu1", "buffer_index": 0,
                                                         "axis": 1, "factor": 8, "offset": 0}),
                      "relu1 is an argument of the kernel"),
    "not-reduction": (CONV_RELU, [], S("decompose_reduction", {"block": "relu1", "loop": "h"}),
                      "relu1 is not a reduction, so it has no initialization"),
    "consumers-outside": (CONV_RELU_ADD, [], S("compute_at", {
        "block": "conv1", "target_block": "relu1", "target_loop": "h"}),
        "conv1 is also read by add1, which is not under relu1.h"),
    "producers-outside": (CONV_RELU_ADD, [], S("reverse_compute_at", {
        "block": "add1", "target_block": "relu1", "target_loop": "h"}),
        "add1 also reads what relu1, conv1 compute, not under relu1.h"),
    "index-map-arity": (CONV_RELU, [], S("transform_layout", {
        "block": "conv1_pad", "buffer": ["write", 0], "index_map": "lambda i: (i,)"}),
        "one lambda parameter per dimension"),
    "layout-padding": (CONV_RELU, [], S("transform_layout", {
        "block": "conv1_pad", "buffer": ["write", 0],
        "index_map": "lambda n, c, h, w: (n, c // 3, h, w, c % 3)"}),
        "the new shape (1, 3, 18, 18, 3) does not tile the buffer exactly"),
    "single-region": (CONV_RELU, [], S("reverse_compute_inline", {"block": "conv1_pad"}),
                      "conv1_pad reads several elements of its producer per output"),
    "inline-form": (CONV_RELU_CONV, [], S("reverse_compute_inline", {"block": "conv2_pad"}),
                    "conv2_pad is not a plain elementwise copy of its producer"),
    "parallel-reduction": (CONV_RELU, [], S("parallel", {"block": "conv1", "loop": "rc"}),
                           "conv1.rc carries a reduction of conv1"),
    "compact-dataflow": (CONV_RELU, DECOMPOSED, S("parallel", {"block": "conv1_update",
                                                               "loop": "n"}),
                         "before decompose_reduction and compute_at"),
    "decompose-position": (CONV_RELU, [], S("decompose_reduction", {"block": "conv1",
                                                                     "loop": "rw"}),
                           "rw is inside or among conv1's reduction loops"),
    "storage-align-axis": (CONV_RELU, [], S("storage_align", {
        "block": "conv1_pad", "buffer_index": 0, "axis": 5, "factor": 8, "offset": 0}),
        "axis must be from 0 to 3"),
    "same-scope": (CONV_RELU, [], S("compute_at", {"block": "relu1", "target_block": "relu1",
                                                   "target_loop": "h"}),
                   "relu1 is already inside loop h"),
    "not-a-chain": (CONV_RELU, [S("compute_at", {"block": "conv1", "target_block": "relu1",
                                                 "target_loop": "h"})],
                    S("reorder", {"block": "relu1", "loops": ["w", "h"]}),
                    "loop h holds more than one statement"),
    "written-twice": (CONV_RELU, DECOMPOSED, S("cache_read", {
        "block": "relu1", "read_buffer_index": 0, "storage_scope": "local"}),
        "conv1 is written by two blocks"),
    "fuse-not-only-child": (CONV_RELU, [S("compute_at", {"block": "conv1_pad",
                                                         "target_block": "conv1",
                                                         "target_loop": "h"})],
                            S("fuse", {"block": "conv1", "loops": ["h", "w"]}),
                            "loop h holds more than loop w"),
    "annotated-loop": (CONV_RELU, [S("bind", {"block": "conv1", "loop": "h",
                                              "thread": "threadIdx.x"})],
                       S("fuse", {"block": "conv1", "loops": ["h", "w"]}),
                       "loop h is already parallel, vectorized, unrolled, bound or annotated"),
    "affine-binding": (STRIDED, [S("compute_at", {"block": "conv1_pad", "target_block": "conv1",
                                                  "target_loop": "rh"})],
                       S("reorder", {"block": "conv1", "loops": ["rh", "w"]}),
                       "conv1_pad's indices would not be affine"),
}

#: Entries the pre-checks now pre-empt (or that need a state no short step list reaches):
#: TVM's recorded text, as the fuzzer met it.
RECORDED = {
    "window-under-producer": ("reverse_compute_at", {"block": "conv2", "target_block":
                                                     "conv2_pad", "target_loop": "w"},
                              "Check failed: (var.has_value()) is false: TensorRegion pattern "
                              "match failed: v_h + v_rh", "conv2 reads a window of conv2_pad"),
    "not-complete": ("reverse_compute_at", {"block": "relu1", "target_block": "conv1_update",
                                            "target_loop": "w"},
                     "Error message: The block conv1_update is not a complete block - it "
                     "violates condition #1.", "conv1_update is not a complete block"),
    "single-producer": ("reverse_compute_inline", {"block": "bias1"},
                        "Error message: The consumer block bias1 to be inlined is required to "
                        "have only a single producer block, and the producer block should be a "
                        "complete block who has only a single consumer",
                        "bias1 must read exactly one block's output"),
}

BUILD_TEXTS = {
    "gpu-loop-on-cpu": "InternalError: Check failed: (device_id_) is false: Unknown device id "
                       "in current IR",
    "used-before-definition": "Check failed: Buffer bn1_scale is used before its definition",
    "vectorize-alloc": "Check failed: VectorizeLoop before LiftStorageAlloc",
    "argument-layout": "ValueError: Mismatched data.strides on argument #0 when calling:",
}


@pytest.mark.parametrize("entry", list(STEP_CASES))
def test_step_entry(entry):
    chain, before, step, phrase = STEP_CASES[entry]
    session = Session.new(chain, before)
    with pytest.raises(StepError) as e:
        session.apply(step)
    message = str(e.value)
    assert phrase in message, message
    assert "TVM refused it" not in message
    assert e.value.detail  # TVM's full text stays one click away


@pytest.mark.parametrize("entry", list(RECORDED))
def test_recorded_step_entry(entry):
    primitive, args, text, phrase = RECORDED[entry]
    assert phrase in explain_step(text, CATALOG[primitive].explains, args)


@pytest.mark.parametrize("entry", list(BUILD_TEXTS))
def test_build_entry(entry):
    said = explain_build(BUILD_TEXTS[entry])
    assert said and not said.endswith(":")


def test_every_entry_is_tested():
    step_names = {e.name for e in STEP_ENTRIES}
    assert step_names == set(STEP_CASES) | set(RECORDED)
    assert {e.name for e in BUILD_ENTRIES} == set(BUILD_TEXTS)


def test_every_entry_belongs_to_the_primitives_that_name_it():
    """A primitive's catalog record names its entries; an entry no primitive names must be
    general (it applies to every step), and every name in the catalog is an entry."""
    named = {n for p in CATALOG.values() for n in p.explains}
    entries = {e.name: e for e in STEP_ENTRIES}
    assert named <= set(entries)
    assert all(e.general for name, e in entries.items() if name not in named)
    assert not any(e.general for name, e in entries.items() if name in named)


@pytest.mark.parametrize("reason, expected", [
    ("Check failed: (args.size() == initial_indices_orig.size()) is false:",
     "TVM's internal check failed (its full text is in the details)"),
    ("The loop s_tir.SBlock#0 is odd:", "The loop a block is odd"),
    ("plain words", "plain words"),
])
def test_plain_last_resort(reason, expected):
    assert plain(reason) == expected

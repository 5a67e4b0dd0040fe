"""Steps TVM 0.27 accepts and miscompiles are refused at the step, in plain words.

One test per rule of :mod:`playground.schedule.prechecks`, each with the case that found it
(the issue's list and the fuzzer's finds), plus checks that the rules do not refuse the
schedules they resemble but which are fine (the presets, and the fusion the README teaches).
"""

from __future__ import annotations

import pytest
from helpers import CONV_RELU, CONV_RELU_CONV, fuse_two_convs

from playground.compile.lowering import lower
from playground.errors import BuildError, StepError
from playground.schedule.session import Session
from playground.schedule.steps import Step as S

CONV_BN = {"input": {"shape": [1, 4, 8, 8]},
           "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
                      {"op": "batch_norm"}]}
CONV_RELU_BIAS_CLIP = {"input": {"shape": [1, 4, 8, 8]},
                       "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
                                  {"op": "relu"}, {"op": "bias_add"}, {"op": "clip"}]}
BIAS_CONV = {"input": {"shape": [1, 4, 8, 8]},
             "layers": [{"op": "conv2d", "channels": 4, "kernel": 1}, {"op": "bias_add"},
                        {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}]}
CONV_RELU_ADD = {"input": {"shape": [1, 4, 8, 8]},
                 "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
                            {"op": "relu"}, {"op": "add", "other": "conv1"}]}
STRIDE_IS_KERNEL = {"input": {"shape": [1, 2, 8, 8]},
                    "layers": [{"op": "conv2d", "channels": 2, "kernel": 2, "stride": 2,
                                "padding": 1}]}
DEPTHWISE_POINTWISE = {"input": {"shape": [1, 3, 8, 8]},
                       "layers": [{"op": "conv2d", "channels": 3, "kernel": 3, "stride": 2,
                                   "groups": 3},
                                  {"op": "conv2d", "channels": 6, "kernel": 1}]}
#: The deep fuzz's seed 992029: a grouped 1x1 conv (a reduction of extent 1) between 3x3s.
GROUPED_1X1_CONV = {"input": {"shape": [1, 2, 11, 12]},
                    "layers": [{"op": "conv2d", "channels": 6, "kernel": 3},
                               {"op": "conv2d", "channels": 12, "kernel": 1, "groups": 6},
                               {"op": "conv2d", "channels": 6, "kernel": 3}]}
RELU_CLIP = {"input": {"shape": [1, 4, 8, 8]}, "layers": [{"op": "relu"}, {"op": "clip"}]}

#: The preset fuzz's seeds 772205 / 772280: a long loop unrolled around a large body.
WIDE_RELU = {"input": {"shape": [1, 64, 32, 32]}, "layers": [{"op": "relu"}]}

CASES = {
    "unroll: 64 channels around 32x32 pixels, 65,536 iterations written out": (
        WIDE_RELU, [], S("unroll", {"block": "relu1", "loop": "c"}),
        "unrolling relu1.c would write out 65,536 loop iterations (64 copies"),
    "reverse_compute_at: the block does not read the target (bn1_scale under bn1)": (
        CONV_BN, [], S("reverse_compute_at", {"block": "bn1_scale", "target_block": "bn1",
                                              "target_loop": "c"}),
        "bn1_scale does not read bn1 (it reads only the function's inputs)"),
    "reverse_compute_at: relu1 under clip1 in relu -> bias_add -> clip": (
        CONV_RELU_BIAS_CLIP, [], S("reverse_compute_at", {"block": "relu1",
                                                          "target_block": "clip1",
                                                          "target_loop": "h"}),
        "relu1 does not read clip1 (it reads conv1) — move it under conv1's loops, or move "
        "clip1 first"),
    "reverse_compute_at: a pad block under its producer's loop": (
        BIAS_CONV, [], S("reverse_compute_at", {"block": "conv2_pad", "target_block": "bias1",
                                                "target_loop": "h"}),
        "conv2_pad pads its input: its zero border does not come from bias1"),
    "reverse_compute_at: under the producer's reduction loop": (
        CONV_RELU_CONV, [S("compute_inline", {"block": "relu1"})],
        S("reverse_compute_at", {"block": "conv2_pad", "target_block": "conv1",
                                 "target_loop": "rc"}),
        "conv2_pad pads its input"),
    "reverse_compute_at: a conv under its own pad's w loop (stride = kernel)": (
        STRIDE_IS_KERNEL, [], S("reverse_compute_at", {"block": "conv1",
                                                       "target_block": "conv1_pad",
                                                       "target_loop": "w"}),
        "conv1 is a reduction over a window of its input"),
    "compute_at into a vectorized loop": (
        CONV_RELU, [S("split", {"block": "relu1", "loop": "w", "factors": [None, 8]}),
                    S("vectorize", {"block": "relu1", "loop": "w_1"})],
        S("compute_at", {"block": "conv1", "target_block": "relu1", "target_loop": "w_1"}),
        "relu1.w_1 is a vectorized loop (w_1): a block moved there would be vectorized wrongly"),
    "vectorize of an outer loop": (
        CONV_RELU, [], S("vectorize", {"block": "relu1", "loop": "h"}),
        "relu1.h is not an innermost loop (w inside it)"),
    "vectorize of a loop of extent 1 (fuzzer seed 2981: 'lanes > 1' at build)": (
        CONV_BN, [], S("vectorize", {"block": "bn1", "loop": "n"}),
        "bn1.n runs once (extent 1): there is nothing to vectorize"),
    "bind on the CPU target": (
        CONV_RELU, [], S("bind", {"block": "relu1", "loop": "c", "thread": "threadIdx.x"}),
        "binding relu1.c to threadIdx.x makes it a GPU loop, but the target is the CPU"),
    "reverse_compute_inline of bn1_shift while bn1 reads bn1_scale": (
        CONV_BN, [], S("reverse_compute_inline", {"block": "bn1_shift"}),
        "bn1_scale is also read by bn1: inlining bn1_shift into bn1_scale would remove "
        "bn1_scale that bn1 still needs"),
    "nested parallel loops": (
        CONV_RELU, [S("parallel", {"block": "relu1", "loop": "c"})],
        S("parallel", {"block": "relu1", "loop": "h"}),
        "relu1.h is inside the parallel loop c: nested parallel loops are not supported"),
    "transform_layout of the kernel's input": (
        CONV_RELU, [], S("transform_layout", {"block": "conv1_pad", "buffer": ["read", 0],
                                              "index_map": "lambda n, c, h, w: (n, h, w, c)"}),
        "data is an argument of the kernel: its layout is fixed by the caller — cache_read it "
        "into a copy first"),
    "transform_layout of the kernel's output": (
        CONV_RELU, [], S("transform_layout", {"block": "relu1", "buffer": ["write", 0],
                                              "index_map": "lambda n, c, h, w: (n, h, w, c)"}),
        "relu1 is an argument of the kernel"),
    "a second cache_read of one buffer (two blocks named conv1_local)": (
        CONV_RELU, [S("cache_write", {"block": "conv1", "write_buffer_index": 0,
                                      "storage_scope": "local"})],
        S("cache_read", {"block": "relu1", "read_buffer_index": 0, "storage_scope": "local"}),
        "a block conv1_local exists already"),
    "decompose_reduction above the loops of the block's own (fuzzer seed 1053)": (
        DEPTHWISE_POINTWISE, [S("compute_at", {"block": "conv1", "target_block": "conv2",
                                               "target_loop": "rc"})],
        S("decompose_reduction", {"block": "conv1", "loop": "k"}),
        "k is a loop of the block conv1 was computed at, not one of conv1's own"),
    "decompose_reduction of a reduction of extent 1 computed at its consumer (seed 992029)": (
        GROUPED_1X1_CONV, [S("compute_at", {"block": "conv2", "target_block": "conv3",
                                            "target_loop": "h", "preserve_unit_loops": False})],
        S("decompose_reduction", {"block": "conv2", "loop": "k"}),
        "k is a loop of the block conv2 was computed at, not one of conv2's own"),
    "decompose_reduction above a halo the consumer's rows recompute": (
        GROUPED_1X1_CONV, [S("compute_at", {"block": "conv2", "target_block": "conv3",
                                            "target_loop": "h", "preserve_unit_loops": False})],
        S("decompose_reduction", {"block": "conv2", "loop": "h"}),
        "conv2 is computed again for the same elements under h (overlapping tiles, a halo)"),
    "a vector loop inside another (a reorder, then vectorize; fuzz seed 770010)": (
        CONV_RELU, [S("vectorize", {"block": "relu1", "loop": "w"}),
                    S("reorder", {"block": "relu1", "loops": ["w", "h"]})],
        S("vectorize", {"block": "relu1", "loop": "h"}),
        "it puts the vectorized loop h inside the vectorized loop w (relu1), and TVM 0.27 "
        "cannot build a vector loop inside another"),
    "a reader moved into rounds its producer skips (a split of n that overshoots; seed "
    "993635)": (
        {"input": {"shape": [1, 4, 10, 10]},
         "layers": [{"op": "conv2d", "channels": 1, "kernel": 2}, {"op": "relu"},
                    {"op": "conv2d", "channels": 6, "kernel": 5}]},
        [S("compute_at", {"block": "conv1", "target_block": "relu1", "target_loop": "w",
                          "preserve_unit_loops": False}),
         S("split", {"block": "relu1", "loop": "n", "factors": [2, None]}),
         S("compute_at", {"block": "relu1", "target_block": "conv2", "target_loop": "w",
                          "preserve_unit_loops": False})],
        S("reverse_compute_at", {"block": "relu1", "target_block": "conv1", "target_loop": "h",
                                 "preserve_unit_loops": False}),
        "relu1 runs in every round of its loops, but conv1, which writes conv1, runs only "
        "where n_0 + n_1 < 1"),
    "vectorize of a loop holding relu1 and its reader (compute_at at the innermost loop)": (
        RELU_CLIP, [S("compute_at", {"block": "relu1", "target_block": "clip1",
                                    "target_loop": "w", "preserve_unit_loops": False})],
        S("vectorize", {"block": "clip1", "loop": "w"}),
        "vectorizing clip1.w: relu1 writes its buffer and clip1 reads it back in the same "
        "iteration"),
    "vectorize of a loop holding relu1 and its reader (reverse_compute_at)": (
        RELU_CLIP, [S("reverse_compute_at", {"block": "clip1", "target_block": "relu1",
                                            "target_loop": "w"})],
        S("vectorize", {"block": "relu1", "loop": "w"}),
        "keeps one element of relu1 for all the vector lanes"),
}

#: The fuzzer's three accepted-then-wrong schedules (issue 22), each refused at the step
#: that makes it wrong (1-based) and every step before it still accepted.
FUZZED = [
    ({"input": {"shape": [1, 11, 5, 17]}, "layers": [{"op": "batch_norm"},
                                                    {"op": "batch_norm"}]},
     [S("cache_read", {"block": "bn2_shift", "read_buffer_index": 2,
                       "storage_scope": "local"}),
      S("compute_at", {"block": "bn2_scale", "target_block": "bn2_scale_local",
                       "target_loop": "ax0", "preserve_unit_loops": False}),
      S("vectorize", {"block": "bn2_shift", "loop": "c"}),
      S("vectorize", {"block": "bn2_scale_local", "loop": "ax0"})],
     "vectorizing bn2_scale_local.ax0: bn2_scale writes its buffer and bn2_scale_local"),
    ({"input": {"shape": [1, 12, 22, 17]},
      "layers": [{"op": "conv2d", "channels": 1, "kernel": 1, "stride": [2, 1], "padding": 1,
                  "dilation": 2}]},
     [S("cache_read", {"block": "conv1", "read_buffer_index": 0, "storage_scope": "local"}),
      S("reverse_compute_at", {"block": "conv1_pad_local", "target_block": "conv1_pad",
                               "target_loop": "n", "preserve_unit_loops": False}),
      S("fuse", {"block": "conv1_pad", "loops": ["h", "w"]}),
      S("compute_at", {"block": "conv1_pad", "target_block": "conv1_pad_local",
                       "target_loop": "ax2", "preserve_unit_loops": False}),
      S("parallel", {"block": "conv1_pad_local", "loop": "ax2"}),
      S("vectorize", {"block": "conv1_pad", "loop": "ax2"})],
     "vectorizing conv1_pad.ax2: conv1_pad writes its buffer and conv1_pad_local"),
    ({"input": {"shape": [1, 9, 24, 17]},
      "layers": [{"op": "conv2d", "channels": 18, "kernel": [5, 2], "stride": [3, 1],
                  "padding": [0, 1, 0, 2], "dilation": [3, 1], "groups": 9}]},
     [S("cache_read", {"block": "conv1_pad", "read_buffer_index": 0,
                       "storage_scope": "shared"}),
      S("compute_at", {"block": "data_shared", "target_block": "conv1_pad",
                       "target_loop": "w", "preserve_unit_loops": False}),
      S("vectorize", {"block": "data_shared", "loop": "w"})],
     "vectorizing data_shared.w: data_shared writes its buffer and conv1_pad reads it back"),
]


@pytest.mark.parametrize("chain, steps, expected", FUZZED)
def test_the_fuzzers_cache_read_miscompiles_are_refused_at_their_step(chain, steps, expected):
    session = Session.new(chain, steps[:-1])
    with pytest.raises(StepError) as e:
        session.apply(steps[-1], target="cpu")
    message = str(e.value)
    assert message.startswith(f"step {len(steps)} (vectorize): {expected}"), message
    assert "wrong numbers) — compute" in message and "\n" not in message


#: Producer and reader in one vectorized iteration, and yet right (TVM computes these
#: correctly, so they are accepted): the buffer is also read outside the loop (it keeps its
#: full size), or the producer's element does not change along the loop (bn1_shift is per
#: channel: every lane of w writes the same number to the same place).
RIGHT = {
    "read outside the loop too": (
        {"input": {"shape": [1, 4, 8, 8]},
         "layers": [{"op": "relu"}, {"op": "relu"}, {"op": "add", "other": "relu1"}]},
        [S("reverse_compute_at", {"block": "relu2", "target_block": "relu1",
                                  "target_loop": "w"})],
        S("vectorize", {"block": "relu1", "loop": "w"})),
    "a per-channel producer under a loop over columns": (
        {"input": {"shape": [1, 4, 5, 8]}, "layers": [{"op": "batch_norm"}]},
        [S("compute_at", {"block": "bn1_shift", "target_block": "bn1", "target_loop": "w",
                          "preserve_unit_loops": False})],
        S("vectorize", {"block": "bn1", "loop": "w"})),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RIGHT))
def test_a_vectorized_producer_that_tvm_computes_right_is_accepted(pool, name):
    chain, before, step = RIGHT[name]
    session = Session.new(chain, before).apply(step, target="cpu")
    job = pool.run("run", {"chain": session.chain, "steps": [s.to_dict() for s in session.steps],
                           "target": "cpu", "measure": False}, timeout_s=120)
    assert job.status == "ok" and job.value["correct"], job.message


def test_any_step_that_leaves_a_reader_in_a_vectorized_iteration_is_refused():
    from tvm import s_tir

    from playground.chain.spec import normalize_chain
    from playground.schedule.postchecks import check_result
    from playground.schedule.replay import fresh_schedule

    sch = s_tir.Schedule(fresh_schedule(normalize_chain(RELU_CLIP)).mod)
    w = sch.get_loops(sch.get_sblock("clip1"))[-1]
    sch.compute_at(sch.get_sblock("relu1"), w, preserve_unit_loops=False)
    sch.vectorize(w)
    with pytest.raises(StepError, match="it puts relu1 and clip1 under the vectorized loop "
                                        "w: relu1 writes its buffer"):
        check_result(sch, S("compute_at", {"block": "relu1"}), "step 2 (compute_at)")


@pytest.mark.parametrize("name", list(CASES))
def test_refused_at_the_step_in_plain_words(name):
    chain, before, step, expected = CASES[name]
    session = Session.new(chain, before)
    with pytest.raises(StepError) as e:
        session.apply(step, target="cpu")
    message = str(e.value)
    assert expected in message, message
    assert "\n" not in message and not message.endswith(":")
    assert "—" in message or "use" in message  # a hint of what to do instead


def test_a_transform_of_a_copy_is_fine():
    session = Session.new(CONV_RELU, [S("cache_read", {"block": "conv1_pad",
                                                       "read_buffer_index": 0,
                                                       "storage_scope": "global"})])
    session = session.apply(S("transform_layout", {
        "block": "data_global", "buffer": ["write", 0],
        "index_map": "lambda n, c, h, w: (n, h, w, c)"}), target="cpu")
    assert session.cursor == 2


def test_the_readme_fusion_and_reverse_compute_at_of_relu_are_accepted():
    Session.new(CONV_RELU_CONV, fuse_two_convs(8))
    Session.new(CONV_RELU, [S("reverse_compute_at", {"block": "relu1", "target_block": "conv1",
                                                     "target_loop": "w"})])


def test_bind_without_a_known_target_is_refused_at_build_in_plain_words():
    session = Session.new(CONV_RELU, [S("bind", {"block": "relu1", "loop": "c",
                                                 "thread": "threadIdx.x"})])
    with pytest.raises(BuildError) as e:
        lower(session.schedule().mod, "cpu")
    assert "bound to a GPU thread, but the target is the CPU" in str(e.value)


def test_every_preset_still_applies():
    from playground.io.presets import list_presets

    broken = [(p["name"], p["error"]) for p in list_presets() if p.get("error")]
    assert broken == []


def test_every_rule_belongs_to_a_primitive():
    """The catalog names each primitive's rules; every name is a rule and every rule is used."""
    from playground.schedule.prechecks import RULES
    from playground.schedule.steps import CATALOG

    named = [n for p in CATALOG.values() for n in p.prechecks]
    assert set(named) == set(RULES)


def test_a_cache_write_past_an_overshooting_split_is_refused_not_built():
    """The deep schedule fuzz (5000 cases): a unit image loop split by 2 x 2, fused, split
    again, then ``cache_write``. TVM 0.27 sizes the copy from the loops (8 images), and its
    write-back wrote 8 images into a 1-image output: the worker died with SIGABRT. Refused
    at the step that makes a block write outside a buffer, in one line."""
    chain = {"input": {"shape": [1, 1, 3, 3]},
             "layers": [{"op": "conv2d", "channels": 1, "kernel": 1, "stride": 2,
                         "dilation": 2}]}
    before = [S("split", {"block": "conv1", "loop": "n", "factors": [None, 2, 2]}),
              S("fuse", {"block": "conv1", "loops": ["n_0", "n_1"]}),
              S("split", {"block": "conv1", "loop": "n_0_n_1_fused",
                          "factors": [None, 2, 2]})]
    message = refused_cache_write(chain, before)
    assert message.startswith("step 4 (cache_write): TVM 0.27 made conv1_global write conv1 "
                              "at index 7 of axis 0, which has 1 element:"), message
    # the same copy before the split is fine
    Session.new(chain, [CACHE_WRITE_CONV1, *before])


CACHE_WRITE_CONV1 = S("cache_write", {"block": "conv1", "write_buffer_index": 0,
                                      "storage_scope": "global"})


def refused_cache_write(chain: dict, before: list) -> str:
    """The one-line message refusing a cache_write of conv1 after ``before``."""
    with pytest.raises(StepError) as e:
        Session.new(chain, before).apply(CACHE_WRITE_CONV1, target="cpu")
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.slow
def test_a_decompose_reduction_inside_the_halo_is_accepted_and_right(pool):
    """The rule refuses the init above the recomputed rows, not below them: conv2 computed
    at conv3's rows and decomposed at its own channel loop validates against the reference
    (poisoned buffers, in the worker)."""
    steps = [S("compute_at", {"block": "conv2", "target_block": "conv3", "target_loop": "h",
                              "preserve_unit_loops": False}),
             S("decompose_reduction", {"block": "conv2", "loop": "ax0"})]
    session = Session.new(GROUPED_1X1_CONV, steps)
    job = pool.run("run", {"chain": session.chain, "steps": [s.to_dict() for s in steps],
                           "target": "cpu", "measure": False}, timeout_s=120)
    assert job.status == "ok" and job.value["correct"], job.message


def test_a_cache_write_that_loses_its_producers_border_guard_is_refused():
    """The deep schedule fuzz's seed 992165: conv1 computed at a padded stride-2 conv2's
    ``w`` (under conv2's ``rw``, reordered outermost), then ``cache_write`` of conv1. TVM 0.27
    copies conv1's region back without conv1's border guard: the write-back touched column -1
    and the worker died with SIGBUS. Refused at the cache_write, in one line."""
    chain = {"input": {"shape": [1, 2, 6, 6]},
             "layers": [{"op": "conv2d", "channels": 8, "kernel": 3},
                        {"op": "conv2d", "channels": 1, "kernel": 3, "stride": 2,
                         "padding": 1}]}
    before = [S("compute_inline", {"block": "conv2_pad"}),
              S("reorder", {"block": "conv2", "loops": ["rw", "n"]}),
              S("compute_at", {"block": "conv1", "target_block": "conv2", "target_loop": "w",
                               "preserve_unit_loops": False})]
    message = refused_cache_write(chain, before)
    assert message.startswith("step 4 (cache_write): TVM 0.27 made conv1_global's axis v3 "
                              "reach -1, outside 0..3"), message
    # cached before the move, the copy is moved with the block and is accepted
    Session.new(chain, [before[0], before[1], CACHE_WRITE_CONV1])


def test_an_unroll_within_the_limit_applies_and_a_vector_loop_counts_once():
    # the innermost 32 pixels: 32 iterations (the templates' register tiles unroll < 300)
    Session.new(WIDE_RELU).apply(S("unroll", {"block": "relu1", "loop": "w"}), target="cpu")
    # 64 channels around a 32x32 image with the pixel rows vectorized: 64 x 32 = 2,048
    vec = Session.new(WIDE_RELU, [S("vectorize", {"block": "relu1", "loop": "w"})])
    vec.apply(S("unroll", {"block": "relu1", "loop": "c"}), target="cpu")

"""Every primitive of the catalog applied to a real chain: the IR changes as it should, the
trace replays to the same IR, CPU schedules still compute the right numbers, and bad arguments
are refused with messages naming the step, the argument and the value."""

import pytest
from helpers import (
    CONV_RELU,
    CONV_RELU_CONV,
    assert_trace_round_trip,
    check_numerics,
    fuse_two_convs,
)

from playground.errors import StepError
from playground.schedule.replay import blocks
from playground.schedule.session import Session
from playground.schedule.steps import CATALOG, Step, normalize_step, step_code


def _loops(session, block):
    return {b.name: b for b in blocks(session.schedule())}[block].loops


def _kinds(session, block):
    return {loop.name: loop.kind for loop in _loops(session, block)}


S = Step
# (primitive, chain, steps before, the step, check on the resulting session, runs on CPU)
CASES = {
    "split": (CONV_RELU, [], S("split", {"block": "conv1", "loop": "h", "factors": [None, 4]}),
              lambda s: [(x.name, x.extent) for x in _loops(s, "conv1")][2:4]
              == [("h_0", 4), ("h_1", 4)], True),
    "fuse": (CONV_RELU, [], S("fuse", {"block": "relu1", "loops": ["n", "c", "h"]}),
             lambda s: _loops(s, "relu1")[0].extent == 8 * 16, True),
    "reorder": (CONV_RELU, [], S("reorder", {"block": "conv1", "loops": ["h", "k"]}),
                lambda s: [x.name for x in _loops(s, "conv1")][:3] == ["n", "h", "k"], True),
    "parallel": (CONV_RELU, [], S("parallel", {"block": "conv1", "loop": "k"}),
                 lambda s: _kinds(s, "conv1")["k"] == "parallel", True),
    "vectorize": (CONV_RELU, [], S("vectorize", {"block": "relu1", "loop": "w"}),
                  lambda s: _kinds(s, "relu1")["w"] == "vectorized", True),
    "unroll": (CONV_RELU, [], S("unroll", {"block": "conv1", "loop": "rw"}),
               lambda s: _kinds(s, "conv1")["rw"] == "unrolled", True),
    "bind": (CONV_RELU, [S("fuse", {"block": "relu1", "loops": ["n", "c", "h", "w"]}),
                         S("split", {"block": "relu1", "loop": "n_c_h_w_fused",
                                     "factors": [None, 128]})],
             S("bind", {"block": "relu1", "loop": "n_c_h_w_fused_1", "thread": "threadIdx.x"}),
             lambda s: _loops(s, "relu1")[1].thread == "threadIdx.x", False),
    "compute_at": (CONV_RELU_CONV, fuse_two_convs()[:4],
                   S("compute_at", {"block": "relu1", "target_block": "conv2",
                                    "target_loop": "w_0"}),
                   lambda s: [x.name for x in _loops(s, "relu1")][:3] == ["n", "h_0", "w_0"],
                   True),
    "reverse_compute_at": (CONV_RELU, [],
                           S("reverse_compute_at", {"block": "relu1", "target_block": "conv1",
                                                    "target_loop": "h"}),
                           lambda s: [x.name for x in _loops(s, "relu1")][:3]
                           == ["n", "k", "h"], True),
    "compute_inline": (CONV_RELU, [], S("compute_inline", {"block": "conv1_pad"}),
                       lambda s: "conv1_pad" not in {b.name for b in blocks(s.schedule())},
                       True),
    "reverse_compute_inline": (
        {"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "relu"}, {"op": "relu6"}]}, [],
        S("reverse_compute_inline", {"block": "relu6_1"}),
        lambda s: [b.name for b in blocks(s.schedule())] == ["relu1"], True),
    "cache_read": (CONV_RELU, [], S("cache_read", {"block": "conv1", "read_buffer_index": 1,
                                                   "storage_scope": "global"}),
                   lambda s: "conv1_weight_global" in {b.name for b in blocks(s.schedule())},
                   True),
    "cache_write": (CONV_RELU, [], S("cache_write", {"block": "conv1", "write_buffer_index": 0,
                                                     "storage_scope": "global"}),
                    lambda s: "conv1_global" in {b.name for b in blocks(s.schedule())}, True),
    "set_scope": (CONV_RELU, [], S("set_scope", {"block": "conv1_pad", "buffer_index": 0,
                                                 "storage_scope": "shared"}),
                  lambda s: 'scope="shared"' in s.schedule().mod.script(), False),
    "decompose_reduction": (CONV_RELU, [], S("decompose_reduction", {"block": "conv1",
                                                                     "loop": "rc"}),
                            lambda s: "conv1_init" in {b.name for b in blocks(s.schedule())},
                            True),
    "annotate": (CONV_RELU, [], S("annotate", {"block": "conv1", "loop": "h",
                                               "key": "pragma_auto_unroll_max_step",
                                               "value": 16}),
                 lambda s: "pragma_auto_unroll_max_step" in s.schedule().mod.script(), True),
    "transform_layout": (CONV_RELU, [], S("transform_layout", {
        "block": "conv1", "buffer": ["write", 0],
        "index_map": "lambda n, k, h, w: (n, k // 4, h, w, k % 4)"}),
        lambda s: "T.sblock_alloc_buffer((1, 2, 16, 16, 4))" in s.schedule().mod.script(),
        True),
    "storage_align": (CONV_RELU, [], S("storage_align", {
        "block": "conv1_pad", "buffer_index": 0, "axis": 2, "factor": 16, "offset": 1}),
        lambda s: "buffer_dim_align" in s.schedule().mod.script(), True),
    "winograd": (CONV_RELU, [], S("winograd", {"block": "conv1", "tile": 2}),
                 lambda s: {"conv1_U", "conv1_V", "conv1_M", "conv1_Y", "conv1"}
                 <= {b.name for b in blocks(s.schedule())}, True),
}


def test_every_primitive_of_the_catalog_has_a_case():
    assert set(CASES) == set(CATALOG)


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_on_a_real_chain(name):
    chain, before, step, check, runs_on_cpu = CASES[name]
    session = Session.new(chain, before)
    after = session.apply(step)
    assert after.cursor == len(before) + 1
    assert check(after), f"{name}: the IR did not change as expected"
    assert_trace_round_trip(after.chain, after.schedule())
    if runs_on_cpu:
        assert check_numerics(after.chain, after.schedule().mod)["correct"]
    # The line an export writes names the primitive and the blocks.
    assert step_code(after.steps[-1]).startswith(
        f"{name}(sch, CHAIN, " if CATALOG[name].rewrite else f"sch.{name}(")


def test_fusing_two_convolutions_recomputes_the_halo_and_stays_correct():
    session = Session.new(CONV_RELU_CONV, fuse_two_convs(8))
    conv1 = {b.name: b for b in blocks(session.schedule())}["conv1"]
    # conv1 computes a 10x10 tile (8x8 plus a 1-pixel halo) for each 8x8 tile of conv2.
    extents = [x.extent for x in conv1.loops]
    assert extents[:3] == [1, 2, 2] and extents[3:6] == [8, 10, 10]
    assert check_numerics(session.chain, session.schedule().mod)["correct"]


@pytest.mark.parametrize(("step", "message"), [
    (S("split", {"block": "conv9", "loop": "h", "factors": [None, 4]}),
     "step 1 (split): block 'conv9' does not exist (blocks: conv1_pad, conv1, relu1)"),
    (S("split", {"block": "conv1", "loop": "zz", "factors": [None, 4]}),
     "step 1 (split): block conv1 has no loop 'zz' (its loops: n, k, h, w, rc, rh, rw)"),
    (S("split", {"block": "conv1", "loop": "h", "factors": [None, None]}),
     "step 1 (split): at most one factor may be None, got [None, None]"),
    (S("split", {"block": "conv1", "loop": "h", "factors": [0, 4]}),
     "step 1 (split): factor 0 must be an integer from 1 to 65536 or None"),
    (S("split", {"block": "conv1", "loop": "h"}),
     "step 1 (split): missing argument 'factors' (extents, outer to inner)"),
    (S("split", {"block": "conv1", "loop": "h", "factors": [2, 8], "bogus": 1}),
     "step 1 (split): unknown argument 'bogus' (takes block, loop, factors)"),
    (S("tile", {}), "step 1 (tile): unknown primitive 'tile'"),
    (S("parallel", {"block": "conv1", "loop": 3}),
     "step 1 (parallel): loop must be a loop name, got 3"),
    (S("bind", {"block": "conv1", "loop": "h", "thread": "warp.x"}),
     "step 1 (bind): thread must be one of blockIdx.x"),
    (S("annotate", {"block": "conv1", "loop": "h", "key": "pragma_auto_unroll_max_step",
                    "value": 1 << 30}),
     "step 1 (annotate): value must be between 0 and 1024, got 1073741824"),
    (S("compute_at", {"block": "conv1", "target_block": "relu1", "target_loop": "h",
                      "preserve_unit_loops": "yes"}),
     "step 1 (compute_at): preserve_unit_loops must be true or false, got 'yes'"),
    (S("transform_layout", {"block": "conv1", "buffer": ["write", 0],
                            "index_map": "lambda n: __import__('os')"}),
     "step 1 (transform_layout): index_map may use only its parameters"),
    (S("transform_layout", {"block": "conv1", "buffer": ["both", 0],
                            "index_map": "lambda n, k, h, w: (n, k, h, w)"}),
     'step 1 (transform_layout): buffer must be ["read" or "write", index]'),
    (S("vectorize", {"block": "conv1", "loop": "rc"}),
     "step 1 (vectorize): conv1.rc is not an innermost loop (rh inside it)"),
    (S("vectorize", {"block": "conv1", "loop": "rw"}),
     "step 1 (vectorize): conv1.rw is a reduction loop of conv1"),
    (S("compute_at", {"block": "relu1", "target_block": "relu1", "target_loop": "h"}),
     "step 1 (compute_at): relu1 is already inside loop h"),
])
def test_bad_steps_are_refused_and_the_session_is_unchanged(step, message):
    session = Session.new(CONV_RELU)
    script = session.schedule().mod.script()
    with pytest.raises(StepError) as e:
        session.apply(step)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
    assert session.cursor == 0 and session.schedule().mod.script() == script


def test_tvm_refusal_keeps_the_full_explanation_in_detail():
    session = Session.new(CONV_RELU)
    with pytest.raises(StepError) as e:
        session.apply(S("compute_at", {"block": "relu1", "target_block": "relu1",
                                       "target_loop": "h"}))
    assert len(e.value.detail) > 500 and 'T.sblock("relu1")' in e.value.detail


def test_defaults_are_filled_in():
    step = normalize_step(S("compute_at", {"block": "a", "target_block": "b",
                                           "target_loop": "c"}))
    assert step.args["preserve_unit_loops"] is False


def test_duplicate_loop_names_get_an_occurrence_suffix():
    # Computing relu1 at conv1's loop gives relu1 loops named ax*, unique within its nest.
    session = Session.new(CONV_RELU, [S("reverse_compute_at", {
        "block": "relu1", "target_block": "conv1", "target_loop": "w"})])
    names = [x.name for x in _loops(session, "relu1")]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------- the catalog

def _apply_example(prim):
    """Apply ``prim``'s documented example as the playground does (pre-checks included) and
    return the TVMScript lines it adds, and TVM's return value of the call."""
    import difflib

    from playground.chain.spec import normalize_chain
    from playground.schedule.replay import apply_step, call_args, scheduled

    ex = prim.example
    chain = normalize_chain(ex.chain)
    before = scheduled(chain, tuple(Step.from_dict(d) for d in ex.setup))
    step = Step.from_dict(ex.step)
    after = before.copy()
    apply_step(after, step, chain=chain)
    diff = difflib.ndiff(before.mod.script().splitlines(), after.mod.script().splitlines())
    added = "\n".join(line[2:] for line in diff if line.startswith("+ "))
    if prim.rewrite:  # the playground's own, in place: no TVM call returns anything
        return added, None
    direct = before.copy()
    positional, keywords = call_args(direct, normalize_step(step), prim.name)
    return added, getattr(direct, prim.name)(*positional, **keywords)


def _returned(value) -> str:
    from tvm.s_tir.schedule import LoopRV, SBlockRV

    if value is None:
        return ""
    if isinstance(value, SBlockRV):
        return "block"
    if isinstance(value, LoopRV):
        return "loop"
    assert all(isinstance(v, LoopRV) for v in value), value
    return "loops"


@pytest.mark.parametrize("name", list(CATALOG))
def test_example_changes_the_program_as_documented(name):
    """Each primitive's before/after example applies, adds what it says to the TVMScript,
    and TVM's call returns what the catalog's ``returns`` says."""
    prim = CATALOG[name]
    assert prim.example.step["primitive"] == name and prim.example.says
    added, value = _apply_example(prim)
    for text in prim.example.adds:
        assert text in added, f"{name}: {text!r} not among the added lines:\n{added}"
    assert _returned(value) == prim.returns



def _permutation_kind():
    """A new argument kind: a permutation of a block's iteration variables, ``[3, 2, 1, 0]``.
    Only what differs from the base kind (a JSON literal passed as it is) is written."""
    from playground.schedule.kinds import Kind

    class Permutation(Kind):
        name = "permutation"
        widget = "text"

        def normalize(self, arg, value, ctx):
            if not isinstance(value, list) or sorted(value) != list(range(len(value))) or \
                    any(isinstance(v, bool) for v in value):
                raise StepError(f"{ctx}: {arg.name} must be a permutation of 0 to n-1, got "
                                f"{value!r}", where=arg.name)
            return value

    return Permutation()


def test_a_new_argument_kind_is_one_class(monkeypatch):
    """A primitive with a new kind of argument: the kind is one class (above), the primitive
    one catalog record; checking, replay, export, import and labels need nothing else."""
    from playground.io.export import export_script
    from playground.io.script_import import import_script
    from playground.schedule.kinds import Block
    from playground.schedule.steps import EXAMPLE_CHAIN, Arg, Example, Primitive

    step = {"primitive": "reorder_block_iter_var",
            "args": {"block": "relu1", "new_order": [3, 2, 1, 0]}}
    prim = Primitive(
        "reorder_block_iter_var", "Reorder a block's iteration variables.",
        (Arg("block", Block(), "the block"),
         Arg("new_order", _permutation_kind(), "the variables' new order")),
        ((None, "block"), (None, "new_order")),
        Example(step, "relu1's variables are bound in reverse order",
                ('v_w, v_h, v_c, v_n = T.axis.remap("SSSS", [w, h, c, n])',)))
    monkeypatch.setitem(CATALOG, prim.name, prim)

    added, value = _apply_example(prim)
    assert prim.example.adds[0] in added and value is None
    with pytest.raises(StepError, match="new_order must be a permutation"):
        normalize_step(Step(prim.name, {"block": "relu1", "new_order": [0, 0, 1, 2]}))
    assert step_code(Step.from_dict(step)) == \
        'sch.reorder_block_iter_var(sch.get_sblock("relu1"), [3, 2, 1, 0])'
    _, steps, _ = import_script(export_script(EXAMPLE_CHAIN, [step]))
    assert steps == (Step.from_dict(step),)
    assert steps[0].label() == "reorder_block_iter_var relu1 new_order=[3, 2, 1, 0]"

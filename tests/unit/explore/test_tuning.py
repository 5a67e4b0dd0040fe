"""Tests of the auto-tuning baseline: trace -> steps conversion (fast) and the tune job (slow)."""

from __future__ import annotations

import pytest
import tvm_ffi
from helpers import CONV_RELU

from playground import service
from playground.chain.spec import normalize_chain
from playground.explore.tuning import (
    TuneResult,
    TuningError,
    check_trials,
    estimate_seconds,
    strip_hints,
    trace_to_steps,
    tune,
    verify,
)
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.worker.pool import WorkerPool

# The best schedule MetaSchedule 0.27 found for CONV_RELU in 8 trials (seed 0), with its
# postprocessing, as ``compile_tir(...).trace.as_python()`` printed it.
TUNED_TRACE = """\
b0 = sch.get_sblock(name="conv1_pad", func_name="main")
b1 = sch.get_sblock(name="conv1", func_name="main")
b2 = sch.get_sblock(name="root", func_name="main")
sch.annotate(block_or_loop=b1, ann_key="meta_schedule.tiling_structure", ann_val="SSRSRS")
l3, l4, l5, l6, l7, l8, l9 = sch.get_loops(block=b1)
v10, v11, v12, v13 = sch.sample_perfect_tile(loop=l3, n=4, max_innermost_factor=64, decision=[1, 1, 1, 1])
l14, l15, l16, l17 = sch.split(loop=l3, factors=[v10, v11, v12, v13], preserve_unit_iters=True, disable_predication=False)
v18, v19, v20, v21 = sch.sample_perfect_tile(loop=l4, n=4, max_innermost_factor=64, decision=[1, 4, 1, 2])
l22, l23, l24, l25 = sch.split(loop=l4, factors=[v18, v19, v20, v21], preserve_unit_iters=True, disable_predication=False)
v26, v27, v28, v29 = sch.sample_perfect_tile(loop=l5, n=4, max_innermost_factor=64, decision=[1, 1, 2, 8])
l30, l31, l32, l33 = sch.split(loop=l5, factors=[v26, v27, v28, v29], preserve_unit_iters=True, disable_predication=False)
v34, v35, v36, v37 = sch.sample_perfect_tile(loop=l6, n=4, max_innermost_factor=64, decision=[1, 1, 16, 1])
l38, l39, l40, l41 = sch.split(loop=l6, factors=[v34, v35, v36, v37], preserve_unit_iters=True, disable_predication=False)
v42, v43 = sch.sample_perfect_tile(loop=l7, n=2, max_innermost_factor=64, decision=[8, 1])
l44, l45 = sch.split(loop=l7, factors=[v42, v43], preserve_unit_iters=True, disable_predication=False)
v46, v47 = sch.sample_perfect_tile(loop=l8, n=2, max_innermost_factor=64, decision=[1, 3])
l48, l49 = sch.split(loop=l8, factors=[v46, v47], preserve_unit_iters=True, disable_predication=False)
v50, v51 = sch.sample_perfect_tile(loop=l9, n=2, max_innermost_factor=64, decision=[3, 1])
l52, l53 = sch.split(loop=l9, factors=[v50, v51], preserve_unit_iters=True, disable_predication=False)
sch.reorder(l14, l22, l30, l38, l15, l23, l31, l39, l44, l48, l52, l16, l24, l32, l40, l45, l49, l53, l17, l25, l33, l41)
b54, = sch.get_consumers(block=b1)
sch.reverse_compute_at(block=b54, loop=l39, preserve_unit_loops=True, index=-1)
sch.annotate(block_or_loop=b2, ann_key="meta_schedule.parallel", ann_val=32)
sch.annotate(block_or_loop=b2, ann_key="meta_schedule.vectorize", ann_val=64)
v55 = sch.sample_categorical(candidates=[0, 16, 64, 512], probs=[0.25, 0.25, 0.25, 0.25], decision=1)
sch.annotate(block_or_loop=b2, ann_key="meta_schedule.unroll_explicit", ann_val=v55)
l56 = sch.sample_compute_location(block=b0, decision=5)
sch.compute_at(block=b0, loop=l56, preserve_unit_loops=True, index=-1)
sch.enter_postproc()
b57 = sch.get_sblock(name="root", func_name="main")
sch.unannotate(block_or_loop=b57, ann_key="meta_schedule.parallel")
sch.unannotate(block_or_loop=b57, ann_key="meta_schedule.vectorize")
sch.unannotate(block_or_loop=b57, ann_key="meta_schedule.unroll_explicit")
b58, b59, b60 = sch.get_child_blocks(b57)
l61, l62, l63, l64, l65, l66, l67, l68, l69, l70 = sch.get_loops(block=b58)
l71 = sch.fuse(l61, l62, l63, l64, l65, l66, preserve_unit_iters=True)
sch.parallel(loop=l71)
l72 = sch.fuse(l70, preserve_unit_iters=True)
sch.vectorize(loop=l72)
l73, l74, l75, l76, l77, l78, l79, l80, l81, l82, l83, l84, l85, l86, l87, l88, l89 = sch.get_loops(block=b59)
l90 = sch.fuse(l73, preserve_unit_iters=True)
sch.parallel(loop=l90)
sch.annotate(block_or_loop=l90, ann_key="pragma_auto_unroll_max_step", ann_val=16)
sch.annotate(block_or_loop=l90, ann_key="pragma_unroll_explicit", ann_val=1)
l91, l92, l93, l94, l95, l96, l97 = sch.get_loops(block=b60)
l98 = sch.fuse(l97, preserve_unit_iters=True)
sch.vectorize(loop=l98)
b99 = sch.get_sblock(name="conv1", func_name="main")
l100, l101, l102, l103, l104, l105, l106, l107, l108, l109, l110, l111, l112, l113, l114, l115, l116 = sch.get_loops(block=b99)
b117 = sch.decompose_reduction(block=b99, loop=l103)
"""  # noqa: E501


def _trace(chain: dict, lines: list[str]):
    """The MetaSchedule trace that TVM printed as ``lines`` (run on a fresh schedule: these
    are TVM's own lines, from the recorded tuning above)."""
    from tvm import s_tir

    from playground.chain.compute import chain_module

    sch = s_tir.Schedule(chain_module(chain))
    exec("\n".join(lines), {"sch": sch, "T": None})
    return sch.trace


def test_estimate_grows_with_trials():
    assert estimate_seconds(16) < estimate_seconds(64)
    assert estimate_seconds(64, cores=4) < estimate_seconds(64, cores=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8", 10**6])
def test_check_trials_refuses(bad):
    with pytest.raises(TuningError, match="trials"):
        check_trials(bad)


def test_trace_converts_to_steps_that_replay_the_tuned_program():
    chain = normalize_chain(CONV_RELU)
    conversion, tuned = trace_to_steps(chain, _trace(chain, TUNED_TRACE.splitlines()))
    assert conversion.complete, conversion.unsupported
    prims = [s.primitive for s in conversion.steps]
    assert prims[:7] == ["split"] * 7
    # The sampled tile sizes became concrete factors.
    assert conversion.steps[1] == Step("split", {"block": "conv1", "loop": "k",
                                                 "factors": [1, 4, 1, 2]})
    assert {"reorder", "reverse_compute_at", "compute_at", "fuse", "parallel", "vectorize",
            "annotate", "decompose_reduction"} <= set(prims)
    # Only MetaSchedule hints are dropped.
    assert conversion.dropped
    assert all("meta_schedule." in line for line in conversion.dropped)
    equal, why = verify(chain, conversion, tuned)
    assert equal, why
    # The imported session is a normal one: every step is editable.
    session = Session.new(chain, [s.to_dict() for s in conversion.steps])
    assert session.cursor == len(conversion.steps)


def test_tuned_program_differs_only_by_hints():
    chain = normalize_chain(CONV_RELU)
    conversion, tuned = trace_to_steps(chain, _trace(chain, TUNED_TRACE.splitlines()))
    session = Session.new(chain, [s.to_dict() for s in conversion.steps])
    assert not tvm_ffi.structural_equal(session.schedule().mod, tuned.mod)  # tiling_structure
    stripped = tuned.copy()
    strip_hints(stripped)
    assert tvm_ffi.structural_equal(session.schedule().mod, stripped.mod)


def test_sampled_compute_locations_root_and_inline():
    chain = normalize_chain(CONV_RELU)
    lines = ['b0 = sch.get_sblock(name="conv1_pad", func_name="main")',
             'b1 = sch.get_sblock(name="relu1", func_name="main")',
             "l2 = sch.sample_compute_location(block=b0, decision=-2)",
             "sch.compute_at(block=b0, loop=l2, preserve_unit_loops=True, index=-1)",
             "l3 = sch.sample_compute_location(block=b1, decision=-1)",
             "sch.reverse_compute_at(block=b1, loop=l3, preserve_unit_loops=True, index=-1)"]
    conversion, tuned = trace_to_steps(chain, _trace(chain, lines))
    assert conversion.steps == (Step("compute_inline", {"block": "conv1_pad"}),)
    assert len(conversion.dropped) == 1 and "root" in conversion.dropped[0]
    assert verify(chain, conversion, tuned)[0]


def test_unsupported_instruction_stops_the_conversion():
    chain = normalize_chain(CONV_RELU)
    lines = ['b0 = sch.get_sblock(name="conv1", func_name="main")',
             "l1, l2, l3, l4, l5, l6, l7 = sch.get_loops(block=b0)",
             "l8, l9 = sch.split(loop=l3, factors=[4, 4], preserve_unit_iters=True)",
             "b10 = sch.blockize(target=l9)"]
    conversion, _ = trace_to_steps(chain, _trace(chain, lines))
    assert not conversion.complete
    assert "blockize" in conversion.unsupported
    assert [s.primitive for s in conversion.steps] == ["split"]


def test_caches_convert_unless_they_name_consumer_blocks():
    chain = normalize_chain(CONV_RELU)
    lines = ['b0 = sch.get_sblock(name="conv1", func_name="main")',
             'b1 = sch.get_sblock(name="relu1", func_name="main")',
             'b2 = sch.cache_write(block=b0, write_buffer_index=0, storage_scope="global")',
             'b3 = sch.cache_read(block=b1, read_buffer_index=0, storage_scope="local", '
             'consumer_blocks=[b1])']
    conversion, _ = trace_to_steps(chain, _trace(chain, lines))
    assert conversion.steps == (Step("cache_write", {"block": "conv1", "write_buffer_index": 0,
                                                     "storage_scope": "global"}),)
    assert not conversion.complete and "cache_read with consumer_blocks" in conversion.unsupported


POOL_CHAIN = {"input": {"shape": [1, 8, 16, 16]},
              "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                         {"op": "relu"}, {"op": "max_pool2d", "kernel": 2, "stride": 2}]}


@pytest.mark.slow
@pytest.mark.parametrize("chain", [CONV_RELU, POOL_CHAIN], ids=["conv_relu", "conv_relu_pool"])
def test_tune_tiny_chain_gives_importable_steps(chain):
    """The whole tuned schedule comes over as steps (a pool's window, which MetaSchedule's
    rfactor rule used to split, included) and computes the right numbers."""
    session = Session.new(chain)
    with WorkerPool(1, num_threads=2) as pool:
        result = tune(pool, session, trials=8)
        assert result.status == "ok", (result.message, result.detail[-2000:])
        tuned = TuneResult.from_value(result.value)
        assert tuned.complete and tuned.structurally_equal, tuned.notes
        assert 1 <= tuned.trials <= 8
        assert tuned.best_ms is not None and tuned.best_ms > 0
        imported = tuned.session(session.chain)
        assert imported.cursor == len(tuned.steps) > 0
        check = service.run(pool, imported, measure=False)
        assert check.status == "ok" and check.value["correct"] is True


class _Trace:
    """A stand-in for a tuning record's trace: applies ``ops`` to a schedule."""

    def __init__(self, ops):
        self.ops = ops

    def apply_to_schedule(self, sch, remove_postproc):
        self.ops(sch)


class _Record:
    def __init__(self, ops, secs):
        self.trace, self.run_secs = _Trace(ops), [secs]


class _Database:
    def __init__(self, records):
        self.records = records

    def commit_workload(self, mod):
        return mod

    def get_top_k(self, workload, k):
        return self.records[:k]


def test_a_miscompiled_best_schedule_is_skipped_for_the_next_that_replays():
    """MetaSchedule's fastest record moves conv2's padding under relu1's loops (TVM 0.27 never
    writes its zero border): the tune job returns the next record, and says why."""
    from playground.chain.compute import chain_module
    from playground.jobs.metaschedule import _best_that_replays

    chain = normalize_chain({"input": {"shape": [1, 4, 8, 8]}, "layers": [
        {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}, {"op": "relu"},
        {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}]})

    def pad_under_producer(sch):
        relu = sch.get_sblock("relu1")
        sch.reverse_compute_at(sch.get_sblock("conv2_pad"), sch.get_loops(relu)[1])

    def split(sch):
        sch.split(sch.get_loops(sch.get_sblock("conv2"))[2], factors=[None, 4])

    db = _Database([_Record(pad_under_producer, 1e-4), _Record(split, 2e-4)])
    trace, conversion, equal, why, best_ms, skipped, ran = _best_that_replays(
        db, chain_module(chain), chain)
    assert equal and not why and ran == {}
    assert any("sch.split(" in line for line in trace)
    assert [s.primitive for s in conversion.steps] == ["split"]
    assert best_ms == pytest.approx(0.2)
    assert skipped[0] == 1 and "conv2_pad" in skipped[1] and "border" in skipped[1]
    # A record whose steps compute wrong numbers (as the run job's check finds) is skipped
    # like a refused one; the next is returned with what the check said.
    seen = []

    def run(steps):
        seen.append(steps)
        return {"correct": len(seen) > 1, "message": "3 of 256 elements differ",
                "median_ms": 0.5}

    db = _Database([_Record(split, 1e-4), _Record(split, 2e-4)])
    *_, best_ms, skipped, ran = _best_that_replays(db, chain_module(chain), chain, run=run)
    assert len(seen) == 2 and ran["median_ms"] == 0.5 and best_ms == pytest.approx(0.2)
    assert skipped == (1, "they compute a wrong result (3 of 256 elements differ)")


def test_the_search_space_leaves_out_rfactor():
    """rfactor is no playground primitive: a trace with it would import only up to there."""
    from tvm.s_tir import meta_schedule as ms

    from playground.jobs.metaschedule import _space

    rules = list(_space(ms).sch_rules)
    assert rules and not any(isinstance(r, ms.schedule_rule.AddRFactor) for r in rules)
    assert any(isinstance(r, ms.schedule_rule.MultiLevelTiling) for r in rules)

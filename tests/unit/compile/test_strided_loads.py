"""Strided vector loads read as one contiguous load and a shuffle (``compile/strided_loads``).

The pass runs last in the playground's TIR pipeline: these tests check what it rewrites (and
what not), that the span reads past the last element only where the loop bounds prove the
buffer holds it, that the results are right on small kernels and on templated strided convs
(poisoned buffers), that the lowered view shows it, and that switching the playground's
lowering steps off switches it off too.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from playground.chain.spec import normalize_chain
from playground.compile.lowering import lower, pipeline_name
from playground.compile.strided_loads import MAX_STRIDE, STRIDED_LOADS_ATTR
from playground.schedule.session import Session
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.space import tile_candidates
from playground.templates.stages import stages


def _strided(n: int, lanes: int, stride: int, offset: int, rows: int = 1):
    """``B[r, i] = A[r * n + stride * i + offset]``, the ``i`` loop vectorized."""
    @T.prim_func(s_tir=True)
    def f(A: T.Buffer((rows * n,), "float32"), B: T.Buffer((rows, lanes), "float32")):
        for r, i in T.grid(rows, lanes):
            with T.sblock("b"):
                vr, vi = T.axis.remap("SS", [r, i])
                B[vr, vi] = A[vr * n + stride * vi + offset]

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": f}))
    sch.vectorize(sch.get_loops(sch.get_sblock("b"))[1])
    return sch.mod


def _run(mod, n, lanes, stride, offset, rows=1):
    ex = tvm.compile(mod, target="llvm", tir_pipeline=pipeline_name(True))
    a = np.arange(rows * n, dtype="float32")
    out = tvm.runtime.tensor(np.full((rows, lanes), np.nan, dtype="float32"))
    ex["main"](tvm.runtime.tensor(a), out)
    want = np.array([[a[r * n + stride * i + offset] for i in range(lanes)]
                     for r in range(rows)], dtype="float32")
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.parametrize("stride", [2, 3, 4])
def test_a_strided_load_becomes_a_contiguous_load_and_a_shuffle(stride):
    lanes, n = 8, 8 * stride
    mod = _strided(n, lanes, stride, 0)
    text = lower(mod, "cpu").script()
    indices = ", ".join(str(stride * i) for i in range(lanes))
    assert f"T.Shuffle([A_1[T.Ramp(0, 1, {stride * lanes})]], [{indices}])" in text, text
    assert f"(stride {stride}: 1)" in lower(mod, "cpu")["main"].attrs[STRIDED_LOADS_ATTR]
    _run(mod, n, lanes, stride, 0)


def test_the_span_ends_at_the_last_element_read_unless_the_buffer_provably_holds_more():
    """A 15-element buffer read from offset 0: a 16-element span would read A[15], past its
    end, and there is nothing before A[0]; the span stops at A[14]. From offset 1 of a
    16-element buffer, the span shifts back one element to A[0..15] and the shuffle picks the
    odd lanes. Under a loop, the loop's bounds prove the wide span for every row."""
    tight = _strided(15, 8, 2, 0)
    assert "A_1[T.Ramp(0, 1, 15)]" in lower(tight, "cpu").script()
    _run(tight, 15, 8, 2, 0)
    mod = _strided(16, 8, 2, 1)
    odd = ", ".join(str(2 * i + 1) for i in range(8))
    assert f"T.Shuffle([A_1[T.Ramp(0, 1, 16)]], [{odd}])" in lower(mod, "cpu").script()
    _run(mod, 16, 8, 2, 1)
    held = _strided(16, 8, 2, 0, rows=3)  # every row's 16-element span inside A
    assert "T.Ramp(r * 16, 1, 16)" in lower(held, "cpu").script()
    _run(held, 16, 8, 2, 0, rows=3)
    short = _strided(16, 8, 2, 1, rows=3)  # the last row's would read past A's end
    assert f"T.Shuffle([A_1[T.Ramp(r * 16, 1, 16)]], [{odd}])" in lower(short, "cpu").script()
    _run(short, 16, 8, 2, 1, rows=3)
    three = _strided(24, 8, 3, 2)  # stride 3 from offset 2: shifted back two elements
    every = ", ".join(str(3 * i + 2) for i in range(8))
    assert f"T.Shuffle([A_1[T.Ramp(0, 1, 24)]], [{every}])" in lower(three, "cpu").script()
    _run(three, 24, 8, 3, 2)


def test_other_strides_contiguous_loads_and_switched_off_builds_are_left_alone():
    wide = _strided(8 * (MAX_STRIDE + 1), 8, MAX_STRIDE + 1, 0)
    assert "Shuffle" not in lower(wide, "cpu").script()
    _run(wide, 8 * (MAX_STRIDE + 1), 8, MAX_STRIDE + 1, 0)
    unit = _strided(8, 8, 1, 0)
    assert lower(unit, "cpu")["main"].attrs[STRIDED_LOADS_ATTR] == "no strided vector loads"
    off = lower(_strided(16, 8, 2, 0), "cpu", tile_local=False)
    assert "Shuffle" not in off.script() and STRIDED_LOADS_ATTR not in off["main"].attrs


def _rows_conv(shape, channels, stride, groups, width_lanes):
    chain = normalize_chain({"input": {"shape": shape},
                             "layers": [{"op": "conv2d", "channels": channels, "kernel": 3,
                                         "stride": stride, "padding": 1, "groups": groups},
                                        {"op": "relu6"}]})
    from fuzzing import facts_with

    facts = facts_with(width_lanes)
    (stage,) = stages(chain)
    tile = next(t for t in tile_candidates(stage, facts) if t.vector == "w" and not t.phases)
    plan = Plan((tile,), (Group(0, 0),), lanes=facts.lanes(), weights="constant")
    return chain, plan_steps(chain, plan).steps


@pytest.mark.slow
@pytest.mark.parametrize("shape, channels, stride, groups, bits", [
    ([1, 16, 32, 32], 16, 2, 16, 512),   # MobileNet's depthwise 3x3/2: 16 out columns
    ([1, 8, 33, 31], 8, 2, 8, 256),      # odd sizes: the last vector's span stops short
    ([1, 12, 25, 46], 12, 3, 4, 256),    # grouped 3x3/3, 16 out columns
])
def test_strided_convs_with_the_input_in_rows_validate(pool, shape, channels, stride, groups,
                                                       bits):
    from playground import service

    chain, steps = _rows_conv(shape, channels, stride, groups, bits)
    session = Session.new(chain, steps)
    for weights in ("per-call", "constant"):
        result = service.run(pool, session, "cpu", measure=False, weights=weights)
        assert result.status == "ok" and result.value["correct"], (weights, result)
    shown = service.lower(pool, session).value
    assert "T.Shuffle" in shown["text"] and STRIDED_LOADS_ATTR in shown["text"]
    assert "strided vector loads read as one contiguous load" in shown["strided_loads"]

"""Strided window layers read their padded input de-interleaved by column phase.

A row-vectorized conv (``vector="w"``) or pool with stride ``s`` reads input columns ``s``
apart: a gather per tap in NCHW. The templates lay the padding block's buffer out as
``[n, c, h, w % s, w // s]`` (:func:`playground.templates.layouts.deinterleave_pad`), so every tap
is a contiguous vector load. These tests check that the step is planned where it applies (and
only there), that the phase layout reaches the lowered kernel, and that the result is right on
poisoned buffers for strides 2 and 3, dilations, odd widths, grouped and depthwise convs,
pools and fused groups.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fuzzing import facts_with

from playground.chain.spec import normalize_chain
from playground.schedule.session import Session
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.space import tile_candidates
from playground.templates.stages import stages

FACTS = facts_with(512)


def _conv(channels, kernel, stride, padding, groups=1, dilation=1):
    return {"op": "conv2d", "channels": channels, "kernel": kernel, "stride": stride,
            "padding": padding, "groups": groups, "dilation": dilation}


def _plan(chain: dict, vector: str | None = "w", groups=None) -> tuple[dict, list]:
    chain = normalize_chain(chain)
    st_ = stages(chain)
    tiles = []
    for s in st_:
        cands = [t for t in tile_candidates(s, FACTS) if vector is None or t.vector == vector]
        tiles.append(cands[0] if cands else None)
    groups = groups or tuple(Group(i, i) for i in range(len(st_)))
    r = plan_steps(chain, Plan(tuple(tiles), groups, lanes=FACTS.lanes()))
    return chain, list(r.steps)


def _phase_layouts(steps) -> dict[str, str]:
    return {s.args["block"]: s.args["index_map"] for s in steps
            if s.primitive == "transform_layout" and s.args["block"].endswith("_pad")}


CASES = {
    "depthwise 3x3/2": {"input": {"shape": [1, 16, 24, 24]},
                        "layers": [_conv(16, 3, 2, 1, groups=16), {"op": "relu6"}]},
    "grouped 3x3/3": {"input": {"shape": [1, 16, 19, 25]},
                      "layers": [_conv(16, 3, 3, 1, groups=4), {"op": "relu"}]},
    "dense 5x5/2 dilated": {"input": {"shape": [1, 3, 21, 30]},
                            "layers": [_conv(8, 5, 2, 4, dilation=2), {"op": "batch_norm"}]},
    "max pool 3x3/2": {"input": {"shape": [1, 8, 17, 16]},
                       "layers": [_conv(8, 3, 1, 1), {"op": "max_pool2d", "kernel": 3,
                                                       "stride": 2, "padding": 1}]},
    "avg pool 3x3/2": {"input": {"shape": [1, 8, 16, 16]},
                       "layers": [{"op": "avg_pool2d", "kernel": 3, "stride": 2,
                                   "padding": 1}]},
}


@pytest.mark.parametrize("name", list(CASES))
def test_strided_padded_layers_get_the_phase_layout(name):
    chain, steps = _plan(CASES[name])
    layouts = _phase_layouts(steps)
    strided = [s for s in stages(chain) if s.kind != "elementwise" and s.pad_block
               and s.layer["stride"][1] > 1]
    assert strided
    for s in strided:
        stride = s.layer["stride"][1]
        assert layouts[s.pad_block] == \
            f"lambda n, c, h, w: (n, c, h, w % {stride}, w // {stride})"


def test_unstrided_unpadded_odd_and_channel_vector_convs_keep_nchw():
    """Stride 1 reads contiguous columns already; without padding the input is the kernel's
    argument (its layout is fixed); a padded width the stride does not divide would need a
    pad value TVM's layout step is not given; a channel-vector conv broadcasts single input
    values."""
    odd = {"input": {"shape": [1, 16, 23, 23]}, "layers": [_conv(16, 3, 2, 1, groups=16)]}
    assert _phase_layouts(_plan(odd)[1]) == {}
    unstrided = {"input": {"shape": [1, 8, 16, 16]}, "layers": [_conv(8, 3, 1, 1)]}
    unpadded = {"input": {"shape": [1, 8, 17, 17]}, "layers": [_conv(8, 3, 2, 0)]}
    dense = {"input": {"shape": [1, 16, 28, 28]}, "layers": [_conv(32, 3, 2, 1)]}
    assert _phase_layouts(_plan(unstrided)[1]) == {}
    assert _phase_layouts(_plan(unpadded)[1]) == {}
    assert _phase_layouts(_plan(dense, vector="k")[1]) == {}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_phase_layout_validates_and_reaches_the_lowered_kernel(pool, name):
    from playground import service

    chain, steps = _plan(CASES[name])
    session = Session.new(chain, steps)
    result = service.run(pool, session, "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result
    text = service.lower(pool, session).value["text"]
    # the padding buffer is allocated phase by phase: its last two extents are (s, ceil(W/s))
    pad = next(s for s in stages(chain) if s.pad_block and s.layer["stride"][1] > 1)
    assert f"{pad.pad_block} = T.alloc_buffer" in text, text


@pytest.mark.slow
def test_a_fused_group_with_a_strided_depthwise_producer_validates(pool):
    """MobileNet v2's shape: depthwise 3x3/2 -> relu6 -> 1x1, fused at row tiles; the
    producer's padding is computed per tile, in the phase layout."""
    from playground import service

    chain = {"input": {"shape": [1, 16, 30, 30]},
             "layers": [_conv(16, 3, 2, 1, groups=16), {"op": "batch_norm"}, {"op": "relu6"},
                        _conv(32, 1, 1, 0), {"op": "relu6"}]}
    chain, steps = _plan(chain, vector=None, groups=(Group(0, 1, 5),))
    assert "conv1_pad" in _phase_layouts(steps)
    result = service.run(pool, Session.new(chain, steps), "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result


def _rows_variant(chain: dict) -> tuple[dict, list]:
    """The plan with every strided column tile's input kept in rows (``phases=False``)."""
    chain = normalize_chain(chain)
    st_ = stages(chain)
    tiles = []
    for s in st_:
        cands = [t for t in tile_candidates(s, FACTS) if t.vector == "w" and not t.phases]
        tiles.append(cands[0] if cands else (tile_candidates(s, FACTS) or [None])[0])
    r = plan_steps(chain, Plan(tuple(tiles), tuple(Group(i, i) for i in range(len(st_))),
                               lanes=FACTS.lanes()))
    return chain, list(r.steps)


def test_strided_padded_column_tiles_come_both_ways():
    """Phases or rows is the machine's call (one measured 0.18 ms in phases against 0.14 ms
    in rows on a depthwise 3x3/2, the other the reverse): each column tile of a strided,
    padded conv is offered both ways, phases first; an unpadded or unstrided one once."""
    for name in ("depthwise 3x3/2", "grouped 3x3/3"):
        stage = next(s for s in stages(normalize_chain(CASES[name])) if s.kind == "conv")
        tiles = [t for t in tile_candidates(stage, FACTS) if t.vector == "w"]
        assert tiles[0].phases and not tiles[1].phases
        assert replace(tiles[0], phases=False) == tiles[1]
        assert tiles[1].label().endswith(", input in rows")
    for chain in ({"input": {"shape": [1, 8, 17, 17]}, "layers": [_conv(8, 3, 2, 0, groups=8)]},
                  {"input": {"shape": [1, 8, 16, 16]}, "layers": [_conv(8, 3, 1, 1, groups=8)]}):
        stage = stages(normalize_chain(chain))[0]
        assert all(t.phases for t in tile_candidates(stage, FACTS))


def test_input_in_rows_keeps_nchw_and_copies_a_row_per_vector():
    _, steps = _rows_variant(CASES["depthwise 3x3/2"])
    assert _phase_layouts(steps) == {}
    assert any(s.primitive == "vectorize" and s.args["block"] == "conv1_pad" for s in steps)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["depthwise 3x3/2", "grouped 3x3/3", "dense 5x5/2 dilated"])
def test_input_in_rows_validates(pool, name):
    from playground import service

    chain, steps = _rows_variant(CASES[name])
    result = service.run(pool, Session.new(chain, steps), "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result

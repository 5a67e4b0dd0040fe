"""A 1x1 conv (stride 1, no padding, dense) tiled as a matrix product over pixel vectors.

Its input pixels are its output pixels, so ``ht`` whole rows of the image, fused into one loop,
are ``ht * W / lanes`` contiguous vectors of the NCHW input and output whatever the width
(:func:`playground.templates.conv._tile_pixels`): no weight or output layout copy. These tests
check where the tile is offered (and where not), that only the last layer of a group fused at
row tiles takes one, and that it is right
on poisoned buffers with batches, epilogues, a residual add and NCHW neighbours.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fuzzing import HypothesisDraw, facts_with
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.chain.spec import normalize_chain
from playground.errors import PlaygroundError
from playground.schedule.session import Session
from playground.templates.conv import Tile
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.search import candidate_plans
from playground.templates.space import tile_candidates
from playground.templates.stages import stages

FACTS = facts_with(512)  # 16 float32 lanes, 32 registers


def _conv(channels, kernel=1, stride=1, padding=0, groups=1):
    return {"op": "conv2d", "channels": channels, "kernel": kernel, "stride": stride,
            "padding": padding, "groups": groups}


def _pixel_tiles(chain: dict) -> list[list[Tile]]:
    return [[t for t in tile_candidates(s, FACTS) if t.vector == "p"]
            for s in stages(normalize_chain(chain))]


def test_pixel_tiles_are_offered_for_unpadded_unit_stride_dense_1x1_convs_only():
    one = {"input": {"shape": [2, 32, 28, 28]}, "layers": [_conv(64)]}
    tiles = _pixel_tiles(one)[0]
    assert tiles and tiles[0] == tile_candidates(stages(normalize_chain(one))[0], FACTS)[0]
    for t in tiles:  # whole rows, whole vectors, accumulators that fit the registers
        assert (t.ht * 28) % 16 == 0 and t.wt == 28
        assert 8 <= t.accumulators <= 28 and 64 % t.kt == 0
    for layer in (_conv(64, 3, 1, 1), _conv(64, 1, 2, 0), _conv(64, 1, 1, 1),
                  _conv(32, 1, groups=4)):
        assert _pixel_tiles({"input": {"shape": [1, 32, 28, 28]}, "layers": [layer]}) == [[]]
    # rows of 7 pixels make whole vectors of 16 only 16 rows at a time: more than 7x7 has
    assert _pixel_tiles({"input": {"shape": [1, 32, 7, 7]}, "layers": [_conv(64)]}) == [[]]


def test_only_the_last_layer_of_a_row_tile_group_takes_a_pixel_tile():
    chain = normalize_chain({"input": {"shape": [1, 16, 16, 16]},
                             "layers": [_conv(16, 3, 1, 1, groups=16), {"op": "relu"},
                                        _conv(32), {"op": "relu"}, _conv(16)]})
    st = stages(chain)
    dw, pw1, pw2 = st[0], st[1], st[2]
    pixel = next(t for t in tile_candidates(pw1, FACTS) if t.vector == "p" and t.ht == 2)
    first = (tile_candidates(dw, FACTS) or [None])[0]
    rest = Group(2, 2)
    with pytest.raises(PlaygroundError, match="only the last layer"):  # a producer
        plan_steps(chain, Plan((first, pixel, pixel), (Group(0, 2, 4), ), lanes=16))
    with pytest.raises(PlaygroundError, match="whole rows"):  # a 2-D tile
        plan_steps(chain, Plan((first, pixel, None), (Group(0, 1, 4, 8), rest), lanes=16))
    with pytest.raises(PlaygroundError, match="not whole vectors"):  # 1 row of 16 is half
        odd = next(t for t in tile_candidates(pw2, FACTS) if t.vector == "p")
        plan_steps(chain, Plan((first, odd, None), (Group(0, 1, 3), rest), lanes=16))
    for _, plan, option in candidate_plans(chain, FACTS):
        for g in plan.groups:
            for i in range(g.first, g.last + 1):
                t = plan.tiles[i]
                if g.fused and t is not None and t.vector == "p":
                    assert i == g.last and g.cols is None and g.rows % t.ht == 0, plan


def test_a_pixel_tile_under_row_tiles_validates(pool):
    from playground import service

    chain = normalize_chain({"input": {"shape": [1, 16, 16, 16]},
                             "layers": [_conv(16, 3, 1, 1, groups=16), {"op": "relu6"},
                                        _conv(32), {"op": "batch_norm"}]})
    st = stages(chain)
    pixel = next(t for t in tile_candidates(st[1], FACTS) if t.vector == "p" and t.ht == 2)
    plan = Plan(((tile_candidates(st[0], FACTS) or [None])[0], pixel), (Group(0, 1, 4),),
                lanes=16)
    session = Session.new(chain, plan_steps(chain, plan).steps)
    result = service.run(pool, session, "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result


CASES = {
    "batch 2, 28 wide (4 rows per tile)": {"input": {"shape": [2, 32, 28, 28]},
                                           "layers": [_conv(48), {"op": "relu"}]},
    "16 wide (one row per tile), bn + relu6": {"input": {"shape": [1, 24, 6, 16]},
                                               "layers": [_conv(32), {"op": "batch_norm"},
                                                          {"op": "relu6"}]},
    "residual add, bias": {"input": {"shape": [1, 16, 8, 12]},
                           "layers": [_conv(16), {"op": "bias_add"},
                                      {"op": "add", "other": "data"}]},
    "between channel-vector 3x3 convs": {"input": {"shape": [1, 16, 16, 16]},
                                         "layers": [_conv(32, 3, 1, 1), {"op": "relu"},
                                                    _conv(16), {"op": "relu"},
                                                    _conv(32, 3, 1, 1)]},
}


@pytest.mark.parametrize("name", list(CASES))
def test_pixel_tiles_validate_on_poisoned_buffers(pool, name):
    from playground import service

    chain = normalize_chain(CASES[name])
    st = stages(chain)
    tiles = []
    for s in st:
        cands = tile_candidates(s, FACTS)
        pixel = [t for t in cands if t.vector == "p"]
        tiles.append((pixel or cands or [None])[0])
    assert any(t and t.vector == "p" for t in tiles), name
    for weights in ("per-call", "constant"):
        plan = Plan(tuple(tiles), tuple(Group(i, i) for i in range(len(st))), lanes=16,
                    weights=weights)
        session = Session.new(chain, plan_steps(chain, plan).steps)
        result = service.run(pool, session, "cpu", measure=False, weights=weights)
        assert result.status == "ok" and result.value["correct"], (weights, result)
    text = service.lower(pool, session).value["text"]
    assert "T.Ramp" in text  # pixel vectors reach the lowered kernel


@settings(max_examples=examples(6, 100), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_random_pixel_tiles_validate(pool, data):
    """Random 1x1 convs (batch, channels, widths whose rows do and do not fill a vector,
    epilogues), each pixel-vector tile offered, on poisoned buffers."""
    d = HypothesisDraw(data)
    facts = facts_with(d.choice((256, 512)))
    lanes = facts.lanes()
    w = d.choice((4, 6, 8, 12, 14, 16, 20, 28))
    h = d.choice((2, 4, 6, 8))
    epilogue = [d.choice(({"op": "relu"}, {"op": "batch_norm"}, {"op": "bias_add"},
                          {"op": "add", "other": "data"}))] if d.chance(70) else []
    c = d.choice((3, 8, 16, 24))
    k = c if epilogue and epilogue[0]["op"] == "add" else d.choice((8, 16, 24, 40))
    chain = normalize_chain({"input": {"shape": [d.choice((1, 2)), c, h, w]},
                             "layers": [_conv(k), *epilogue]})
    st_ = stages(chain)
    offered = [t for t in tile_candidates(st_[0], facts) if t.vector == "p"]
    assert all((t.ht * w) % lanes == 0 and h % t.ht == 0 for t in offered)
    if not offered:
        return
    tile = d.choice(offered)
    plan = Plan((tile, *[None] * (len(st_) - 1)), tuple(Group(i, i) for i in range(len(st_))),
                lanes=lanes, fold_epilogue=d.chance(80))
    r = plan_steps(chain, plan)
    result = pool.run("run", {"chain": r.chain, "steps": [s.to_dict() for s in r.steps],
                              "target": "cpu", "measure": False}, timeout_s=300)
    assert result.status == "ok" and result.value["correct"], (chain, tile, result.message)


def test_pixel_tiles_that_leave_registers_for_the_broadcast_weights_rank_first():
    """The compiler keeps a tile's ``kt`` broadcast weights in registers beside its
    accumulators and one input vector: 4 channels x 7 vectors (28 + 4 + 1 > 32) spilled, so
    it ranks below 2 x 7, and below the channel-vector tiles."""
    chain = {"input": {"shape": [1, 32, 112, 112]}, "layers": [_conv(64)]}
    stage = stages(normalize_chain(chain))[0]
    tiles = tile_candidates(stage, FACTS)
    first = tiles[0]
    assert first.vector == "p" and first.accumulators + first.kt + 1 <= FACTS.registers
    spilling = [t for t in tiles if t.vector == "p"
                and t.accumulators + t.kt + 1 > FACTS.registers]
    for t in spilling:
        assert tiles.index(t) > min(i for i, u in enumerate(tiles) if u.vector == "k")


def test_pixel_tiles_whose_input_overflows_l1_reduce_in_channel_blocks():
    """Every block of output channels reads the tile's input pixels of all input channels
    again: 128 channels x 112 pixels (57 KB) overflow a 48 KB L1, so the reduction goes in
    blocks of 64 channels (28 KB); with a 1 MiB L1 in one block; where even the tile's
    accumulators of every output channel overflow half of L2, no blocks, and the pixel
    vectors rank last."""
    chain = {"input": {"shape": [2, 128, 28, 28]}, "layers": [_conv(256)]}
    stage = stages(normalize_chain(chain))[0]
    pixel = [t for t in tile_candidates(stage, FACTS) if t.vector == "p"]
    assert pixel and all(t.rc == 64 for t in pixel)
    assert pixel[0].label().endswith("input channels in blocks of 64")
    big_l1 = replace(FACTS, caches={**FACTS.caches, "L1": 1 << 20})
    assert all(t.rc == 0 for t in tile_candidates(stage, big_l1) if t.vector == "p")
    small_l2 = replace(FACTS, caches={**FACTS.caches, "L2": 128 << 10})
    tiles = tile_candidates(stage, small_l2)
    assert tiles[0].vector == "k"
    assert all(t.rc == 0 for t in tiles if t.vector == "p")


BLOCKED = {
    "alone, bias + relu": {"input": {"shape": [1, 96, 8, 16]},
                           "layers": [_conv(32), {"op": "bias_add"}, {"op": "relu"}]},
    "batch 2, residual add": {"input": {"shape": [2, 64, 4, 16]},
                              "layers": [_conv(64), {"op": "add", "other": "data"}]},
    "after a 3x3 conv": {"input": {"shape": [1, 16, 8, 16]},
                         "layers": [_conv(32, 3, 1, 1), {"op": "relu"}, _conv(32)]},
}


@pytest.mark.parametrize("name", list(BLOCKED))
def test_pixel_tiles_in_channel_blocks_validate(pool, name):
    """Blocks of 16 input channels (forced: these shapes fit L1 whole) on poisoned buffers,
    alone and as the last layer of a group fused at row tiles; the write-back waits for the
    last block."""
    from playground import service

    chain = normalize_chain(BLOCKED[name])
    st = stages(chain)
    tile = next(t for t in tile_candidates(st[-1], FACTS) if t.vector == "p")
    tile = replace(tile, rc=16)
    tiles = [*(tile_candidates(s, FACTS)[0] for s in st[:-1]), tile]
    groups = [tuple(Group(i, i) for i in range(len(st)))]
    if len(st) > 1:
        groups.append((Group(0, len(st) - 1, tile.ht),))
    for grouping in groups:
        plan = Plan(tuple(tiles), grouping, lanes=16, weights="constant")
        steps = plan_steps(chain, plan).steps
        assert any(s.primitive == "split" and s.args.get("loop") == "rc" for s in steps)
        result = service.run(pool, Session.new(chain, steps), "cpu", measure=False,
                             weights="constant")
        assert result.status == "ok" and result.value["correct"], (grouping, result)


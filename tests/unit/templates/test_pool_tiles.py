"""A pool computed per register tile of the conv before it (``templates/pool_tiles``).

Where a fused group ends in a pool whose windows tile its input (kernel = stride, no
padding) and the conv before it has a column-vector tile of whole windows, the pool is tiled
by what one register tile of the conv produces and the conv is computed there, its output a
tile-sized buffer (``Group(per_tile=True)``). These tests check where it applies (and where
not), the tile it proposes on made-up AVX-512 and AVX2 machines, that the search offers it
and labels it, that the lowered kernel holds the conv's output in a register tile, and that
results are right on poisoned buffers: hand-picked chains, and random ones (hypothesis).
"""

from __future__ import annotations

import pytest
from fuzzing import HypothesisDraw, facts_with
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.chain.spec import normalize_chain
from playground.compile.lowering import lower
from playground.schedule.session import Session
from playground.templates import pool_tiles
from playground.templates.conv import Tile
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.search import candidate_plans
from playground.templates.space import fusion_options, tile_candidates
from playground.templates.stages import stages

AVX512, AVX2 = facts_with(512), facts_with(256)


def _conv(channels, kernel=3, stride=1, padding=1, groups=1, dilation=1):
    return {"op": "conv2d", "channels": channels, "kernel": kernel, "stride": stride,
            "padding": padding, "groups": groups, "dilation": dilation}


def _chain(shape, *layers):
    return normalize_chain({"input": {"shape": list(shape)}, "layers": list(layers)})


def _pool(op="max_pool2d", kernel=2, stride=None, padding=0):
    return {"op": op, "kernel": kernel, "stride": kernel if stride is None else stride,
            "padding": padding}


HIRES = _chain([1, 8, 64, 64], _conv(16), {"op": "relu"}, _pool())


def test_it_applies_only_where_the_pool_windows_tile_the_conv_output():
    conv, pool = stages(HIRES)
    tile = pool_tiles.register_tile(conv, pool, AVX512)
    assert pool_tiles.windows_tile(pool) and pool_tiles.fits(conv, pool, tile, 4)
    overlapping = stages(_chain([1, 8, 64, 64], _conv(16), _pool(kernel=3, stride=2)))
    padded = stages(_chain([1, 8, 64, 64], _conv(16), _pool(padding=1)))
    ragged = stages(_chain([1, 8, 17, 17], _conv(16), _pool()))  # the last row in no window
    for c, p in (overlapping, padded, ragged):
        assert not pool_tiles.windows_tile(p)
        assert pool_tiles.register_tile(c, p, AVX512) is None
    # the tile must be a column tile of whole windows that divides the pool's row tile
    assert not pool_tiles.fits(conv, pool, Tile("k", 16, 1, 2, 32), 4)
    assert not pool_tiles.fits(conv, pool, Tile("w", 16, 4, 3, 32), 4)
    assert not pool_tiles.fits(conv, pool, Tile("w", 16, 4, 2, 24), 4)
    assert not pool_tiles.fits(conv, pool, tile, 4, cols=16)  # 2-D group tiles: no
    assert not pool_tiles.fits(conv, pool, Tile("w", 16, 4, 4, 32), 3)  # 2 rows in 3


def test_the_register_tile_follows_the_machine():
    conv, pool = stages(HIRES)
    # one 2-row window high, one vector of pooled columns wide, ~16 of 32 registers
    assert pool_tiles.register_tile(conv, pool, AVX512) == Tile("w", 16, 4, 2, 32)
    # AVX2: 8 lanes, ~11 of 16 registers: 2 channels x 2 rows x 2 vectors
    assert pool_tiles.register_tile(conv, pool, AVX2) == Tile("w", 8, 2, 2, 16)
    narrow = stages(_chain([1, 8, 28, 28], _conv(16, 1, padding=0), _pool("avg_pool2d")))
    # 14 pooled columns: one 14-wide vector per window row (28 conv columns, 2 vectors)
    assert pool_tiles.register_tile(*narrow, AVX512) == Tile("w", 16, 4, 2, 28)
    depthwise = stages(_chain([1, 16, 32, 32], _conv(16, groups=16), _pool(kernel=4)))
    assert pool_tiles.register_tile(*depthwise, AVX512) == Tile("w", 16, 2, 4, 32)


def test_the_search_offers_it_first_after_a_column_tile_and_records_it():
    facts = AVX512
    options = fusion_options(stages(HIRES), facts)
    per_tile = [o for o in options if o.tile is not None]
    assert per_tile and options[:len(per_tile)] == per_tile
    assert all(o.group.per_tile and o.tile_bytes == 4 * 4 * 2 * 32 for o in per_tile)
    st_ = stages(HIRES)
    best = [next(t for t in tile_candidates(st_[0], facts) if t.vector == "w"), None]
    plans = [(label, plan) for label, plan, option in
             candidate_plans(HIRES, facts, fused=True, best_tiles=best)]
    label, plan = plans[0]
    assert label.endswith("tiles, the pool per register tile of the conv"), label
    assert plan.tiles[0] == Tile("w", 16, 4, 2, 32)
    assert plan.to_dict()["groups"][0]["per_tile"] is True
    # after a channel-vector best tile the register-tile plans come last
    best = [next(t for t in tile_candidates(st_[0], facts) if t.vector == "k"), None]
    labels = [label for label, _, _ in candidate_plans(HIRES, facts, fused=True,
                                                        best_tiles=best)]
    assert "register tile" not in labels[0] and "register tile" in labels[-1]


def test_the_conv_is_computed_at_the_pool_register_tile_and_its_output_is_tile_sized():
    conv, pool = stages(HIRES)
    tile = pool_tiles.register_tile(conv, pool, AVX512)
    plan = Plan((tile, None), (Group(0, 1, 4, per_tile=True),), lanes=16)
    r = plan_steps(HIRES, plan)
    moved = {s.args["block"]: s.args["target_loop"] for s in r.steps
             if s.primitive == "compute_at"}
    assert moved["conv1"] == moved["conv1_local"] != moved["conv1_pad"]
    assert "parallel" in r.loop_kinds("conv1_pad")  # the padded rows: per row tile
    text = lower(Session.new(HIRES, r.steps).schedule().mod, "cpu").script()
    # the relu'd conv output: 4 channels x 2 rows x 32 columns, in registers or L1
    assert "relu1 = T.alloc_buffer((256,))" in text, text
    assert "T.Shuffle" in text  # the pool's stride-2 columns: one load and two shuffles


def _validate(pool, chain, plan):
    r = plan_steps(chain, plan)
    result = pool.run("run", {"chain": r.chain, "steps": [s.to_dict() for s in r.steps],
                              "target": "cpu", "measure": False}, timeout_s=300)
    assert result.status == "ok" and result.value["correct"], (chain, plan, result.message)


CASES = {
    "max 2x2 after relu": (HIRES, 4),
    "avg 2x2, 14 pooled columns": (_chain([1, 8, 28, 28], _conv(16, 1, padding=0),
                                          _pool("avg_pool2d")), 7),
    "depthwise, relu6, max 3x3/3": (_chain([1, 16, 18, 18], _conv(16, groups=16),
                                           {"op": "relu6"}, _pool(kernel=3)), 3),
    "stride 2 conv, bn, relu": (_chain([1, 8, 32, 32], _conv(16, stride=2),
                                       {"op": "batch_norm"}, {"op": "relu"}, _pool()), 4),
    "batch 2, dilated, grouped, bias": (_chain([2, 8, 16, 20], _conv(16, groups=4, padding=2,
                                                                     dilation=2),
                                               {"op": "bias_add"}, _pool()), 2),
    "residual add": (_chain([1, 16, 16, 16], _conv(16), {"op": "add", "other": "data"},
                            _pool("avg_pool2d")), 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("bits", [512, 256])
@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_pools_computed_per_register_tile_validate(pool, case, fold, bits):
    chain, rows = CASES[case]
    facts = facts_with(bits)
    conv, anchor = stages(chain)
    tile = pool_tiles.register_tile(conv, anchor, facts)
    assert pool_tiles.fits(conv, anchor, tile, rows), (case, tile)
    plan = Plan((tile, None), (Group(0, 1, rows, per_tile=True),), lanes=facts.lanes(),
                fold_epilogue=fold)
    _validate(pool, chain, plan)


@pytest.mark.slow
def test_a_triple_group_computes_the_first_conv_per_row_tile(pool):
    chain = _chain([1, 8, 24, 24], _conv(8), {"op": "relu"}, _conv(16), {"op": "relu"},
                   _pool())
    st_ = stages(chain)
    tile = pool_tiles.register_tile(st_[1], st_[2], AVX512)
    plan = Plan((tile_candidates(st_[0], AVX512)[0], tile, None),
                (Group(0, 2, 4, per_tile=True),), lanes=16)
    r = plan_steps(chain, plan)
    moved = {s.args["block"]: s.args["target_loop"] for s in r.steps
             if s.primitive == "compute_at"}
    assert moved["conv1"] == moved["conv1_pad"] != moved["conv2"]
    _validate(pool, chain, plan)


def test_a_tile_that_does_not_fit_is_refused():
    with pytest.raises(Exception, match="cannot be computed per register tile"):
        plan_steps(HIRES, Plan((Tile("k", 16, 1, 2, 32), None),
                               (Group(0, 1, 4, per_tile=True),), lanes=16))


# ----------------------------------------------------------------------------- randomized

def _random_pool_chain(d: HypothesisDraw) -> dict:
    """conv [-> conv] -> window-tiling pool, dense, grouped or depthwise, any stride or
    dilation, every elementwise op in the epilogues; the output sizes a multiple of the pool's
    kernel (so that its windows tile it) four times in five."""
    n = 2 if d.chance(20) else 1
    c = d.choice((3, 8, 16))
    k = d.choice((2, 2, 3))
    layers: list[dict] = []
    channels = c
    for _ in range(d.int(1, 2)):
        kind = d.choice(("dense", "dense", "depthwise", "grouped"))
        kernel = d.choice((1, 3, 3, 5))
        layer = _conv(d.choice((8, 16, 24)), kernel, 1, kernel // 2,
                      dilation=2 if d.chance(15) and kernel > 1 else 1)
        layer["padding"] *= layer["dilation"]
        if kind == "depthwise":
            layer.update(groups=channels, channels=channels)
        elif kind == "grouped" and channels % 4 == 0:
            layer.update(groups=4, channels=4 * d.choice((2, 4)))
        layers.append(layer)
        channels = layer["channels"]
        for op in ("bias_add", "batch_norm", "relu", "relu6", "clip", "sigmoid"):
            if d.chance(20):
                layers.append({"op": op})
    h = k * d.int(2, 6) + (0 if d.chance(80) else 1)
    w = k * d.int(2, 12) + (0 if d.chance(80) else 1)
    layers.append(_pool(d.choice(("max_pool2d", "avg_pool2d")), k))
    return _chain([n, c, h, w], *layers)


@settings(max_examples=examples(8, 200), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_random_pools_per_register_tile_validate(pool, data):
    d = HypothesisDraw(data)
    chain = _random_pool_chain(d)
    facts = facts_with(d.choice((256, 512)))
    st_ = stages(chain)
    conv, anchor = st_[-2], st_[-1]
    options = [o for o in fusion_options(st_, facts) if o.tile is not None]
    if not pool_tiles.windows_tile(anchor):
        assert not options  # a ragged or overlapping pool is never offered
        return
    if not options:
        return  # too small for a fused group (fewer tiles than cores)
    option = d.choice(options)
    g = option.group
    # the proposed tile, or another column tile of whole windows that fits the row tile
    fitting = [t for t in tile_candidates(conv, facts)
               if pool_tiles.fits(conv, anchor, t, g.rows)]
    tile = d.choice([option.tile, *fitting])
    tiles = [d.choice([t for t in tile_candidates(s, facts) if g.takes(i, t)] or [None])
             for i, s in enumerate(st_)]
    tiles[g.last - 1] = tile
    groups = (*(Group(i, i) for i in range(g.first)), g)
    _validate(pool, chain, Plan(tuple(tiles), groups, lanes=facts.lanes(),
                                fold_epilogue=d.chance(70)))

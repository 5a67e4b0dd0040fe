"""The Winograd template: where it is offered, and that its steps (the ``winograd`` step,
then ordinary primitives on the conv's stages, the epilogue folded into the write-back) are
right on poisoned buffers, in both weight modes, beside direct and fused stages."""

from __future__ import annotations

import pytest
from fuzzing import HypothesisDraw, facts_with, random_template_chain
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.chain.spec import normalize_chain
from playground.schedule.session import Session
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.search import candidate_plans
from playground.templates.space import tile_candidates
from playground.templates.stages import stages
from playground.templates.winograd import winograd_tiles

FACTS = facts_with(256)  # 8 float32 lanes


def _conv(channels, kernel=3, stride=1, padding=1, groups=1):
    return {"op": "conv2d", "channels": channels, "kernel": kernel, "stride": stride,
            "padding": padding, "groups": groups}


def test_offered_for_dense_3x3_stride_1_convs_with_enough_channels():
    def offered(shape, layer):
        chain = normalize_chain({"input": {"shape": shape}, "layers": [layer]})
        return winograd_tiles(stages(chain)[0], 8)

    tiles = offered([1, 64, 14, 14], _conv(64))
    assert tiles and all(t.vector == "winograd" and t.ht == 2 and 49 % t.wt == 0
                         for t in tiles), tiles
    assert tiles[0].kt == 2 and "Winograd F(2x2, 3x3)" in tiles[0].label()
    assert len(tiles) == 1  # no L2 given: no chunks
    big = normalize_chain({"input": {"shape": [2, 64, 56, 56]}, "layers": [_conv(64)]})
    whole, chunked = winograd_tiles(stages(big)[0], 8, l2_bytes=1 << 20)
    assert whole.order == "rows" and chunked.order == "chunks" and 1 <= chunked.nt <= 14
    assert (chunked.nt * 28) % chunked.wt == 0 and "in chunks of" in chunked.label()
    dilated = normalize_chain({"input": {"shape": [2, 64, 56, 56]},
                               "layers": [{**_conv(64, padding=2), "dilation": 2}]})
    tiles = winograd_tiles(stages(dilated)[0], 8, l2_bytes=1 << 20)
    assert [t.order for t in tiles] == ["rows", "chunks"] and tiles[1].nt <= 7
    tiny = normalize_chain({"input": {"shape": [2, 16, 3, 3]},  # the fuzz's seed 5883
                            "layers": [{**_conv(16), "dilation": 2}]})
    assert [t.order for t in winograd_tiles(stages(tiny)[0], 8, min_channels=1,
                                            l2_bytes=4096)] == ["rows"]  # one chunk: none
    for shape, layer in (([1, 64, 14, 14], _conv(64, stride=2)),
                         ([1, 64, 14, 14], _conv(64, kernel=1, padding=0)),
                         ([1, 64, 14, 14], _conv(64, groups=64)),
                         ([1, 16, 14, 14], _conv(64)),  # too few input channels
                         ([1, 64, 14, 14], _conv(60))):  # no vector divides 60
        assert offered(shape, layer) == [], layer
    chain = normalize_chain({"input": {"shape": [1, 64, 14, 14]},
                             "layers": [_conv(64), {"op": "relu"}, _conv(64)]})
    labels = [label for label, plan, _ in candidate_plans(chain, FACTS)
              if any(t and t.vector == "winograd" for t in plan.tiles)]
    assert any(label.startswith("conv1: Winograd") for label in labels), labels
    for _, plan, option in candidate_plans(chain, FACTS):  # never inside a fused group
        for g in plan.groups:
            assert not g.fused or not any(
                plan.tiles[i] and plan.tiles[i].vector == "winograd"
                for i in range(g.first, g.last + 1)), plan


def _validate(pool, chain, plan, weights):
    from playground import service

    session = Session.new(chain, plan_steps(chain, plan).steps)
    result = service.run(pool, session, "cpu", measure=False, weights=weights)
    assert result.status == "ok" and result.value["correct"], (weights, result)
    return session


def _with_winograd(chain, *, fold=True, fuse_after=False, chunks=False):
    st_ = stages(chain)
    tiles, groups = [], []
    for i, s in enumerate(st_):
        w = winograd_tiles(s, 8, min_channels=1, l2_bytes=4096 if chunks else 0)[::-1]
        tiles.append((w or tile_candidates(s, FACTS) or [None])[0])
        groups.append(Group(i, i))
    direct = [s.kind == "conv" and t is not None and t.vector != "winograd"
              for s, t in zip(st_, tiles, strict=True)]
    if fuse_after and len(st_) >= 3 and direct[1] and direct[2]:  # a fused group beside it
        groups = [Group(0, 0), Group(1, 2, 4), *(Group(i, i) for i in range(3, len(st_)))]
    return Plan(tuple(tiles), tuple(groups), lanes=8, fold_epilogue=fold)


CASES = {
    "bn + relu, 13x11 (tiles do not divide)": {
        "input": {"shape": [1, 16, 13, 11]},
        "layers": [_conv(32), {"op": "batch_norm"}, {"op": "relu"}]},
    "residual add, batch 2, no padding": {
        "input": {"shape": [2, 16, 10, 10]},
        "layers": [_conv(16), {"op": "relu"}, _conv(16, padding=0), {"op": "bias_add"}]},
    "one tile wide (the fuzz's seed 5242)": {
        "input": {"shape": [1, 16, 9, 3]},
        "layers": [_conv(16, padding=0), {"op": "relu"}]},
    "dilated (by phases), asymmetric padding": {
        "input": {"shape": [1, 16, 11, 13]},
        "layers": [{**_conv(16, padding=[2, 1, 3, 2]), "dilation": [2, 1]}, {"op": "relu"}]},
    "after a strided direct conv, before a pool": {
        "input": {"shape": [1, 8, 16, 16]},
        "layers": [_conv(16, stride=2), {"op": "relu"}, _conv(16),
                   {"op": "add", "other": "relu1"},
                   {"op": "max_pool2d", "kernel": 2, "stride": 2}]},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_winograd_plans_validate_on_poisoned_buffers(pool, name):
    chain = normalize_chain(CASES[name])
    for weights, fold, chunks in (("per-call", True, False), ("constant", True, True),
                                  ("per-call", False, True)):
        plan = _with_winograd(chain, fold=fold, chunks=chunks)
        plan = Plan(plan.tiles, plan.groups, lanes=8, fold_epilogue=fold, weights=weights)
        assert any(t and t.vector == "winograd" for t in plan.tiles)
        session = _validate(pool, chain, plan, weights)
    assert session.steps[0].primitive == "winograd"


@settings(max_examples=examples(4, 60), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_random_chains_with_winograd_validate(pool, data):
    d = HypothesisDraw(data)
    chain = normalize_chain(random_template_chain(d))
    plan = _with_winograd(chain, fold=d.chance(80), fuse_after=d.chance(50),
                          chunks=d.chance(50))
    if not any(t and t.vector == "winograd" for t in plan.tiles):
        return
    _validate(pool, chain, plan, d.choice(("per-call", "constant")))

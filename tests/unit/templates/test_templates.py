"""Schedule templates, the search and the fuse-or-not verdict.

Templates must produce ordinary steps that validate for *any* chain the builder accepts: the
hypothesis test draws random chains (dense, grouped and depthwise convolutions, strides,
dilations, odd sizes, batch > 1, pools, every elementwise op) and random template choices
(tiles, fusion groups) and validates each in the worker.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from dataclasses import replace

import paths
import pytest
from fuzzing import HypothesisDraw, facts_with, random_template_chain
from helpers import CONV_RELU_CONV, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.chain.spec import normalize_chain
from playground.io.export import export_script
from playground.io.script_import import import_script
from playground.measure.machine import machine_facts
from playground.measure.stats import DRIFT
from playground.schedule.session import Session
from playground.templates.conv import Tile
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.search import candidate_plans, search
from playground.templates.space import fusion_options, registers, tile_candidates
from playground.templates.stages import stages
from playground.templates.verdict import fusion_verdict

ROOT = paths.ROOT


RESNET = {"input": {"shape": [1, 64, 56, 56]},
          "layers": [{"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
                     {"op": "batch_norm"}, {"op": "relu"},
                     {"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
                     {"op": "add", "other": "data"}, {"op": "relu"},
                     {"op": "max_pool2d", "kernel": 2}]}
SMALL = {"input": {"shape": [1, 16, 12, 12]},
         "layers": [{"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1},
                    {"op": "relu"}, {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1}]}


def test_stages_group_each_window_layer_with_its_epilogue():
    st = stages(normalize_chain(RESNET))
    assert [s.describe() for s in st] == ["conv1 + bn1, relu1", "conv2 + add1, relu2",
                                          "maxpool1"]
    assert st[0].helpers == ("bn1_scale", "bn1_shift")
    assert st[0].pad_block == "conv1_pad" and st[2].pad_block is None
    lead = stages(normalize_chain({"input": {"shape": [1, 4, 8, 8]},
                                   "layers": [{"op": "relu"}, {"op": "conv2d",
                                                                "channels": 4}]}))
    assert [s.kind for s in lead] == ["elementwise", "conv"]


@pytest.mark.parametrize("bits, lanes, regs", [(512, 16, 32), (256, 8, 16)])
def test_tiles_follow_the_vector_width_and_the_register_file(bits, lanes, regs):
    facts = facts_with(bits)
    assert registers(facts) == regs
    conv = stages(normalize_chain(RESNET))[0]
    tiles = tile_candidates(conv, facts)
    assert tiles and all(t.lanes <= lanes for t in tiles)
    assert all(t.accumulators <= regs - 3 for t in tiles)
    assert tiles[0].vector == "k" and tiles[0].lanes == lanes  # dense, 64 channels
    depthwise = stages(normalize_chain({"input": {"shape": [1, 32, 28, 28]}, "layers": [
        {"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1, "groups": 32}]}))[0]
    assert all(t.vector == "w" for t in tile_candidates(depthwise, facts))


def test_fusion_options_respect_l2_redundancy_and_cores():
    st = stages(normalize_chain(RESNET))
    facts = facts_with(512)
    options = fusion_options(st, facts)
    assert options
    for o in options:
        limit = 1.6 if o.group.cols else 1.5  # 2-D tiles repeat a halo on two sides
        assert o.redundancy <= limit and o.tile_bytes <= facts.caches["L2"]
        assert o.tiles >= facts.cores
    # row tiles and 2-D tiles both among the first three (a short search measures both),
    # after any pool computed per register tile (test_pool_tiles.py)
    plain = [o for o in options if o.tile is None]
    assert options[len(options) - len(plain):] == plain
    assert {o.group.cols is None for o in plain[:3]} == {True, False}
    flat = next(o for o in options if o.group.cols)
    assert 56 % flat.group.cols == 0 and flat.group.cols >= 8
    assert next(o for o in options if o.group.cols == 8 and o.group.rows == 8).redundancy \
        == pytest.approx(1.5625)  # 10x10 of conv1 per 8x8 tile


def test_a_plan_is_plain_steps_that_export_and_import():
    chain = normalize_chain(SMALL)
    tile = Tile("k", 16, 1, 1, 6)
    r = plan_steps(chain, Plan((tile, tile), (Group(0, 1, 4),), lanes=16))
    text = export_script(chain, r.steps)
    chain2, steps2, _ = import_script(text)
    assert chain2 == chain and tuple(steps2) == tuple(r.steps)
    Session.new(chain, r.steps)  # every step replays on a fresh schedule


# ----------------------------------------------------------------------------- randomized



@settings(max_examples=examples(10, 200), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_templates_validate_on_random_chains(pool, data):
    d = HypothesisDraw(data)
    chain = random_template_chain(d)
    facts = facts_with(d.choice((256, 512)))
    # a tiny L1 puts the small chains' pixel-vector tiles in blocks of input channels
    facts = replace(facts, caches={**facts.caches, "L1": d.choice((48 << 10, 2 << 10))})
    st_ = stages(chain)
    groups = tuple(Group(i, i) for i in range(len(st_)))
    options = fusion_options(st_, facts)
    g, option = Group(0, 0), None
    if options and d.chance(60):
        option = d.choice(options)
        g = option.group
        groups = (*(Group(i, i) for i in range(g.first)), g,
                  *(Group(i, i) for i in range(g.last + 1, len(st_))))
    tiles = []
    for i, s in enumerate(st_):  # the tiles the group can take (the search's rule)
        cands = [t for t in tile_candidates(s, facts) if g.takes(i, t)]
        tiles.append(d.choice(cands) if cands else None)
    if option is not None and option.tile is not None:  # a pool per register tile
        tiles[g.last - 1] = option.tile
    plan = Plan(tuple(tiles), groups, lanes=facts.lanes(), fold_epilogue=d.chance(80))
    r = plan_steps(chain, plan)
    result = pool.run("run", {"chain": r.chain, "steps": [s.to_dict() for s in r.steps],
                              "target": "cpu", "measure": False}, timeout_s=300)
    assert result.status == "ok" and result.value["correct"], (chain, plan, result.message)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_deep_small_layers_sweep_the_image_per_channel_block(pool, batch):
    """Weights (32x32x3x3) outweigh the activations (32x6x6): the first tile keeps blocks of
    output channels outermost; with one image each block copies its own weights in the
    conv's parallel loop. Both validate against the reference."""
    chain = normalize_chain({"input": {"shape": [batch, 32, 6, 6]},
                             "layers": [{"op": "conv2d", "channels": 32, "kernel": 3,
                                         "padding": 1}, {"op": "relu"}]})
    facts = facts_with(512)
    (stage,) = stages(chain)
    tile = tile_candidates(stage, facts)[0]
    assert tile.vector == "k" and tile.order == "channels"
    assert "channel blocks outermost" in tile.label()
    r = plan_steps(chain, Plan((tile,), (Group(0, 0),), lanes=16))
    moved = [s for s in r.steps if s.primitive == "compute_at"
             and s.args["block"] == "conv1_weight_global"]
    assert len(moved) == (1 if batch == 1 else 0)
    result = pool.run("run", {"chain": r.chain, "steps": [s.to_dict() for s in r.steps],
                              "target": "cpu", "measure": False}, timeout_s=300)
    assert result.status == "ok" and result.value["correct"], result.message


# ----------------------------------------------------------------------------- search

@pytest.mark.slow
def test_search_finds_a_validated_schedule_that_replays_and_exports(pool, tmp_path):
    facts = machine_facts()
    seen = []
    result = search(pool, SMALL, facts, budget_s=5, on_progress=lambda c, r: seen.append(c))
    best = result.best()
    assert best is not None and best.ok and seen
    assert len(seen) == len(result.candidates) and result.measured >= 1
    assert all(c.status in ("ok", "invalid", "wrong_result") for c in result.candidates)
    session = Session.new(result.chain, best.steps)  # replays from its steps
    script = tmp_path / "best.py"
    script.write_text(export_script(result.chain, session.steps))
    run = subprocess.run([sys.executable, str(script), "--json"], capture_output=True,
                         text=True, timeout=300)
    assert json.loads(run.stdout.strip().splitlines()[-1])["correct"] is True


@pytest.mark.slow
def test_cancel_stops_the_search(pool):
    cancel = threading.Event()

    def stop_after_first(cand, result):
        cancel.set()

    result = search(pool, SMALL, machine_facts(), budget_s=300, cancel=cancel,
                    on_progress=stop_after_first)
    assert result.cancelled and len(result.candidates) == 1


def test_the_verdict_says_why_it_has_no_fused_schedule():
    """Three different answers, never "nothing fits" where something was tried or cut off."""
    from playground.templates.search import Candidate, SearchResult
    from playground.templates.verdict import _no_fused_why

    facts = facts_with(512)
    chain = normalize_chain(SMALL)
    st_ = stages(chain)
    option = fusion_options(st_, facts)[0]
    fused = Plan((None,) * len(st_), (Group(0, len(st_) - 1, option.group.rows),), 16)
    failed = Candidate("fuse conv1+conv2 at 6-row tiles", fused, status="invalid",
                       message="conv1 cannot go under conv2\nthe detail TVM gave", fusion=option)
    why = _no_fused_why(SearchResult(chain, [failed]), st_, facts)
    assert why.startswith("every fused schedule tried failed (1;") and "invalid" in why
    assert "conv1 cannot go under conv2" in why and "detail" not in why
    assert "cancelled" in _no_fused_why(SearchResult(chain, cancelled=True), st_, facts)
    tiny = normalize_chain({"input": {"shape": [1, 3, 8, 8]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": 5, "padding": 2},
        {"op": "conv2d", "channels": 8, "kernel": 5, "padding": 2}]})
    assert "no fused schedule fits" in _no_fused_why(SearchResult(tiny), stages(tiny), facts)


def test_a_fused_schedule_without_an_unfused_one_is_not_called_a_fused_failure():
    """Two convolutions, a fused schedule that validated and no unfused one: the reason is the
    unfused schedule's failure, not "every fused schedule tried failed"."""
    from playground.templates.search import Candidate, SearchResult
    from playground.templates.verdict import _unpaired

    facts = facts_with(512)
    chain = normalize_chain(SMALL)
    st_ = stages(chain)
    option = fusion_options(st_, facts)[0]
    plan = Plan((None,) * len(st_), (Group(0, len(st_) - 1, option.group.rows),), 16)
    fused = Candidate("fuse conv1+conv2", plan, status="ok", median_ms=1.0, fusion=option)
    windows = [x for x in st_ if x.kind != "elementwise"]
    assert _unpaired(SearchResult(chain, [fused]), st_, windows, fused, facts) == (
        "no difference", "the unfused schedule failed")
    assert _unpaired(SearchResult(chain), st_, windows, None, facts)[0] == "don't fuse"


@pytest.mark.slow
def test_a_spent_budget_still_measures_a_fused_schedule(pool):
    """A budget spent before the descent ends (a short one, or a loaded machine) still leaves
    the fusion options their turn: the verdict must never read "nothing fits" off a clock."""
    facts = machine_facts()
    assert fusion_options(stages(normalize_chain(SMALL)), facts)
    result = search(pool, SMALL, facts, budget_s=0.001)
    assert [c.fused for c in result.candidates] == [False, True]
    assert result.best(fused=True) is not None


@pytest.mark.slow
def test_verdict_answers_with_both_schedules_and_a_reason(pool):
    v = fusion_verdict(pool, SMALL, machine_facts(), budget_s=6)
    assert v.verdict in ("fuse", "don't fuse", "no difference (within noise)")
    assert v.fused is not None and v.unfused is not None
    iv = v.interval
    assert iv.rounds >= 3 and iv.low <= v.ratio <= iv.high
    assert v.fused.rounds_ms and v.unfused.rounds_ms  # both re-timed in the same rounds
    assert v.fused_layers == [["conv1", "conv2"]]
    assert "repeats" in v.reason and v.verdict in v.reason and "unfused / fused = " in v.reason
    # the call needs the whole interval outside the 5% band, cleared by its own width and by
    # the drift between runs (stats.decide(..., replicable=True)), so it holds when re-measured
    low = iv.low / max(iv.ratio / iv.low, DRIFT)
    high = iv.high * max(iv.high / iv.ratio, DRIFT)
    expected = "fuse" if low > 1.05 else "don't fuse" if high < 1 / 1.05 else \
        "no difference (within noise)"
    assert v.verdict == expected
    if (iv.low > 1.05 or iv.high < 1 / 1.05) and expected.startswith("no difference"):
        assert "too close to call" in v.reason  # a close call says so in the reason
    # one story: the search's result carries the verdict's times and its best is one of them
    final = v.search.final
    assert final is not None and final.by == "verdict"
    assert v.search.best().label in (v.fused.label, v.unfused.label)


@pytest.mark.slow
def test_verdict_on_one_conv_is_about_its_epilogue(pool):
    chain = {"input": {"shape": [1, 16, 16, 16]},
             "layers": [{"op": "conv2d", "channels": 16, "kernel": 1},
                        {"op": "bias_add"}, {"op": "relu"}]}
    v = fusion_verdict(pool, chain, machine_facts(), budget_s=5)
    assert "folding bias1, relu1 into conv1's write-back" in v.reason
    assert v.unfused is not None and not v.unfused.plan.fold_epilogue


def test_avx512_templates_are_generated_for_an_avx512_target():
    """On an AVX2-only machine the AVX-512 path is still generated and checked: the kernel is
    compiled for an AVX-512 mcpu and its assembly uses zmm registers (it cannot run there)."""
    import tvm

    from playground.compile.lowering import compile_module  # noqa: F401 - same build path

    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
    facts = machine_facts(target)
    assert facts.lanes() == 16
    chain = normalize_chain({"input": {"shape": [1, 32, 14, 14]}, "layers": [
        {"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1}]})
    tile = tile_candidates(stages(chain)[0], facts)[0]
    r = plan_steps(chain, Plan((tile,), (Group(0, 0),), lanes=16))
    asm = tvm.compile(r.sch.mod, target=target).mod.inspect_source("s")
    assert "zmm" in asm and "vfmadd" in asm


@pytest.mark.slow
def test_command_line_auto_and_fusion(tmp_path):
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps(SMALL))
    out = tmp_path / "auto.py"
    run = subprocess.run([sys.executable, "-m", "playground", "auto", str(chain), "--budget-s",
                          "4", "--json", "-o", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(run.stdout)
    for key in ("valid", "correct", "max_abs_error", "median_ms", "gflops", "template",
                "params", "steps", "candidates", "search_s"):
        assert key in data, key
    assert data["valid"] and data["correct"] and data["candidates"] >= 1 and out.is_file()
    if data["candidates"] >= 2:  # the best against the runner-up, with its interval
        assert data["ratio_low"] <= data["ratio"] <= data["ratio_high"]
        assert data["runner_up"] != data["label"] and len(data["rounds_ms"]) >= 3
    run = subprocess.run([sys.executable, "-m", "playground", "fusion", "resnet_conv_relu_conv",
                          "--budget-s", "4", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(run.stdout)
    assert data["verdict"] in ("fuse", "don't fuse", "no difference (within noise)")
    for key in ("fused_ms", "unfused_ms", "ratio", "ratio_low", "ratio_high", "reason",
                "fused_layers"):
        assert key in data, key
    assert data["fused"]["steps"] and data["unfused"]["steps"]



@pytest.mark.slow
def test_verdict_without_a_fused_schedule_that_fits_is_dont_fuse(pool):
    """On an 8x8 image with 5x5 kernels every fused tile would recompute more than half of
    conv1 again: nothing fused is measured, so the answer is "don't fuse" with that reason
    (not "no difference", which would claim a measurement)."""
    chain = normalize_chain({"input": {"shape": [1, 3, 8, 8]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": 5, "padding": 2}, {"op": "relu"},
        {"op": "conv2d", "channels": 8, "kernel": 5, "padding": 2}]})
    assert fusion_options(stages(chain), machine_facts()) == []
    v = fusion_verdict(pool, chain, machine_facts(), budget_s=5)
    assert v.fused is None and v.unfused is not None and v.unfused.ok
    assert v.verdict == "don't fuse" and "no fused schedule fits" in v.reason


def test_a_template_history_groups_by_layer_and_stage():
    """Long histories (a searched schedule) read as stages: a layer's weights and layout,
    its register tiling, its fusion into another layer."""
    from playground.schedule.views import GROUP_FROM
    from playground.schedule.views import stages as history_stages

    chain = normalize_chain(CONV_RELU_CONV)
    _, plan, _ = next(candidate_plans(chain, machine_facts(), fused=False))
    steps = plan_steps(chain, plan).steps
    groups = history_stages(chain, steps)
    labels = [g.label.split(" (")[0] for g in groups]
    assert "conv1 · register tiling" in labels and "conv2 · register tiling" in labels, labels
    assert all(g.end - g.start >= 3 for g in groups)
    assert [g.start for g in groups] == sorted(g.start for g in groups)
    assert all(a.end <= b.start for a, b in itertools.pairwise(groups))
    assert history_stages(chain, steps[:GROUP_FROM - 1]) == []  # a short history stays flat


@pytest.mark.slow
@pytest.mark.parametrize("groups", [1, 4, 16], ids=["dense", "grouped", "depthwise"])
def test_two_convs_fused_at_2d_tiles_validate_with_tile_sized_intermediates(pool, groups):
    """A 2-D fused group (rows x cols tiles of conv2) for dense, grouped and depthwise
    producers: validated in the worker (poisoned buffers) with the tile-local step, which
    drops the producers' border predicates."""
    from playground import service

    chain = normalize_chain({"input": {"shape": [1, 16, 12, 16]}, "layers": [
        {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1, "groups": groups},
        {"op": "relu"}, {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1}]})
    st_ = stages(chain)
    tiles = tuple(tile_candidates(s, facts_with(256))[0] if s.kind == "conv" else None
                  for s in st_)
    r = plan_steps(chain, Plan(tiles, (Group(0, len(st_) - 1, 4, 8),), lanes=8))
    session = Session.new(chain, r.steps)
    result = service.run(pool, session, "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result
    said = service.lower(pool, session).value["tile_local"]
    assert "conv1: predicate dropped" in said or "conv1_local: predicate dropped" in said, said

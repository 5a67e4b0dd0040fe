"""Schedule analysis on cases worked by hand (see playground/explore/analysis.py for the rules)."""

import json

import pytest
import tvm

from playground.chain.spec import chain_flop, normalize_chain
from playground.explore.analysis import analyze
from playground.schedule.steps import Step

CACHES = {"L1": 32 * 1024, "L2": 512 * 1024, "L3": 32 * 1024 * 1024}


def conv_relu_conv(size, pad2=1, cin=8, k=16):
    return normalize_chain({"input": {"shape": [1, cin, size, size]}, "layers": [
        {"op": "conv2d", "channels": k, "kernel": 3, "padding": 1}, {"op": "relu"},
        {"op": "conv2d", "channels": k, "kernel": 3, "padding": pad2}]})


def fused_steps(tile, producers=("conv2_pad", "relu1", "conv1", "conv1_pad")):
    steps = [Step("split", {"block": "conv2", "loop": "h", "factors": [None, tile]}),
             Step("split", {"block": "conv2", "loop": "w", "factors": [None, tile]}),
             Step("reorder", {"block": "conv2",
                              "loops": ["n", "h_0", "w_0", "k", "h_1", "w_1"]})]
    return steps + [Step("compute_at", {"block": b, "target_block": "conv2",
                                        "target_loop": "w_0"}) for b in producers]


def test_unscheduled_chain_does_exactly_the_needed_work():
    chain = conv_relu_conv(16)
    a = analyze(chain, [], caches=CACHES)
    assert [b.block for b in a.blocks] == ["conv1_pad", "conv1", "relu1", "conv2_pad", "conv2"]
    assert all(b.redundancy == 1.0 for b in a.blocks)
    assert [b.flop_per_iter for b in a.blocks] == [0, 2, 1, 0, 2]  # pad 0, MAC 2, relu 1
    # conv1: 16 out channels x 16 x 16 pixels x (8 x 3 x 3) MACs
    assert a.block("conv1").iterations_done == 16 * 16 * 16 * 72
    assert a.flop_done == a.flop_needed == chain_flop(chain) == a.estimated_flop


def test_fused_tile_dividing_the_extent():
    # 16x16 image, 8x8 tiles of conv2 (pad 1): conv1 rows per tile are [8t-1, 8t+9) clipped
    # to [0, 16): 9 + 9 = 18 rows for 16 needed, same for columns (the clipping predicates
    # kept: the tile-local step off).
    chain = conv_relu_conv(16)
    a = analyze(chain, fused_steps(8), caches=CACHES, tile_local=False)
    conv1 = a.block("conv1")
    assert conv1.iterations_done == 16 * 18 * 18 * 72
    assert conv1.iterations_needed == 16 * 16 * 16 * 72
    assert conv1.redundancy == pytest.approx((18 / 16) ** 2)
    assert a.block("relu1").redundancy == pytest.approx((18 / 16) ** 2)
    # conv1_pad (18x18 padded plane): rows [8t-1, 8t+11) clipped to [0, 18): 11 + 11
    assert a.block("conv1_pad").iterations_done == 8 * 22 * 22
    assert a.block("conv2").redundancy == 1.0
    # estimate_tir_flops ignores the T.where guards: it equals the unguarded count.
    assert a.estimated_flop == sum(b.flop_per_iter * b.iterations_unguarded for b in a.blocks)
    assert a.estimated_flop > a.flop_done > a.flop_needed == chain_flop(chain)


def test_fused_tile_not_dividing_the_extent():
    # 30x30 image, tile 8 -> 4 tiles per axis, the last one 6 wide (guard h_0*8+h_1 < 30).
    # conv1 rows per tile: [0,9) [7,17) [15,25) [23,30) -> 9+10+10+7 = 36 for 30 needed
    # (the clipping predicates kept: the tile-local step off).
    chain = conv_relu_conv(30)
    a = analyze(chain, fused_steps(8), caches=CACHES, tile_local=False)
    assert a.block("conv2").iterations_done == 16 * 30 * 30 * 144
    assert a.block("conv2").iterations_unguarded == 16 * 32 * 32 * 144
    assert a.block("conv1").iterations_done == 16 * 36 * 36 * 72
    assert a.block("conv1").redundancy == pytest.approx(1.44)
    # conv2_pad rows (32 padded): [0,10) [8,18) [16,26) [24,32) -> 10+10+10+8 = 38
    assert a.block("conv2_pad").iterations_done == 16 * 38 * 38
    # conv1_pad rows (32 padded): [0,11) [7,19) [15,27) [23,32) -> 11+12+12+9 = 44
    assert a.block("conv1_pad").iterations_done == 8 * 44 * 44


def test_split_alone_not_dividing_counts_the_guard():
    chain = conv_relu_conv(30)
    steps = [Step("split", {"block": "relu1", "loop": "h", "factors": [None, 8]})]
    a = analyze(chain, steps, caches=CACHES)
    relu = a.block("relu1")
    assert (relu.iterations_done, relu.iterations_unguarded) == (16 * 30 * 30, 16 * 32 * 30)
    assert relu.redundancy == 1.0


def test_footprints_after_compaction():
    # conv2 without padding: conv1's 10x10 tile never touches the border, so TVM compacts
    # conv1 and relu1 to 16x10x10 floats and conv1_pad to 8x12x12.
    chain = conv_relu_conv(18, pad2=0)
    a = analyze(chain, fused_steps(8, ("relu1", "conv1", "conv1_pad")), caches=CACHES)
    assert a.buffer("conv1").compact_shape == (1, 16, 10, 10)
    assert a.buffer("conv1").bytes == 16 * 10 * 10 * 4
    assert a.buffer("relu1").compact_shape == (1, 16, 10, 10)
    assert a.buffer("conv1_pad").compact_shape == (1, 8, 12, 12)
    assert a.buffer("conv1").fits == "L1"


def test_footprints_when_the_border_clips_the_tile():
    # With padding on conv2, border tiles clip conv1's region with a T.where; TVM 0.27's
    # CompactBufferAllocation cannot bound that by a constant and keeps the full buffer.
    chain = conv_relu_conv(16)
    a = analyze(chain, fused_steps(8), caches=CACHES, tile_local=False)
    assert a.buffer("conv2_pad").compact_shape == (1, 16, 10, 10)
    assert a.buffer("conv1").compact_shape == (1, 16, 16, 16)
    # StorageRewrite shares memory: conv1_pad with conv2_pad, conv1 with relu1
    assert a.allocated_bytes == (8 * 18 * 18 + 16 * 16 * 16) * 4
    assert a.tile_local == ()


def test_footprints_with_the_tile_local_step():
    # The step drops the border predicates: every intermediate is the unclipped tile, and
    # the producers compute the ring outside the image too (done = loop extents).
    chain = conv_relu_conv(16)
    a = analyze(chain, fused_steps(8), caches=CACHES)
    assert a.buffer("conv1_pad").compact_shape == (1, 8, 12, 12)
    assert a.buffer("conv1").compact_shape == (1, 16, 10, 10)
    assert a.buffer("relu1").compact_shape == (1, 16, 10, 10)
    assert dict(a.tile_local)["conv1"] == ""
    assert a.block("conv1").iterations_done == 4 * 16 * 10 * 10 * 8 * 3 * 3
    assert a.allocated_bytes < (8 * 18 * 18 + 16 * 16 * 16) * 4 / 2


def test_bytes_moved_model():
    chain = conv_relu_conv(16)
    # Everything fits in L2: each input, weight and output moves once, intermediates never.
    a = analyze(chain, [], caches=CACHES)
    compulsory = (8 * 16 * 16 + 16 * 8 * 9 + 16 * 16 * 9 + 16 * 16 * 16) * 4
    assert a.bytes_moved == compulsory
    assert a.buffer("conv1").traffic_bytes == 0
    assert a.arithmetic_intensity == pytest.approx(chain_flop(chain) / compulsory)
    # A 60 KiB "L2": the whole chain (100 KiB) no longer fits; each unfused nest fits by itself, so
    # the intermediate conv1 (16 KiB) is written by its nest and read by relu1's: 2x.
    tiny = {"L1": 4096, "L2": 60 * 1024, "L3": 1 << 20}
    b = analyze(chain, [], caches=tiny)
    assert b.buffer("conv1").traffic_bytes == 2 * 16 * 16 * 16 * 4
    # Fused at 8x8 tiles, one tile's working set fits: intermediates stay in cache, the
    # input is read per tile with its halo (12x12 of 16x16 per tile, 4 tiles).
    f = analyze(chain, fused_steps(8), caches=tiny)
    assert f.buffer("conv1").traffic_bytes == 0
    assert f.buffer("data").traffic_bytes == 4 * 8 * 12 * 12 * 4
    assert f.bytes_moved < b.bytes_moved


def test_to_dict_is_json():
    a = analyze(conv_relu_conv(16), fused_steps(8), caches=CACHES)
    d = json.loads(json.dumps(a.to_dict()))
    assert d["blocks"][1]["block"] == "conv1"
    # the tile-local step drops conv1's border predicate: each 8x8 tile computes 10x10
    assert d["blocks"][1]["redundancy"] == pytest.approx((20 / 16) ** 2)
    assert d["tile_local"][1] == ["conv1", ""]
    assert len(a.rows()) == 5 and len(a.buffer_rows()) == 8


def test_depthwise_pointwise():
    chain = normalize_chain({"input": {"shape": [1, 16, 32, 32]}, "layers": [
        {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1, "groups": 16},
        {"op": "relu"}, {"op": "conv2d", "channels": 32, "kernel": 1}]})
    steps = [Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]}),
             Step("reorder", {"block": "conv2", "loops": ["n", "h_0", "k", "h_1"]}),
             Step("compute_at", {"block": "relu1", "target_block": "conv2",
                                 "target_loop": "h_0"}),
             Step("compute_at", {"block": "conv1", "target_block": "conv2",
                                 "target_loop": "h_0"})]
    a = analyze(chain, steps, caches=CACHES)
    # a 1x1 pointwise conv needs no halo: no recomputation
    assert a.block("conv1").redundancy == 1.0
    assert a.flop_done == chain_flop(chain)
    assert a.buffer("conv1").compact_shape == (1, 16, 8, 32)


@pytest.mark.slow
def test_analyze_job_in_worker(pool):
    chain = conv_relu_conv(16)
    steps = [s.to_dict() for s in fused_steps(8)]
    result = pool.run("analyze", {"chain": chain, "steps": steps, "target": "cpu"},
                      timeout_s=120)
    assert result.status == "ok", result.message
    conv1 = next(b for b in result.value["blocks"] if b["block"] == "conv1")
    assert conv1["redundancy"] == pytest.approx((20 / 16) ** 2)  # tile-local: 10x10 per tile
    assert tvm  # the parent imports tvm for schedules; analysis itself ran in the worker

"""The worker's run job end to end: float16 chains validate with their own tolerance, CUDA
without a GPU builds but claims nothing, and lowering shows compacted tiles."""

import pytest
from helpers import CONV_RELU_CONV, fuse_two_convs

from playground import service
from playground.schedule.session import Session
from playground.schedule.steps import Step

pytestmark = pytest.mark.slow


def test_float16_chain_validates_and_times(pool):
    chain = {"input": {"shape": [1, 8, 16, 16], "dtype": "float16"},
             "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                        {"op": "batch_norm"}, {"op": "relu"}]}
    steps = [Step("compute_inline", {"block": "bn1_scale"}),
             Step("compute_inline", {"block": "bn1_shift"}),
             Step("reverse_compute_at", {"block": "bn1", "target_block": "conv1",
                                         "target_loop": "w"}),
             Step("reverse_compute_at", {"block": "relu1", "target_block": "conv1",
                                         "target_loop": "w"})]
    result = service.run(pool, Session.new(chain, steps), "cpu", repeat=3)
    assert result.status == "ok", result.message
    assert result.value["correct"] is True and "rtol 0.02" in result.value["message"]
    assert result.value["median_ms"] > 0 and result.value["gflops"] > 0
    load = result.value["timing"]["load"]  # the worker's timing carries the machine's load
    assert load["where"] == "local" and load["cores"] >= 1 and load["threads"] >= 1
    assert isinstance(load["under_load"], bool) and load["others_cores"] >= 0


def test_cuda_without_a_gpu_builds_but_claims_nothing(pool):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present: the gpu tests cover this")
    from playground.io.presets import load_preset

    chain, steps, _ = load_preset("cuda_conv_relu")
    result = service.run(pool, Session.new(chain, steps), "cuda")
    assert result.status == "ok" and result.value["ran"] is False
    assert result.value["correct"] is None and "no GPU is present" in result.value["message"]


def test_lowered_tir_shows_the_buffers_after_compaction(pool):
    result = service.lower(pool, Session.new(CONV_RELU_CONV, fuse_two_convs(8)))
    assert result.status == "ok", result.message
    text = result.value["text"]
    # The tile-local step drops the image-border guards, so conv1 and conv1_pad are tiles;
    # relu1 and conv2_pad shrink to a tile and share memory with them.
    assert "conv1_pad = T.alloc_buffer((1152,))" in text  # 8 x 12 x 12
    assert "conv1 = T.alloc_buffer((800,))" in text  # 8 x 10 x 10
    assert "relu1 = T.alloc_buffer" not in text and "T.prim_func" in text
    assert "conv1: predicate dropped" in result.value["tile_local"]
    # Without it, TVM 0.27 keeps conv1 and conv1_pad at full size (the guards stop
    # CompactBufferAllocation).
    off = service.lower(pool, Session.new(CONV_RELU_CONV, fuse_two_convs(8)), tile_local=False)
    assert "conv1_pad = T.alloc_buffer((2592,))" in off.value["text"]  # 8 x 18 x 18
    assert "conv1 = T.alloc_buffer((2048,))" in off.value["text"]  # 8 x 16 x 16
    assert off.value["tile_local"] == ""

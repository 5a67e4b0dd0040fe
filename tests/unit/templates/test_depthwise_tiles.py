"""Column tiles of depthwise convolutions: one channel, several rows, balanced row tiles.

A depthwise channel shares no input with the next, so more channels per tile only add
accumulators; what a loaded input row can feed is the output rows whose windows cover it
(:func:`playground.templates.space._depthwise_tiles`). These tests check the ranking's
shape on made-up machines; the measured speed is in ``benchmarks/README.md``.
"""

from __future__ import annotations

import pytest
from fuzzing import facts_with

from playground.chain.spec import normalize_chain
from playground.templates.space import tile_candidates
from playground.templates.stages import stages


def _depthwise(channels: int, hw: int, stride: int = 1) -> dict:
    return {"input": {"shape": [1, channels, hw, hw]},
            "layers": [{"op": "conv2d", "channels": channels, "kernel": 3, "stride": stride,
                        "padding": 1, "groups": channels}, {"op": "relu6"}]}


@pytest.mark.parametrize("bits", [512, 256])
@pytest.mark.parametrize("channels, hw, stride", [(32, 112, 1), (64, 112, 2), (144, 56, 1),
                                                  (32, 64, 2), (8, 40, 1)])
def test_a_depthwise_conv_is_tiled_one_channel_by_several_rows(bits, channels, hw, stride):
    facts = facts_with(bits)
    stage = stages(normalize_chain(_depthwise(channels, hw, stride)))[0]
    tiles = tile_candidates(stage, facts)
    assert tiles and all(t.vector == "w" for t in tiles)
    best = tiles[0]
    oh = stage.out_shape[2]
    assert best.kt == 1 and 2 <= best.ht <= 8 and oh % best.ht == 0
    assert (oh // best.ht) % facts.cores == 0 or oh // best.ht >= 8 * facts.cores
    assert stage.out_shape[3] % best.wt == 0 and best.wt % best.lanes == 0
    for t in tiles:
        assert t.accumulators <= facts.registers - 3


def test_a_dense_or_grouped_conv_keeps_its_channel_tiles():
    """Channels of a dense or grouped conv share their input: tiles of several channels."""
    facts = facts_with(512)
    grouped = {"input": {"shape": [1, 128, 56, 56]},
               "layers": [{"op": "conv2d", "channels": 128, "kernel": 3, "stride": 1,
                           "padding": 1, "groups": 32}]}
    stage = stages(normalize_chain(grouped))[0]
    assert tile_candidates(stage, facts)[0].kt > 1

"""Tile and halo regions for one iteration, against rectangles computed by hand."""

import pytest
from test_analysis import conv_relu_conv, fused_steps

from playground.chain.spec import normalize_chain
from playground.explore.halo import (
    TileRegions,
    halo_figure,
    halo_spec,
    tile_defaults,
    tile_regions,
    volume,
)
from playground.explore.iteration_space import AnalysisError


def test_interior_tile_regions():
    # 32x32, 8x8 tiles of conv2 (3x3, pad 1) at h_0 = w_0 = 1: output rows/cols [8, 16);
    # conv2_pad (padded coords) [8, 18); relu1/conv1 [7, 17) (10x10: the halo of 1);
    # conv1_pad (padded) [7, 19); data [6, 18) (12x12).
    chain = conv_relu_conv(32)
    r = tile_regions(chain, fused_steps(8), "conv2", "w_0", {"h_0": 1, "w_0": 1})
    assert r.regions["conv2"] == ((0, 1), (0, 16), (8, 16), (8, 16))
    assert r.regions["conv2_pad"] == ((0, 1), (0, 16), (8, 18), (8, 18))
    assert r.regions["conv1"] == ((0, 1), (0, 16), (7, 17), (7, 17))
    assert r.regions["conv1_pad"] == ((0, 1), (0, 8), (7, 19), (7, 19))
    assert r.regions["data"] == ((0, 1), (0, 8), (6, 18), (6, 18))
    # the next tile along w_0 starts 8 columns later: overlap = 2 columns of conv1
    assert r.neighbour == {"n": 0, "h_0": 1, "w_0": 2}
    assert r.overlap["conv1"] == ((0, 1), (0, 16), (7, 17), (15, 17))
    assert r.overlap["conv2"] is None
    assert volume(r.overlap["data"]) == 8 * 12 * 4
    # work in this tile: conv1 runs 16 x 10 x 10 x 72 times for 16 x 8 x 8 outputs
    assert r.iterations["conv1"] / (16 * 8 * 8 * 72) == 1.5625


def test_border_and_last_tiles_are_clipped():
    chain = conv_relu_conv(30)
    first = tile_regions(chain, fused_steps(8), "conv2", "w_0", {"h_0": 0, "w_0": 0})
    assert first.regions["conv1"][2:] == ((0, 9), (0, 9))
    last = tile_regions(chain, fused_steps(8), "conv2", "w_0", {"h_0": 3, "w_0": 3})
    assert last.regions["conv2"][2:] == ((24, 30), (24, 30))
    assert last.regions["conv1"][2:] == ((23, 30), (23, 30))
    assert last.neighbour is None and last.overlap["conv1"] is None


def test_spec_figure_and_round_trip():
    chain = conv_relu_conv(32)
    r = tile_regions(chain, fused_steps(8), "conv2", "w_0", {"h_0": 1, "w_0": 1})
    spec = halo_spec(r, "conv1")
    assert spec["tile"] == {"h": [7, 17], "w": [7, 17]}
    assert spec["overlap"] == {"h": [7, 17], "w": [15, 17]}
    assert spec["overlap_points"] == 20
    assert TileRegions.from_dict(r.to_dict()) == r
    fig = halo_figure(r)
    assert len(fig.layout.annotations) == 6  # data, 4 intermediates, conv2
    assert halo_figure(r, "data").layout.shapes


def test_errors_name_the_argument():
    chain = conv_relu_conv(16)
    with pytest.raises(AnalysisError, match="no loop 'q'"):
        tile_regions(chain, fused_steps(8), "conv2", "q", {})
    with pytest.raises(AnalysisError, match="outside"):
        tile_regions(chain, fused_steps(8), "conv2", "w_0", {"w_0": 5})


def test_the_picture_opens_on_the_fused_block_and_its_tile_loop():
    chain = conv_relu_conv(16)
    fused = tile_defaults(chain, fused_steps(8))
    assert (fused.block, fused.loops["conv2"], fused.fused) == ("conv2", "w_0", True)
    assert fused.loops["conv1"] == "w_0"  # a producer computed there: the same tile
    # A relu after conv2 on its own loops (the chain): still conv2 at w_0, and the
    # relu's own loop is not n (extent 1: the whole image).
    chain2 = normalize_chain({**chain, "layers": [*chain["layers"], {"op": "relu"}]})
    fused2 = tile_defaults(chain2, fused_steps(8))
    assert (fused2.block, fused2.loops["conv2"]) == ("conv2", "w_0")
    assert fused2.loops["relu2"] == "c"
    unfused = tile_defaults(chain2, [])
    assert (unfused.block, unfused.loops["relu2"], unfused.fused) == ("relu2", "c", False)


def test_the_title_names_the_iteration_once():
    r = tile_regions(conv_relu_conv(16), [], "conv2", "n", {})
    title = halo_figure(r).layout.title.text
    assert title.startswith("conv2, one iteration of n (n = 0): this tile"), title
    assert "n = n=" not in title

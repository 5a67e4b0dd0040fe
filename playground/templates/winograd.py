"""A 3x3 stride-1 convolution by Winograd's F(m x m, 3x3), as template steps.

The ``winograd`` step (:func:`playground.chain.compute.winograd`) rewrites the conv into its
stages; this template schedules them with ordinary steps, as ``benchmarks/winograd_probe.py``
measured them (ResNet's 256-channel 14x14 layer ran 1.9x ONNX Runtime there, on a Zen 5):

* ``<conv>_U``, the weight transform: channels in parallel, the transform's coefficients
  unrolled (with constant weights it runs once, before timing);
* ``<conv>_pad`` computed per input channel inside ``<conv>_V``, the input transform:
  channels in parallel, a row of tiles vectorized, the coefficients unrolled;
* ``<conv>_M``, the (m + 2)^2 matrix products: parallel over them, register-tiled as the
  direct conv's template is (``wt`` tiles x ``kt`` vectors of output channels);
* ``<conv>_Y``, the inverse transform: tiles in parallel, output channels vectorized;
* ``<conv>`` (the write-back into NCHW, with the stage's epilogue folded in): images x blocks
  of channels in parallel.

A Winograd tile is a :class:`~playground.templates.conv.Tile` with ``vector="winograd"``,
``ht`` = m, ``wt`` tiles and ``kt`` vectors of output channels per register tile.
"""

from __future__ import annotations

from playground.chain.winograd import tile_grid, winograd_refusal
from playground.templates.conv import Tile, _fit, fold_epilogue
from playground.templates.recorder import Recorder
from playground.templates.stages import Stage

#: The smallest channel counts (in and out) a Winograd candidate is tried at: below them the
#: transforms, which grow with channels x pixels, outweigh the products saved (the probe's
#: 64-channel 56x56 layer only drew level with the direct conv).
MIN_CHANNELS = 32


def winograd_tiles(stage: Stage, lanes: int, m: int = 2, min_channels: int = MIN_CHANNELS,
                   l2_bytes: int = 0) -> list[Tile]:
    """The Winograd tiles worth measuring for ``stage`` (none when it is not a dense 3x3
    stride-1 conv, dilated or not, or has fewer than ``min_channels`` channels or output
    channels that no vector divides): over the whole image first; then, for a conv whose
    transformed input overflows half of ``l2_bytes`` (the machine's L2), in chunks of tile
    rows whose stages stay in it (``order="chunks"``, ``nt`` tile rows a chunk, of each
    phase of a dilated conv)."""
    if stage.kind != "conv" or winograd_refusal(stage.layer) is not None:
        return []
    n, k, _, _ = stage.out_shape
    c = stage.in_shape[1]
    if c < min_channels or k < min_channels or k % lanes:
        return []
    rows, cols = tile_grid(stage.layer, stage.in_shape, m)
    kt = 2 if k % (2 * lanes) == 0 else 1
    whole = _fit(n * rows * cols, 8)
    out = [Tile("winograd", lanes, kt, m, whole)]
    dh = stage.layer["dilation"][0]
    row_bytes = dh * (m + 2) ** 2 * cols * 4 * (c + k)  # a tile row of V and M, each phase
    if l2_bytes and rows // dh >= 2 and n * rows * row_bytes > dh * l2_bytes // 2:
        chunk = max(1, min(rows // dh // 2, l2_bytes // 2 // row_bytes))
        out.append(Tile("winograd", lanes, kt, m, _fit(chunk * cols, 8), "chunks", chunk))
    return out


def winograd_steps(r: Recorder, stage: Stage, tile: Tile, fold: bool) -> None:
    """Schedule the Winograd stages of ``stage`` (after its ``winograd`` step), the
    epilogue folded into the write-back when ``fold``."""
    name, lanes = stage.name, tile.lanes
    chunks = tile.order == "chunks"
    if fold:
        fold_epilogue(r, stage, name)
    # The write-back: a blocked transpose from [tile, i, j, k] into NCHW; in chunks of tile
    # rows, every stage but the weights' computed per chunk (its buffers chunk-sized).
    n, k, h, w = r.loops(name)
    ko, ki = r.split(name, k, [None, lanes])
    if chunks:
        hc, hr = r.split(name, h, [None, tile.ht * tile.nt * stage.layer["dilation"][0]])
        r("reorder", name, loops=[n, hc, ko, hr, w, ki])
        at = r.fuse(name, [n, hc])
        r("parallel", name, loop=at)
        for block in ("Y", "M", "V"):
            r("compute_at", f"{name}_{block}", target_block=name, target_loop=at,
              preserve_unit_loops=True)
    else:
        r("reorder", name, loops=[n, ko, h, w, ki])
        r("parallel", name, loop=r.fuse(name, [n, ko]))
    r("unroll", name, loop=ki)
    # The weight transform.
    e, u, c, k = r.loops(f"{name}_U")
    r("reorder", f"{name}_U", loops=[c, e, u, k])
    r("parallel", f"{name}_U", loop=c)
    r("unroll", f"{name}_U", loop=e)
    r("unroll", f"{name}_U", loop=u)
    # The input transform, a row of tiles per vector, the padding computed per channel.
    v = f"{name}_V"
    e, u, c, p = r.loops(v)[-4:]
    cols = tile_grid(stage.layer, stage.in_shape, tile.ht)[1]
    th, tw = r.split(v, p, [None, cols])
    r("reorder", v, loops=[c, th, e, u, tw])
    r("compute_at", f"{name}_pad", target_block=v, target_loop=c, preserve_unit_loops=True)
    r.vectorize_innermost(f"{name}_pad", lanes)
    if cols > 1:  # an image one tile wide has no row of tiles to vectorize
        r("vectorize", v, loop=tw)
    r("unroll", v, loop=e)
    r("unroll", v, loop=u)
    if not chunks:
        r("parallel", v, loop=c)
    # The products: a register tile of wt tiles x kt vectors of output channels.
    mb = f"{name}_M"
    e, u, p, k, rc = r.loops(mb)[-5:]
    eu = r.fuse(mb, [e, u])
    po, pi = r.split(mb, p, [None, tile.wt])
    ko, k1, kv = r.split(mb, k, [None, tile.kt, lanes])
    r("reorder", mb, loops=[eu, ko, po, rc, pi, k1, kv])
    if not chunks:  # before decompose_reduction (TVM 0.27 refuses it after)
        r("parallel", mb, loop=eu)
    r("unroll", mb, loop=pi)
    r("unroll", mb, loop=k1)
    r("vectorize", mb, loop=kv)
    r("decompose_reduction", mb, loop=rc)
    # The inverse transform, output channels vectorized.
    y = f"{name}_Y"
    p, i, j, k = r.loops(y)[-4:]
    ko, kv = r.split(y, k, [None, lanes])
    r("reorder", y, loops=[p, ko, i, j, kv])
    r("vectorize", y, loop=kv)
    r("unroll", y, loop=i)
    r("unroll", y, loop=j)
    if not chunks:
        r("parallel", y, loop=p)

"""A pool computed per register tile of the conv before it (a fused group's last two stages).

A fused group normally computes its last stage (the *anchor*) by tiles of rows, and each
earlier stage the rows that tile needs, into a tile-sized buffer
(:mod:`playground.templates.plan`). When the anchor is a pool whose windows do not overlap
(kernel = stride, no padding: the 2x2/2 max pool after a VGG block, the 2x2 average pool of a
DenseNet transition) and the conv before it has a column-vector tile (``vector="w"``) of
whole windows, the pool can go one level further in: under the row tile, the pool is tiled
by what one register tile of the conv produces (``kt`` channels x ``ht / kh`` rows x
``wt / kw`` columns of pooled output), and the conv is computed there, tile by tile. The
conv's output then never leaves L1 (a ``kt x ht x wt`` buffer the pool reads back at once,
often straight from registers), where it used to be written to the row tile's buffer (in L2)
and read back by a second pass. The conv's padded input, and any stage before it, stay at
the row tile (their halo is shared by all its register tiles).

On 1x8x512x512 -> 16 channels 3x3 + relu + 2x2 max pool (a 2-core AVX-512 machine): 1.21 ms
per call against 1.40 ms for the same group at row tiles, 85% of the FMA peak in the
benchmark (``benchmarks/README.md``, "A pool per register tile").

A :class:`~playground.templates.plan.Group` asks for it with ``per_tile=True``;
:func:`register_tile` proposes the conv's tile, :func:`fits` says where it applies and
:func:`tile_anchor` writes the pool's loops.
"""

from __future__ import annotations

from playground.measure.machine import MachineFacts
from playground.templates.conv import Tile, split_loop, vectorize_unroll_parallel
from playground.templates.recorder import Recorder
from playground.templates.stages import Stage


def windows_tile(pool: Stage) -> bool:
    """Whether ``pool``'s windows tile its input exactly: kernel = stride, no padding, no
    dilation, and every input row and column in one window."""
    layer = pool.layer
    if pool.kind != "pool" or layer["kernel"] != layer["stride"] or any(layer["padding"]):
        return False
    if list(layer.get("dilation", [1, 1])) != [1, 1] or layer.get("ceil_mode"):
        return False
    _, _, h, w = pool.in_shape
    _, _, oh, ow = pool.out_shape
    kh, kw = layer["kernel"]
    return h == oh * kh and w == ow * kw


def _pair(conv: Stage, pool: Stage) -> bool:
    """``conv`` a conv whose output ``pool`` reads, in windows that tile it."""
    return conv.kind == "conv" and pool.input_name == conv.output_name and windows_tile(pool)


def fits(conv: Stage, pool: Stage, tile: Tile | None, rows: int | None,
         cols: int | None = None) -> bool:
    """Whether ``pool`` (a group's anchor, at tiles of ``rows`` output rows and whole rows)
    can be computed per register ``tile`` of ``conv``, the stage just before it."""
    if not _pair(conv, pool):
        return False
    if tile is None or tile.vector != "w" or rows is None or cols is not None:
        return False
    kh, kw = pool.layer["kernel"]
    if tile.ht % kh or tile.wt % kw:
        return False
    _, channels, _, ow = pool.out_shape
    return (channels % tile.kt == 0 and rows % (tile.ht // kh) == 0
            and ow % (tile.wt // kw) == 0)


def register_tile(conv: Stage, pool: Stage, facts: MachineFacts) -> Tile | None:
    """The conv tile for a pool computed per register tile: one window row high (``kh``
    rows) and one vector of pooled columns wide (``kw x L`` columns, or ``kw x d`` for the
    largest ``d < L`` that divides a narrower output), with as many output channels as keep
    the accumulators near 16 of 32 vector registers (11 of 16), the budget
    :func:`~playground.templates.space.tile_candidates` ranks by (two channels at most for a
    grouped conv, whose channels share no input). None where the pool's windows overlap."""
    if not _pair(conv, pool):
        return None
    lanes = facts.lanes("float32")
    kh, kw = pool.layer["kernel"]
    _, channels, _, ow = pool.out_shape
    width = max(d for d in range(1, lanes + 1) if ow % d == 0)  # pooled columns per tile
    per_channel = kh * -(-width * kw // lanes)  # accumulator vectors per channel
    target = 16 if facts.registers >= 32 else 11
    if conv.layer["groups"] > 1:
        target = per_channel * 2
    kt = max((d for d in range(1, channels + 1)
              if channels % d == 0 and d * per_channel <= target), default=0)
    return Tile("w", lanes, kt, kh, width * kw) if kt else None


def tile_anchor(r: Recorder, pool: Stage, tile: Tile, write_back: list[str],
                outer: list[str], loops: list[str], lanes: int) -> tuple[str, str]:
    """Tile the anchor ``pool`` (its loops ``n, c, h, w, rh, rw`` under the group's row tile
    ``outer``) by what one register ``tile`` of the conv before it produces: ``[outer | h_o,
    c_o, w_o | c_i, h_i, (w_u,) rh, rw, w_v]``, the pooled columns vectorized. Returns the
    parallel loop and ``w_o``, the loop the conv is computed at. The caller has checked
    :func:`fits` (every split divides)."""
    name = pool.name
    n, c, h, w, rh, rw = loops
    kh, kw = pool.layer["kernel"]
    width = tile.wt // kw
    co, ci = split_loop(r, name, c, tile.kt)
    ho, hi = split_loop(r, name, h, tile.ht // kh)
    wo, wi = split_loop(r, name, w, width)
    vector = min(lanes, width)
    wu, wv = r.split(name, wi, [None, vector]) if width > vector else (None, wi)
    rest = [x for x in (n,) if x not in outer]
    inner = [x for x in (ci, hi, wu) if x]
    r("reorder", name, loops=[*outer, *rest, ho, co, wo, *inner, rh, rw, wv])
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=wo)
    top = vectorize_unroll_parallel(r, name, wv, [*inner, rh, rw], write_back, lanes, outer,
                                    outer[0], True)
    return top, wo


def unroll_write_backs(r: Recorder, blocks: list[str], at: str) -> None:
    """Unroll the loops of ``blocks`` (the conv's and the pool's write-backs) under the
    register tile's loop ``at``, all but the vectorized one: with every index a constant,
    LLVM keeps the conv's accumulators and the tile of its output in registers (the pool's
    loads of the tile are then shuffles of the stored vectors), where a loop over them made
    it store the accumulators to the stack and load them back."""
    for block in blocks:
        if not r.has(block) or at not in r.loops(block):
            continue
        loops, kinds = r.loops(block), r.loop_kinds(block)
        for loop, kind in zip(loops[loops.index(at) + 1:], kinds[loops.index(at) + 1:],
                              strict=True):
            if kind == "serial" and r.extent(block, loop) > 1:
                r.attempt("unroll", block, loop=loop)

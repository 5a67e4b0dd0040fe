"""The template choices for a chain on a machine: tiles per stage, and which stages to fuse.

Everything here is derived from the chain's shapes and the machine's facts
(:class:`~playground.measure.machine.MachineFacts`): the vector width gives the lanes, the
register file bounds the accumulator tile, L2 bounds a fused group's tile of intermediate rows.
Choices are ranked best-first by a simple model (register use, reuse, no guarded loops), so a
search that can only afford a few measurements measures the likely winners first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from playground.measure.machine import MachineFacts
from playground.templates import pool_tiles
from playground.templates.conv import Tile, pixel_vectors_fit
from playground.templates.plan import Group
from playground.templates.stages import Stage


def registers(facts: MachineFacts) -> int:
    """Vector registers (:attr:`MachineFacts.registers`)."""
    return facts.registers


def _divisors(n: int, lo: int = 1, hi: int | None = None) -> list[int]:
    hi = n if hi is None else min(hi, n)
    return [d for d in range(lo, hi + 1) if n % d == 0]


def tile_candidates(stage: Stage, facts: MachineFacts, limit: int = 8) -> list[Tile]:
    """Register tiles for a conv stage, best first (empty for pools and elementwise stages)."""
    if stage.kind != "conv":
        return []
    lanes = facts.lanes("float32")
    regs = registers(facts)
    budget = regs - 3  # room for the weight / input vectors next to the accumulators
    # Measured on a 2-core AVX-512 Xeon (3x3 conv, 64 channels, 56x56): 14-16 accumulators
    # in one output row ran 2x faster than 28 (which spill) or two rows of 7 (which load each
    # weight vector for fewer pixels); AVX2's 16 registers peaked near 12 (6 rows x 2).
    target = 16 if regs >= 32 else 11

    def fit(acc: int, ht: int, wt: int) -> float:
        return (-abs(acc - target) / target + (0.25 if ht == 1 else 0.0)
                - (0.25 if wt < 6 else 0.0))
    _, k, oh, ow = stage.out_shape
    dense = stage.layer["groups"] == 1
    scored: list[tuple[float, Tile]] = []
    if pixel_vectors_fit(stage):
        # a 1x1 conv as a matrix product over pixel vectors (whole rows of them), ranked first
        # where it fits: 0.12 against 0.19 ms for the best channel-vector tile on 32 -> 64
        # channels at 112x112 (no output transposition), measured on a 2-core AVX-512 machine
        for ht in _divisors(oh, 1, 8):
            vectors, rest = divmod(ht * ow, lanes)
            if rest or not 2 <= vectors <= 8:
                continue
            rc = _channel_block(stage, ht * ow, facts)  # the same for every kt
            for kt in _divisors(k, 1, 8):
                acc = kt * vectors
                if not max(8, budget // 2) <= acc <= budget - 1:
                    continue
                score = 1.0 - abs(acc - 24) / 24
                if acc + kt + 1 > regs:
                    # the compiler keeps the kt broadcast weights in registers beside the
                    # accumulators and one input vector: 4 x 7 = 28 accumulators spilled
                    # (0.28 ms on the shape above, against 0.12 ms for 2 x 7)
                    score -= 0.6
                if rc is None:
                    # every block of output channels reads the tile's input pixels (all
                    # input channels) again, from L2: 0.41 against 0.23 ms for a
                    # channel-vector tile on 2x128x28x28 -> 256 (57 KB a tile)
                    score -= 0.9
                elif rc:
                    # in blocks of input channels that stay in L1: 0.22 ms on that shape,
                    # level with the channel vectors, so both are measured
                    score -= 0.3
                scored.append((score, Tile("p", lanes, kt, ht, ow, rc=rc or 0)))
    if dense and k % lanes == 0:
        for kb in (1, 2, 3, 4):
            if k % (kb * lanes):
                continue
            for ht in _divisors(oh, 1, 2):
                for wt in _divisors(ow, 2, 16):
                    acc = kb * ht * wt
                    if not 6 <= acc <= budget:
                        continue
                    scored.append((fit(acc, ht, wt) + 0.05 * min(kb, 2),
                                   Tile("k", lanes, kb, ht, wt)))
    depthwise = stage.in_shape[1] == stage.layer["groups"] == k
    if depthwise:
        scored += _depthwise_tiles(stage, facts, budget)
    # whole vectors where they divide the row, else the widest divisor of the row above half
    # a vector (56 columns on 16 lanes: 14-wide, 87% of the lanes; a grouped 3x3 at 56x56
    # ran 0.22 ms in 14-wide tiles against 0.32 ms in 8-wide ones, 2-core AVX-512), else half
    wider = max((d for d in range(lanes // 2 + 1, lanes) if ow % d == 0), default=lanes)
    for width in (lanes, wider, lanes // 2):
        if width < 4 or ow % width or depthwise:
            continue
        for v in (1, 2, 3, 4):
            wt = width * v
            if ow % wt:
                continue
            for kt in _divisors(k, 1, 8):
                for ht in _divisors(oh, 1, 2):
                    acc = kt * ht * v
                    if not 4 <= acc <= budget:
                        continue
                    score = fit(acc, ht, 8) - 0.6 * (1 - width / lanes) - \
                        (0.2 if dense else 0)
                    scored.append((score, Tile("w", width, kt, ht, wt)))
        if scored:
            break
    if 4 <= ow < lanes and not any(t.vector == "w" for _, t in scored):
        # a narrow image (ResNet's 7x7 stage): one row per vector, many channels per tile
        for kt in _divisors(k, 4, 16):
            acc = kt
            if acc <= budget:
                scored.append((fit(acc, 1, 8) - 0.15, Tile("w", ow, kt, 1, ow)))
    n = stage.out_shape[0]
    if n >= lanes // 2 and n % (lanes // 2) == 0 and ow % (lanes // 2):
        # a batch of vectors where no column vector divides the width (the forum's seed)
        width = lanes if n % lanes == 0 else lanes // 2
        for kt in _divisors(k, 1, 8):
            for nv in _divisors(n // width, 1, 2):
                for wt in (1, 2):
                    acc = kt * nv * wt
                    if 4 <= acc <= budget:
                        scored.append((fit(acc, 1, 8) + 0.2, Tile("n", width, kt, 1, wt, nt=nv)))
    if not scored:  # no vector divides the width: as wide a column vector as divides it
        width = max((d for d in range(1, min(lanes, ow) + 1) if ow % d == 0), default=1)
        if dense and k % lanes == 0:
            scored.append((0.0, Tile("k", lanes, 1, 1, width)))
        scored.append((0.0, Tile("w", width, 1, 1, width)))
    if stage.layer["stride"][1] > 1 and any(stage.layer["padding"]):
        # column phases or rows for a strided conv's padded input: the machine decides
        # (Tile.phases), so each column tile comes both ways, phases first
        scored += [(score - 0.01, replace(tile, phases=False)) for score, tile in scored
                   if tile.vector == "w"]
    if _weights_outweigh_activations(stage):
        # every tile of pixels would stream all the weights again: sweep the image per block
        # of output channels instead, that block's weights kept in cache
        scored += [(score + 0.5, replace(tile, order="channels")) for score, tile in scored
                   if tile.vector == "k"]
    scored.sort(key=lambda st: -st[0])
    out: list[Tile] = []
    for _, tile in scored:
        if tile not in out:
            out.append(tile)
    return out[:limit]


def _channel_block(stage: Stage, pixels: int, facts: MachineFacts) -> int | None:
    """Input channels per reduction block of a pixel-vector tile of ``pixels`` pixels
    (:attr:`Tile.rc`): 0 where the tile's input of every channel fits in two thirds of L1
    (the rest is the weights' and the output's), else the most channels whose input does,
    at least 8 of them and the tile's accumulators of every output channel (kept between
    blocks) within half of L2; None where no such block exists."""
    l1, l2 = facts.caches.get("L1", 0), facts.caches.get("L2", 0)
    c, k = stage.in_shape[1], stage.out_shape[1]
    if not l1 or c * pixels * 4 * 3 <= l1 * 2:
        return 0
    if l2 and k * pixels * 4 * 2 > l2:
        return None
    fits = [d for d in _divisors(c, 8) if d < c and d * pixels * 4 * 3 <= l1 * 2]
    return max(fits) if fits else None


def _depthwise_tiles(stage: Stage, facts: MachineFacts, budget: int) -> list[tuple[float, Tile]]:
    """Column tiles of a depthwise conv, scored.

    A depthwise channel shares nothing with the next (one input channel each), so a tile of
    several channels only adds accumulators; what one input row loaded into registers can
    feed is the output rows whose windows cover it. Hence one channel, about 4 rows of
    vectors, and row tiles that split evenly over the cores. Measured on one 2-core
    AVX-512 machine: MobileNet's 3x3 depthwise at 112x112 (32 channels) 0.070 ms at
    2 channels x 2 rows, 0.044-0.053 ms at 1 channel x 4-8 rows; the 3x3/2 one (64 channels,
    56x56 out) 0.18 ms -> 0.12 ms."""
    lanes = facts.lanes("float32")
    n, _, oh, ow = stage.out_shape
    out: list[tuple[float, Tile]] = []
    for width in (lanes, lanes // 2):
        if width < 4 or ow % width:
            continue
        for v in (1, 2, 3):
            if ow % (width * v):
                continue
            for kt in (1, 2):
                for ht in _divisors(oh, 1, 8):
                    acc = kt * ht * v
                    if acc > budget:
                        continue
                    tiles = n * (oh // ht)
                    balanced = tiles % facts.cores == 0 or tiles >= 8 * facts.cores
                    score = (0.4 + 0.1 * min(ht, 4) - 0.02 * max(0, ht - 4)
                             - 0.15 * (kt - 1) - 0.05 * (v - 1)
                             - (0.0 if balanced else 0.3) - (0.3 if width < lanes else 0.0))
                    out.append((score, Tile("w", width, kt, ht, width * v)))
        if out:
            break
    return out


def _weights_outweigh_activations(stage: Stage) -> bool:
    """More weight bytes than input and output bytes together (deep, small-image layers)."""
    k, c = stage.out_shape[1], stage.in_shape[1]
    weights = k * (c // stage.layer["groups"]) * math.prod(stage.layer["kernel"])
    return weights > math.prod(stage.in_shape) + math.prod(stage.out_shape)


@dataclass(frozen=True)
class FusionOption:
    """Fusing stages ``first..last`` at tiles of ``rows`` output rows (or ``rows`` x ``cols``
    pixels) of the last one, with the model's numbers behind the choice."""

    group: Group
    redundancy: float  # work done / needed by the earlier stages (halo recomputation)
    tile_bytes: int  # intermediate bytes one tile keeps (what must stay in cache)
    tiles: int  # parallel iterations
    tile: Tile | None = None  # ``group.per_tile``: the register tile of the conv before it


def _rows_needed(stages_: list[Stage], first: int, last: int, rows: int,
                 axis: int = 0) -> list[int]:
    """Rows (``axis`` 1: columns) of each earlier stage's output that ``rows`` output rows
    (columns) of ``last`` read."""
    need, out = rows, []
    for i in range(last, first, -1):
        layer = stages_[i].layer
        kh, sh = layer["kernel"][axis], layer["stride"][axis]
        dh = layer.get("dilation", [1, 1])[axis]
        need = (need - 1) * sh + (kh - 1) * dh + 1
        out.append(min(need, stages_[i - 1].out_shape[2 + axis]))
    return out


#: 2-D tiles recompute a halo on two sides: a 3x3 -> 3x3 pair at 8x8 tiles does 1.56x.
MAX_REDUNDANCY = {False: 1.5, True: 1.6}


def _option(stages_: list[Stage], first: int, last: int, rows: int, cols: int | None,
            facts: MachineFacts) -> FusionOption | None:
    """The model's numbers for one tile shape; None when it repeats too much work, needs
    more than L2 per tile or leaves fewer tiles than cores."""
    anchor = stages_[last]
    n, _, oh, ow = anchor.out_shape
    producers = range(last - 1, first - 1, -1)
    need_h = _rows_needed(stages_, first, last, rows)
    need_w = (_rows_needed(stages_, first, last, cols, axis=1) if cols is not None
              else [stages_[i].out_shape[3] for i in producers])
    area = rows * (ow if cols is None else cols)
    done = sum(h * w * stages_[i].flop / (stages_[i].out_shape[2] * stages_[i].out_shape[3])
               for h, w, i in zip(need_h, need_w, producers, strict=True))
    needed = sum(stages_[i].flop * area / (oh * ow) for i in range(first, last))
    redundancy = done / needed if needed else 1.0
    tile_bytes = sum(h * w * stages_[i].out_shape[1] * 4
                     for h, w, i in zip(need_h, need_w, producers, strict=True))
    tiles = n * math.ceil(oh / rows) * (1 if cols is None else math.ceil(ow / cols))
    if redundancy > MAX_REDUNDANCY[cols is not None] or tile_bytes > facts.caches.get(
            "L2", 512 * 1024) or tiles < facts.cores:
        return None
    return FusionOption(Group(first, last, rows, cols), redundancy, tile_bytes, tiles)


def _per_tile(stages_: list[Stage], option: FusionOption,
              facts: MachineFacts) -> FusionOption | None:
    """``option`` with its last stage, a pool, computed per register tile of the conv before
    it (:mod:`playground.templates.pool_tiles`), where that applies."""
    g = option.group
    conv, pool = stages_[g.last - 1], stages_[g.last]
    tile = pool_tiles.register_tile(conv, pool, facts)
    if tile is None or not pool_tiles.fits(conv, pool, tile, g.rows, g.cols):
        return None
    return FusionOption(replace(g, per_tile=True), option.redundancy,
                        4 * tile.kt * tile.ht * tile.wt, option.tiles, tile)


def fusion_options(stages_: list[Stage], facts: MachineFacts) -> list[FusionOption]:
    """Ways to fuse pairs (and triples) of consecutive window stages, best first: row tiles
    and 2-D tiles (``rows`` x ``cols``, columns a divisor of the width of at least 8) whose
    intermediate tile fits in L2, recompute at most ~50% (2-D: 60%) more of the earlier stage,
    and still leave a few tiles per core. The list alternates two row options with one 2-D
    option, so that a search measuring only the first few measures both shapes; ahead of them
    come the first two row options again with a pool computed per register tile of the conv
    before it, where that applies (``FusionOption.tile`` set)."""
    rows_out: list[FusionOption] = []
    flat_out: list[FusionOption] = []
    for first in range(len(stages_) - 1):
        for last in (first + 1, first + 2):
            if last >= len(stages_):
                continue
            group = stages_[first:last + 1]
            if any(s.kind == "elementwise" for s in group):
                continue
            n, _, oh, ow = stages_[last].out_shape
            for rows in _divisors(oh, 1):
                if rows == oh and n == 1:
                    continue  # one tile per image and one image: no parallelism left
                option = _option(stages_, first, last, rows, None, facts)
                if option is not None:
                    rows_out.append(option)
                for cols in _divisors(ow, 8, ow - 1):
                    option = _option(stages_, first, last, rows, cols, facts)
                    if option is not None:
                        flat_out.append(option)
    # few redundant rows first, then bigger tiles (fewer loop overheads)
    for options in (rows_out, flat_out):
        options.sort(key=lambda o: (round(o.redundancy, 1), -o.tile_bytes))
    # a pool computed per register tile of the conv before it, where it applies, first (it
    # keeps the conv's output in registers: 1.21 against 1.40 ms at row tiles on a 2x2 max
    # pool after a 512x512 conv, 2-core AVX-512)
    out = [p for p in (_per_tile(stages_, o, facts) for o in rows_out[:2]) if p is not None]
    while rows_out or flat_out:
        out += rows_out[:2] + flat_out[:1]
        rows_out, flat_out = rows_out[2:], flat_out[1:]
    return out

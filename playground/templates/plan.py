"""A whole-chain schedule as a plan: how each stage is tiled and which stages are fused.

A :class:`Plan` says, for every stage of the chain (:mod:`playground.templates.stages`), how
its window layer is tiled (:class:`~playground.templates.conv.Tile`), and how stages are
*grouped*: a group of consecutive stages is computed tile by tile of its last stage's output
rows (``rows``), or of ``rows`` x ``cols`` 2-D tiles, each earlier stage computing just the
rows (and columns) plus halo that tile needs, so its output lives in a tile-sized buffer
instead of a whole tensor (tile-sized once lowered: :mod:`playground.compile.tile_local`). A
group of one stage is an unfused stage. :func:`plan_steps` turns a plan into ordinary
playground steps; every template choice the search makes is a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from playground.errors import PlaygroundError
from playground.templates import pool_tiles
from playground.templates.conv import (
    Tile,
    elementwise_pass,
    finish,
    fold_epilogue,
    input_copy,
    prepare_conv,
    prepare_pool,
    tile_conv,
    tile_pool,
)
from playground.templates.layouts import block_intermediate
from playground.templates.recorder import Recorder
from playground.templates.stages import Stage, stages
from playground.templates.winograd import winograd_steps


@dataclass(frozen=True)
class Group:
    """Consecutive stages ``first..last`` computed per tile of ``rows`` output rows of the
    last one, or of ``rows`` x ``cols`` pixels (``rows`` None: a single stage, tiled on its
    own)."""

    first: int
    last: int
    rows: int | None = None
    cols: int | None = None  # None: whole rows
    #: The last stage, a pool whose windows tile its input, computed per register tile of
    #: the conv before it, which is computed there (:mod:`playground.templates.pool_tiles`).
    per_tile: bool = False

    @property
    def fused(self) -> bool:
        return self.last > self.first

    @property
    def tile_label(self) -> str:
        """``"8-row"`` or ``"8x16"``: the tile shape, for labels and reasons."""
        return f"{self.rows}-row" if self.cols is None else f"{self.rows}x{self.cols}"

    @property
    def where(self) -> str:
        """``"8-row tiles"``, and for a pool computed per register tile, says so."""
        return f"{self.tile_label} tiles" + (", the pool per register tile of the conv"
                                             if self.per_tile else "")

    def takes(self, i: int, tile: Tile | None) -> bool:
        """Whether stage ``i`` may have ``tile`` in this group: a pixel-vector tile only as
        the last layer of a group at row tiles whose rows its own divide, or alone
        (:func:`~playground.templates.conv.tile_conv` refuses the rest)."""
        if tile is not None and tile.vector == "winograd":
            return not self.fused or not self.first <= i <= self.last
        if tile is None or tile.vector != "p" or not self.fused \
                or not self.first <= i <= self.last:
            return True
        return (i == self.last and self.cols is None and self.rows is not None
                and self.rows % tile.ht == 0)


@dataclass(frozen=True)
class Plan:
    """Tiles per stage (None for pools and elementwise stages) and the fusion groups."""

    tiles: tuple[Tile | None, ...]
    groups: tuple[Group, ...]
    lanes: int = 8  # the machine's vector width in float32 lanes (pools, elementwise passes)
    fold_epilogue: bool = True  # False: bias, batch norm, activations as separate passes
    template: str = "tiled"
    notes: tuple[str, ...] = field(default=())
    #: "constant": the weight re-layouts stay top-level loop nests (never moved into a
    #: conv's loops), so that the build runs them once before timing; "per-call" otherwise.
    weights: str = "per-call"
    #: The output of a channel-vector conv read next by a channel-vector conv or a pool laid
    #: out in channel blocks (NCHWc, :func:`~playground.templates.layouts.block_intermediate`);
    #: False: NCHW throughout.
    nchwc: bool = True

    def fused_layers(self, chain_stages: list[Stage]) -> list[list[str]]:
        """The window layers each fused group computes together, e.g. [["conv1", "conv2"]]."""
        return [[chain_stages[i].name for i in range(g.first, g.last + 1)]
                for g in self.groups if g.fused]

    def to_dict(self) -> dict:
        return {"template": self.template, "lanes": self.lanes,
                "fold_epilogue": self.fold_epilogue, "weights": self.weights,
                "nchwc": self.nchwc,
                "tiles": [t.to_dict() if t else None for t in self.tiles],
                "groups": [{"first": g.first, "last": g.last, "rows": g.rows,
                            "cols": g.cols, "per_tile": g.per_tile} for g in self.groups]}


def _prepare(r: Recorder, stage: Stage, tile: Tile | None, fold: bool) -> list[str]:
    """Layout steps and epilogue folding of one stage; the blocks that write its tile back."""
    if stage.kind == "elementwise":
        return []
    into = prepare_conv(r, stage, tile) if stage.kind == "conv" else prepare_pool(r, stage)
    if not fold:
        return [into]
    return [into, *fold_epilogue(r, stage, into)]


def _tile(r: Recorder, stage: Stage, tile: Tile | None, lanes: int, write_back: list[str],
          *, outer: list[str] | None, parallel: bool, loops: list[str] | None = None) -> str:
    if stage.kind == "conv":
        return tile_conv(r, stage, tile, write_back, outer=outer, parallel=parallel,
                         loops=loops)
    return tile_pool(r, stage, lanes, write_back, outer=outer, parallel=parallel, loops=loops)


def _producer_blocks(r: Recorder, chain_stages: list[Stage], plan: Plan,
                     group: Group) -> list[str]:
    """Blocks of the group that compute what its anchor's tile reads, nearest to the anchor
    first (the order in which compute_at can move them: each one's consumers are already
    under the tile loop): per stage, its write-back and epilogue and its window layer (all
    but the anchor's), the copy of its input a batch-vector tile makes (all but the first
    stage's, which copies the chain's input once), and its padding."""
    out: list[str] = []
    for i in range(group.last, group.first - 1, -1):
        stage = chain_stages[i]
        if i < group.last:
            out += [b for b in reversed(stage.epilogue_blocks) if r.has(b)]
            if r.has(f"{stage.name}_local"):
                out.append(f"{stage.name}_local")
            out.append(stage.name)
        tile = plan.tiles[i]
        if tile is not None and tile.vector == "n" and i > group.first:
            copy = input_copy(r, stage)
            if copy:
                out.append(copy)
        if stage.pad_block and r.has(stage.pad_block):
            out.append(stage.pad_block)
    return out


def _blocks_its_output(r: Recorder, chain_stages: list[Stage], plan: Plan, i: int,
                       backs: list[str]) -> bool:
    """Whether stage ``i``'s output goes in channel blocks (NCHWc): a channel-vector conv
    whose whole epilogue is in its write-back, read only by the next stage (directly or
    through its padding copy), which is a channel-vector conv (it broadcasts what it reads)
    or a pool (it then vectorizes along the channel blocks)."""
    if not plan.nchwc or i + 1 >= len(chain_stages) or len(backs) != 1:
        return False
    stage, after = chain_stages[i], chain_stages[i + 1]
    tile, next_tile = plan.tiles[i], plan.tiles[i + 1]
    if stage.kind != "conv" or tile is None or tile.vector != "k" \
            or after.input_name != stage.output_name:
        return False
    if after.kind == "conv" and (next_tile is None or next_tile.vector != "k"):
        return False
    if after.kind == "pool" and after.in_shape[1] % tile.lanes:
        return False
    if after.kind not in ("conv", "pool"):
        return False
    buffer = r.writes(backs[0])[0]
    readers = {b for b in r.blocks() if buffer in r.reads(b)}
    return bool(readers) and readers <= {after.name, after.pad_block}


def _group_steps(r: Recorder, chain_stages: list[Stage], plan: Plan, group: Group,
                 lanes: int) -> None:
    anchor = chain_stages[group.last]
    tile = plan.tiles[group.last]
    if not group.fused and tile is not None and tile.vector == "winograd":
        winograd_steps(r, anchor, tile, plan.fold_epilogue)
        for block in [] if plan.fold_epilogue else anchor.epilogue_blocks:
            if r.has(block):
                elementwise_pass(r, block, lanes)
        return
    backs = {i: _prepare(r, chain_stages[i], plan.tiles[i], plan.fold_epilogue)
             for i in range(group.first, group.last + 1)}
    for i in range(group.first, group.last + 1):
        if _blocks_its_output(r, chain_stages, plan, i, backs[i]):
            block_intermediate(r, backs[i][0], plan.tiles[i].lanes)
    if not group.fused:
        if anchor.kind == "elementwise":
            for block in [anchor.name, *anchor.epilogue_blocks]:
                if r.has(block):
                    elementwise_pass(r, block, lanes)
            return
        top = _tile(r, anchor, plan.tiles[group.last], lanes, backs[group.last], outer=None,
                    parallel=True)
        finish(r, anchor, top, plan.tiles[group.last])
        if not plan.fold_epilogue:
            for block in anchor.epilogue_blocks:
                if r.has(block):
                    elementwise_pass(r, block, lanes)
        return
    # The anchor's output in tiles of `rows` (x `cols`): the parallel loop of the whole group.
    loops = r.loops(anchor.name)
    n, h = loops[0], loops[2]
    h_tile, h_rest = r.split(anchor.name, h, [None, group.rows])
    outer, inner = [n, h_tile], [n, loops[1], h_rest, *loops[3:]]
    if group.cols is not None:
        w_tile, w_rest = r.split(anchor.name, loops[3], [None, group.cols])
        outer, inner = [n, h_tile, w_tile], [n, loops[1], h_rest, w_rest, *loops[4:]]
    r("reorder", anchor.name, loops=outer)
    at_tile: set[str] = set()  # blocks computed per register tile (``group.per_tile``)
    if group.per_tile:
        conv, tile = chain_stages[group.last - 1], plan.tiles[group.last - 1]
        if not pool_tiles.fits(conv, anchor, tile, group.rows, group.cols):
            raise PlaygroundError(f"{anchor.name} cannot be computed per register tile of "
                                  f"{conv.name} ({tile.label() if tile else 'no tile'})")
        top, at = pool_tiles.tile_anchor(r, anchor, tile, backs[group.last], outer, inner,
                                         lanes)
        at_tile = {*backs[group.last - 1], *conv.epilogue_blocks, conv.name}
    else:
        top = _tile(r, anchor, plan.tiles[group.last], lanes, backs[group.last],
                    outer=outer, parallel=True, loops=inner)
    for block in _producer_blocks(r, chain_stages, plan, group):
        r("compute_at", block, target_block=anchor.name,
          target_loop=at if block in at_tile else top, preserve_unit_loops=True)
    for i in range(group.last - 1, group.first - 1, -1):
        stage = chain_stages[i]
        backs_i = [b for b in backs[i] if r.has(b)]
        _tile(r, stage, plan.tiles[i], lanes, backs_i, outer=[], parallel=False)
    if group.per_tile:
        pool_tiles.unroll_write_backs(r, [*at_tile - {chain_stages[group.last - 1].name},
                                          *backs[group.last]], at)
    # Decompositions last: TVM 0.27 refuses loop transformations above a decomposed block.
    for i in range(group.last, group.first - 1, -1):
        finish(r, chain_stages[i], top, plan.tiles[i])


def plan_steps(chain: dict, plan: Plan, *, target: str = "cpu") -> Recorder:
    """Apply ``plan`` to ``chain``; the :class:`Recorder` holds the steps and the schedule.

    Raises
    ------
    playground.errors.StepError
        When a step of the plan does not apply (a plan that does not fit the chain): the
        search skips such plans.
    """
    r = Recorder(chain, target=target)
    r.hoist_weights = plan.weights == "constant"
    chain_stages = stages(r.chain)
    lanes = plan.lanes
    # Winograd rewrites the program: its steps come before every other step.
    for stage, tile in zip(chain_stages, plan.tiles, strict=True):
        if tile is not None and tile.vector == "winograd":
            r("winograd", stage.name, tile=tile.ht)
    for group in plan.groups:
        _group_steps(r, chain_stages, plan, group, lanes)
    return r

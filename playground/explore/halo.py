"""Tiles and halos: which regions one iteration of an outer loop writes and reads.

:func:`tile_regions` fixes the loops at and above a chosen loop around a block to given values
and bounds, from the scheduled TIR, every region that the blocks inside that loop touch: the
output tile it writes, the tiles of the intermediates computed there (with their halos) and
the input it reads. Regions are exact bounding boxes: each block's inner loops are enumerated
together with its ``T.where`` guards (see :class:`playground.explore.iteration_space.Space`),
so border tiles and tiles that do not divide the extent come out clipped as the code clips
them. The same is done for the neighbouring iteration (the chosen loop + 1); the overlap of
the two is the halo both compute, i.e. recomputed work.

:func:`halo_spec` turns the result into rectangles on H x W planes (plain data);
:func:`halo_figure` draws them with plotly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from playground.chain.spec import WINDOW_OPS
from playground.explore.analysis import _roles
from playground.explore.iteration_space import AnalysisError, BlockNest, Space, block_nests
from playground.schedule.replay import scheduled
from playground.schedule.steps import Step

Box = tuple[tuple[int, int], ...]  # per dimension [start, end)


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple((min(x0, y0), max(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b, strict=True))


def intersect(a: Box | None, b: Box | None) -> Box | None:
    """Intersection of two boxes (None when empty)."""
    if a is None or b is None:
        return None
    out = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b, strict=True))
    return None if any(e <= s for s, e in out) else out


def volume(box: Box | None) -> int:
    return 0 if box is None else math.prod(e - s for s, e in box)


@dataclass(frozen=True)
class TileRegions:
    """Regions touched by one iteration of ``loop`` (around ``block``) and by the next one.

    Attributes
    ----------
    iteration, neighbour
        Values of the fixed loops (by loop name); ``neighbour`` is None when ``loop`` has no
        next iteration.
    regions, neighbour_regions
        Buffer name -> box (per dimension [start, end)) touched by the blocks inside the loop.
    overlap
        Buffer name -> the box both iterations touch (None: disjoint): the recomputed halo.
    iterations
        Block name -> how many times it runs in this iteration (guards honoured).
    roles, shapes
        Buffer name -> input / weight / intermediate / output, and its full shape.
    """

    block: str
    loop: str
    iteration: dict[str, int]
    neighbour: dict[str, int] | None
    regions: dict[str, Box]
    neighbour_regions: dict[str, Box]
    overlap: dict[str, Box | None]
    iterations: dict[str, int]
    roles: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        def boxes(d: dict) -> dict:
            return {k: None if v is None else [list(r) for r in v] for k, v in d.items()}

        return {"block": self.block, "loop": self.loop, "iteration": dict(self.iteration),
                "neighbour": None if self.neighbour is None else dict(self.neighbour),
                "regions": boxes(self.regions),
                "neighbour_regions": boxes(self.neighbour_regions),
                "overlap": boxes(self.overlap), "iterations": dict(self.iterations),
                "roles": dict(self.roles),
                "shapes": {k: list(v) for k, v in self.shapes.items()}}

    @staticmethod
    def from_dict(raw: dict) -> TileRegions:
        def boxes(d: dict) -> dict:
            return {k: None if v is None else tuple(tuple(r) for r in v) for k, v in d.items()}

        return TileRegions(raw["block"], raw["loop"], dict(raw["iteration"]),
                           None if raw["neighbour"] is None else dict(raw["neighbour"]),
                           boxes(raw["regions"]), boxes(raw["neighbour_regions"]),
                           boxes(raw["overlap"]), dict(raw["iterations"]), dict(raw["roles"]),
                           {k: tuple(v) for k, v in raw["shapes"].items()})


def _touched(nests: list[BlockNest], fixed: dict[str, int]) -> tuple[dict, dict]:
    regions: dict[str, Box | None] = {}
    counts: dict[str, int] = {}
    for nest in nests:
        space = Space(nest, fixed)
        counts[nest.name] = space.count()
        for access in nest.accesses:
            regions[access.buffer] = _union(regions.get(access.buffer), space.box(access))
    return {k: v for k, v in regions.items() if v is not None}, counts


def tile_regions(chain: dict, steps: tuple[Step, ...] | list[Step], block: str, loop: str,
                 iteration: dict[str, int] | None = None) -> TileRegions:
    """Regions one iteration of ``loop`` around ``block`` touches, and its neighbour's.

    Parameters
    ----------
    block, loop
        A block of the scheduled chain and one of its loops (names as in the loop pickers,
        e.g. ``"conv2"``, ``"w_0"``).
    iteration
        Values of ``loop`` and of the loops above it; a loop not given takes its first value.

    Raises
    ------
    AnalysisError
        Naming the block, the loop or the value that does not exist.
    """
    func = scheduled(chain, tuple(steps)).mod["main"]
    nests = block_nests(func)
    target = next((n for n in nests if n.name == block), None)
    if target is None:
        raise AnalysisError(f"tile_regions: no block {block!r} (blocks: "
                            f"{', '.join(n.name for n in nests)})", where="block")
    names = [lp.name for lp in target.loops]
    if loop not in names:
        raise AnalysisError(f"tile_regions: block {block} has no loop {loop!r} (its loops: "
                            f"{', '.join(names) or 'none'})", where="loop")
    depth = names.index(loop) + 1
    outer = target.loops[:depth]
    iteration = dict(iteration or {})
    unknown = sorted(set(iteration) - {lp.name for lp in outer})
    if unknown:
        raise AnalysisError(f"tile_regions: {unknown[0]!r} is not {loop} or a loop above it "
                            f"(those are {', '.join(lp.name for lp in outer)})",
                            where="iteration")
    fixed = {}
    for lp in outer:
        v = int(iteration.get(lp.name, lp.min))
        if not lp.min <= v < lp.min + lp.extent:
            raise AnalysisError(f"tile_regions: {lp.name} = {v} is outside [{lp.min}, "
                                f"{lp.min + lp.extent})", where="iteration")
        fixed[lp.name] = v
    inside = [n for n in nests if len(n.loops) >= depth
              and all(a.node.same_as(b.node) for a, b in zip(n.loops, outer, strict=False))]
    regions, counts = _touched(inside, fixed)
    last = outer[-1]
    neighbour = None
    neighbour_regions: dict[str, Box] = {}
    if fixed[loop] + 1 < last.min + last.extent:
        neighbour = {**fixed, loop: fixed[loop] + 1}
        neighbour_regions, _ = _touched(inside, neighbour)
    overlap = {b: intersect(r, neighbour_regions.get(b)) for b, r in regions.items()}
    roles = {name: role for name, (role, _, _) in _roles(func, chain).items()}
    shapes = {name: shape for name, (_, shape, _) in _roles(func, chain).items()}
    return TileRegions(block, loop, fixed, neighbour, regions, neighbour_regions, overlap,
                       counts, {b: roles.get(b, "intermediate") for b in regions},
                       {b: shapes[b] for b in regions if b in shapes})



def _family(block: str) -> str:
    """The layer a block belongs to: ``conv1`` for conv1, conv1_pad, conv1_init, conv1_local."""
    return block.split("_")[0]


def _tile_loop(nests: list[BlockNest], nest: BlockNest) -> int | None:
    """Index of the deepest loop of ``nest`` (longer than 1) that a block of another layer
    also sits under: where compute_at put a producer, so one iteration of it is a fused tile."""
    found = None
    for depth, lp in enumerate(nest.loops):
        if lp.extent <= 1:
            continue
        if any(_family(n.name) != _family(nest.name) and len(n.loops) > depth
               and n.loops[depth].node.same_as(lp.node) for n in nests):
            found = depth
    return found


@dataclass(frozen=True)
class TileDefaults:
    """What the halo picture opens on: ``block`` and, per block, the loop to offer first."""

    block: str
    loops: dict[str, str]
    fused: bool  # ``block`` shares its tile loop with another layer's blocks


def tile_defaults(chain: dict, steps: tuple[Step, ...] | list[Step]) -> TileDefaults:
    """The fused block and its tile loop, when the schedule fuses layers; else the output block.

    The fused block is the last block of a window layer (a convolution or a pool; its own
    block rather than its pad, init or cache blocks; else the last block) among the blocks
    under the tile loop that holds the most layers: conv2 at
    ``w_0`` for conv1 computed at conv2's column tiles, even when a relu after conv2 is left
    on its own loops. Every other block's loop is its own tile loop, else its first loop
    longer than 1 (a loop of extent 1, like ``n``, is one whole image).
    """
    nests = block_nests(scheduled(chain, tuple(steps)).mod["main"])
    windows = {lay["name"] for lay in chain["layers"] if lay["op"] in WINDOW_OPS}
    loops, best, best_key = {}, None, (0, False, False, -1)
    for order, nest in enumerate(nests):
        depth = _tile_loop(nests, nest)
        if depth is None:
            first = next((i for i, lp in enumerate(nest.loops) if lp.extent > 1), 0)
            if nest.loops:
                loops.setdefault(nest.name, nest.loops[first].name)
            continue
        loops.setdefault(nest.name, nest.loops[depth].name)
        node = nest.loops[depth].node
        layers = {_family(n.name) for n in nests
                  if len(n.loops) > depth and n.loops[depth].node.same_as(node)}
        family = _family(nest.name)
        key = (len(layers), family in windows, nest.name in (family, f"{family}_update"),
               order)
        if key > best_key:
            best, best_key = nest.name, key
    last = chain["layers"][-1]["name"]
    names = [n.name for n in nests]
    output = next((n for n in (last, f"{last}_update") if n in names), names[-1])
    return TileDefaults(best or output, loops, best is not None)


# ----------------------------------------------------------------------------- drawing

_ORDER = {"input": 0, "intermediate": 1, "output": 2, "weight": 3}


def plane_buffers(regions: TileRegions) -> list[str]:
    """Buffers drawn as H x W planes (4-D activations), input first, output last."""
    names = [b for b in regions.regions if len(regions.shapes.get(b, ())) == 4
             and regions.roles.get(b) != "weight"]
    return sorted(names, key=lambda b: _ORDER[regions.roles.get(b, "intermediate")])


def halo_spec(regions: TileRegions, buffer: str) -> dict:
    """Rectangles of one buffer's H x W plane: the plane, this tile, the neighbour, overlap.

    Returns ``{"buffer", "role", "plane": [h, w], "channels": [c0, c1], "tile": rect,
    "neighbour": rect | None, "overlap": rect | None, "tile_points", "overlap_points"}`` with
    ``rect = {"h": [start, end], "w": [start, end]}``.
    """
    if buffer not in regions.regions:
        raise AnalysisError(f"halo_spec: this iteration does not touch {buffer!r} (it touches "
                            f"{', '.join(regions.regions)})", where="buffer")
    shape = regions.shapes.get(buffer, ())
    if len(shape) != 4:
        raise AnalysisError(f"halo_spec: {buffer} is not an N x C x H x W tensor",
                            where="buffer")

    def rect(box: Box | None) -> dict | None:
        return None if box is None else {"h": list(box[2]), "w": list(box[3])}

    box = regions.regions[buffer]
    over = regions.overlap.get(buffer)
    return {"buffer": buffer, "role": regions.roles.get(buffer, "intermediate"),
            "plane": [shape[2], shape[3]], "channels": list(box[1]), "tile": rect(box),
            "neighbour": rect(regions.neighbour_regions.get(buffer)), "overlap": rect(over),
            "tile_points": (box[2][1] - box[2][0]) * (box[3][1] - box[3][0]),
            "overlap_points": 0 if over is None else
            (over[2][1] - over[2][0]) * (over[3][1] - over[3][0])}


def halo_figure(regions: TileRegions, buffer: str | None = None, columns: int = 3) -> Any:
    """Plotly figure of H x W planes: ``buffer`` alone, or every activation in a grid.

    Each plane shows the whole tensor (grey outline), this iteration's region (blue), the
    neighbouring iteration's (orange, dashed) and their overlap (red): computed twice. Rows of
    the image go down, as in the tensor.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [buffer] if buffer else plane_buffers(regions)
    specs = [halo_spec(regions, b) for b in names]
    cols = max(1, min(columns, len(specs)))
    rows = math.ceil(len(specs) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08, vertical_spacing=0.12,
                        subplot_titles=[
                            f"{s['buffer']} ({s['role']}): {s['tile_points']} px, "
                            f"{s['overlap_points']} again" for s in specs])
    styles = (("tile", "rgba(31,119,180,0.35)", "rgb(31,119,180)", "solid"),
              ("neighbour", "rgba(255,127,14,0.15)", "rgb(255,127,14)", "dash"),
              ("overlap", "rgba(214,39,40,0.55)", "rgb(214,39,40)", "solid"))
    for i, s in enumerate(specs):
        row, col = i // cols + 1, i % cols + 1
        h, w = s["plane"]
        axis = "" if i == 0 else str(i + 1)
        xref, yref = f"x{axis}", f"y{axis}"
        fig.add_shape(type="rect", x0=0, x1=w, y0=0, y1=h, xref=xref, yref=yref,
                      line={"color": "grey"})
        for key, fill, line, dash in styles:
            r = s[key]
            if r is None:
                continue
            fig.add_shape(type="rect", x0=r["w"][0], x1=r["w"][1], y0=r["h"][0],
                          y1=r["h"][1], xref=xref, yref=yref, fillcolor=fill,
                          line={"color": line, "dash": dash})
        fig.add_trace(go.Scatter(x=[0, w], y=[0, h], mode="markers", showlegend=False,
                                 hoverinfo="skip", marker={"opacity": 0}), row=row, col=col)
        fig.update_xaxes(title_text="w", range=[-0.5, w + 0.5], row=row, col=col)
        fig.update_yaxes(title_text="h", range=[h + 0.5, -0.5], row=row, col=col)
    it = ", ".join(f"{k} = {v}" for k, v in regions.iteration.items())
    fig.update_annotations(font_size=12)
    fig.update_layout(height=330 * rows + 60, margin={"t": 80},
                      title=f"{regions.block}, one iteration of {regions.loop} ({it}): this "
                            "tile (blue), the next (orange), computed by both (red)")
    return fig

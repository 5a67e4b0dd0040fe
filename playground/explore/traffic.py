"""Bytes moved past a cache level, by a working-set model over the scheduled loop tree.

See :func:`traffic` for the model. It is a comparison tool for schedules of one chain (which
schedule moves less), not a cache simulator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from playground.explore.iteration_space import BlockNest, Space, evaluate, vars_of


def _node_blocks(nests: list[BlockNest], depth: int, node: Any) -> list[BlockNest]:
    return [n for n in nests if len(n.loops) > depth and n.loops[depth].node.same_as(node)]


def traffic(nests: list[BlockNest], sizes: dict[str, tuple[int, ...]],
            dtype_bytes: dict[str, int], local_ok: set[str], capacity: int) -> dict[str, int]:
    """Bytes each buffer moves past a cache of ``capacity`` bytes, by a working-set model.

    The model, on the scheduled loop tree (the function body is the root, each loop a node):

    * The *working set* of a node is, over the blocks inside it, the bounding box of every
      region they touch during **one iteration** of the node (inner loops relaxed, guards
      ignored, the largest box over all iterations, clipped to the buffer), summed over buffers.
    * Walk from the root. At the first node whose working set fits in the cache, each buffer
      in it moves once per iteration of the node: ``iterations(node) x box bytes`` (a read, or
      a write-back, counted once). An intermediate all of whose readers and writers sit inside
      that node moves nothing: it lives and dies in the cache. A node that does not fit
      passes the question to its children (loops and blocks one level down).
    * Hence a chain whose whole data fits moves each input, weight and output once; an
      unfused intermediate is written by one nest and read back by another (2x its size when
      both fit); an operand re-streamed by an outer loop moves once per outer iteration.

    It ignores conflict misses, prefetching, write-allocate reads and reuse between sibling
    nests; it is a comparison tool for schedules of one chain, not a simulator.
    """
    moved: dict[str, int] = {}
    writers: dict[str, list[str]] = {}
    for n in nests:
        for a in n.accesses:
            writers.setdefault(a.buffer, []).append(n.name)

    def boxes(inside: list[BlockNest], depth: int) -> dict[str, int]:
        """Largest per-iteration box (elements) of each buffer touched under a node."""
        out: dict[str, list[tuple[int, int]]] = {}
        for n in inside:
            outer = {lp.name for lp in n.loops[:depth]}
            space = _SpanSpace(n, outer)
            for a in n.accesses:
                ext = [space.extent(lo, hi) for lo, hi in a.bounds]
                prev = out.get(a.buffer)
                out[a.buffer] = ext if prev is None else [
                    max(p, e) for p, e in zip(prev, ext, strict=True)]
        return {b: math.prod(min(e, s) for e, s in zip(ext, sizes[b], strict=True))
                for b, ext in out.items()}

    def visit(inside: list[BlockNest], depth: int, iterations: int) -> None:
        if not inside:
            return
        box = boxes(inside, depth)
        ws = sum(box[b] * dtype_bytes[b] for b in box)
        leaf = all(len(n.loops) <= depth for n in inside)
        if ws <= capacity or leaf:
            names = {n.name for n in inside}
            for b, elements in box.items():
                if b in local_ok and set(writers[b]) <= names:
                    continue
                moved[b] = moved.get(b, 0) + iterations * elements * dtype_bytes[b]
            return
        # children one level down: loops at this depth (in program order), then direct blocks
        seen: list[Any] = []
        for n in inside:
            if len(n.loops) <= depth:
                visit([n], depth, iterations)
            elif not any(n.loops[depth].node.same_as(s) for s in seen):
                node = n.loops[depth].node
                seen.append(node)
                visit(_node_blocks(inside, depth, node), depth + 1,
                      iterations * n.loops[depth].extent)

    visit(nests, 0, 1)
    return moved


class _SpanSpace(Space):
    """A block's space for the traffic model: loops named in ``outer`` are the node's own."""

    def __init__(self, nest: BlockNest, outer: set[str]) -> None:
        super().__init__(nest)
        self.outer = {k for k, name in self.names.items() if name in outer}

    def extent(self, lo_expr: Any, hi_expr: Any) -> int:
        """Largest (hi - lo + 1) over iterations of the outer loops, inner loops relaxed."""
        keys = sorted(set(vars_of(lo_expr, self.nest.defs))
                      | set(vars_of(hi_expr, self.nest.defs)), key=list(self.ranges).index)
        env = self._grid(keys)
        lo = np.broadcast_to(evaluate(lo_expr, env, self.nest.defs),
                             tuple(self.ranges[k][1] - self.ranges[k][0] for k in keys))
        hi = np.broadcast_to(evaluate(hi_expr, env, self.nest.defs), lo.shape)
        inner = tuple(i for i, k in enumerate(keys) if k not in self.outer)
        if inner:
            lo, hi = lo.min(axis=inner), hi.max(axis=inner)
        return int((hi - lo).max()) + 1 if lo.size else 1


# ----------------------------------------------------------------------------- lowering

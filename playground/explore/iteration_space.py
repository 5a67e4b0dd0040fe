"""Exact enumeration of a block's iteration space, and the blocks' nests as the analysis reads them.

:func:`block_nests` reads a scheduled (or compacted) PrimFunc, through the IR reader
(:mod:`playground.schedule.ir`), into one :class:`BlockNest` per leaf block: the loops around
it, the guards (``T.where`` and enclosing ``if``), its buffer accesses as index ranges, and its
FLOPs per iteration (:func:`count_flops`). :class:`Space` enumerates a nest's points with numpy,
guards applied, group by group of coupled loops, so that counts under ``T.where`` are exact.
The analysis (:mod:`.analysis`), the traffic model (:mod:`.traffic`) and the halo regions
(:mod:`.halo`) all read schedules through here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import tirx

from playground.errors import PlaygroundError
from playground.schedule import ir

#: Enumerating one group of coupled loops is refused above this many points.
MAX_POINTS = 50_000_000


class AnalysisError(PlaygroundError):
    """A schedule the analysis cannot read (symbolic extents, indirect indices, huge nests)."""


# ----------------------------------------------------------------------------- IR reading

@dataclass
class Access:
    """One buffer region a block reads or writes: per dimension (lo, hi) expressions, inclusive."""

    buffer: str
    kind: str  # "read" or "write"
    bounds: list[tuple[Any, Any]]


@dataclass
class BlockNest(ir.AboutBlock):
    """A leaf block (as the IR reader sees it) with what counting and bounding its nest needs:
    its accesses as index ranges, its FLOPs per iteration and its own iteration count.
    ``conjuncts`` are the block's guards (enclosing ``if`` conditions and its ``T.where``,
    split at ``&&``); ``defs`` map its iteration variables to their bindings."""

    block: ir.Block  # every loop with a constant min and extent
    accesses: list[Access]
    flop_per_iter: int
    needed: int  # product of the block's iter var domains

    @property
    def conjuncts(self) -> tuple[Any, ...]:
        return self.block.guards


_FLOAT_OPS = (tirx.Add, tirx.Sub, tirx.Mul, tirx.Div, tirx.Min, tirx.Max, tirx.FloorDiv,
              tirx.Mod, tirx.FloorMod)


def _is_float(expr: Any) -> bool:
    return str(getattr(expr, "ty", "")).startswith(("float", "bfloat"))


def count_flops(node: Any) -> int:
    """Floating-point operations in an expression or statement (see the module's rule)."""
    if node is None:
        return 0
    if isinstance(node, ir.BufferStore | ir.Bind | ir.Evaluate):
        return count_flops(node.value)
    if isinstance(node, ir.SeqStmt):
        return sum(count_flops(s) for s in node.seq)
    if isinstance(node, ir.IfThenElse):
        return max(count_flops(node.then_case), count_flops(node.else_case))
    if isinstance(node, ir.For):
        return int(node.extent) * count_flops(node.body)
    if isinstance(node, ir.Call):
        skip = ir.call_name(node).endswith(("if_then_else", "reinterpret"))
        own = 0 if skip or not _is_float(node) else 1
        return own + sum(count_flops(a) for a in node.args)
    if isinstance(node, ir.Select):
        return sum(count_flops(x) for x in (node.true_value, node.false_value))
    own = 1 if isinstance(node, _FLOAT_OPS) and _is_float(node) else 0
    return own + sum(count_flops(c) for c in ir.operands(node))


def block_nests(func: Any) -> list[BlockNest]:
    """Every leaf block of a scheduled PrimFunc with its loops, guards and accesses."""
    out = []
    for b in ir.blocks(func):
        for lp in b.loops:
            if lp.extent is None or lp.min is None:
                raise AnalysisError(f"loop {lp.name} has a symbolic extent")
        if b.leaf:
            out.append(_leaf(b))
    return out


def _leaf(b: ir.Block) -> BlockNest:
    block = b.sblock
    accesses = []
    for kind, regions in (("read", block.reads), ("write", block.writes)):
        for region in regions:
            bounds = [(r.min, r.min + r.extent - 1) for r in region.region]
            accesses.append(Access(region.source.name, kind, bounds))
    needed = math.prod(int(iv.dom.extent) for iv in block.iter_vars) if block.iter_vars else 1
    return BlockNest(b, accesses, count_flops(block.body), needed)


# ----------------------------------------------------------------------------- evaluation

def vars_of(expr: Any, defs: dict, acc: dict | None = None) -> dict[int, Any]:
    """Loop variables an expression depends on (through block var definitions)."""
    acc = {} if acc is None else acc
    for e in ir.subexpressions(expr):
        if isinstance(e, ir.BufferLoad):
            raise AnalysisError("an index reads a buffer (indirect access): cannot bound it")
        if isinstance(e, ir.Var):
            k = ir.var_key(e)
            if k in defs:
                vars_of(defs[k], defs, acc)
            else:
                acc[k] = e
    return acc


_BINARY = {
    tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply,
    tirx.FloorDiv: np.floor_divide, tirx.FloorMod: np.mod, tirx.Min: np.minimum,
    tirx.Max: np.maximum, tirx.LT: np.less, tirx.LE: np.less_equal, tirx.GT: np.greater,
    tirx.GE: np.greater_equal, tirx.EQ: np.equal, tirx.NE: np.not_equal,
    tirx.And: np.logical_and, tirx.Or: np.logical_or,
}


def evaluate(expr: Any, env: dict[int, np.ndarray], defs: dict) -> np.ndarray:
    """Evaluate an integer/boolean TIR expression with numpy arrays bound to loop variables."""
    if isinstance(expr, ir.Var):
        k = ir.var_key(expr)
        if k in env:
            return env[k]
        if k in defs:
            return evaluate(defs[k], env, defs)
        raise AnalysisError(f"variable {expr.name} is not a loop around the block")
    if isinstance(expr, ir.IntImm):
        return np.int64(int(expr.value))
    binary = _BINARY.get(type(expr))
    if binary is not None:
        return binary(evaluate(expr.a, env, defs), evaluate(expr.b, env, defs))
    if isinstance(expr, tirx.Div | tirx.Mod):  # truncating, as in C
        a, b = evaluate(expr.a, env, defs), evaluate(expr.b, env, defs)
        q = np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
        return q if isinstance(expr, tirx.Div) else a - q * b
    if isinstance(expr, ir.Not):
        return np.logical_not(evaluate(expr.a, env, defs))
    if isinstance(expr, ir.Select):
        return np.where(evaluate(expr.condition, env, defs),
                        evaluate(expr.true_value, env, defs),
                        evaluate(expr.false_value, env, defs))
    if isinstance(expr, ir.Cast):
        return evaluate(expr.value, env, defs)
    if ir.call_name(expr).endswith("if_then_else"):
        c, t, f = (evaluate(a, env, defs) for a in expr.args)
        return np.where(c, t, f)
    raise AnalysisError(f"cannot evaluate a {type(expr).__name__} in an index or a guard")


class Space:
    """The iteration space of one block: loops, optionally some fixed to one value.

    Loops coupled by a guard or an index expression form a *group*; groups are enumerated
    separately (a conv's h-loops never meet its w-loops), so counting 10^9 iterations costs a
    few thousand numpy elements.
    """

    def __init__(self, nest: BlockNest, fixed: dict[str, int] | None = None) -> None:
        self.nest = nest
        self.ranges: dict[int, tuple[int, int]] = {}
        self.names: dict[int, str] = {}
        fixed = fixed or {}
        for lp in nest.loops:
            k = ir.var_key(lp.var)
            if lp.name in fixed:
                v = fixed[lp.name]
                ok = lp.min <= v < lp.min + lp.extent
                self.ranges[k] = (v, v + 1) if ok else (v, v)  # out of range: empty
            else:
                self.ranges[k] = (lp.min, lp.min + lp.extent)
            self.names[k] = lp.name
        self.guard_vars = [vars_of(c, nest.defs) for c in nest.conjuncts]

    def _group(self, seed: set[int]) -> tuple[list[int], list[Any]]:
        """Loops coupled with ``seed`` through guards, and those guards."""
        group, guards, changed = set(seed), [], True
        taken = [False] * len(self.guard_vars)
        while changed:
            changed = False
            for i, vs in enumerate(self.guard_vars):
                if not taken[i] and group & set(vs):
                    taken[i], changed = True, True
                    group |= set(vs)
                    guards.append(self.nest.conjuncts[i])
        return sorted(group, key=list(self.ranges).index), guards

    def _grid(self, keys: list[int]) -> dict[int, np.ndarray]:
        sizes = [self.ranges[k][1] - self.ranges[k][0] for k in keys]
        if math.prod(sizes) > MAX_POINTS:
            names = ", ".join(self.names[k] for k in keys)
            raise AnalysisError(f"block {self.nest.name}: loops {names} are coupled over "
                                f"{math.prod(sizes):,} points, too many to enumerate")
        axes = np.meshgrid(*[np.arange(*self.ranges[k], dtype=np.int64) for k in keys],
                           indexing="ij", sparse=True)
        return dict(zip(keys, axes, strict=True))

    def _mask(self, keys: list[int], guards: list[Any], env: dict) -> np.ndarray:
        shape = tuple(self.ranges[k][1] - self.ranges[k][0] for k in keys)
        mask = np.ones(shape, dtype=bool)
        for g in guards:
            mask &= np.broadcast_to(evaluate(g, env, self.nest.defs), shape).astype(bool)
        return mask

    def count(self) -> int:
        """Points of the space where every guard holds."""
        if any(hi <= lo for lo, hi in self.ranges.values()):
            return 0
        total, seen = 1, set()
        for k in self.ranges:
            if k in seen:
                continue
            keys, guards = self._group({k})
            seen |= set(keys)
            if not guards:
                total *= self.ranges[k][1] - self.ranges[k][0]
                continue
            total *= int(self._mask(keys, guards, self._grid(keys)).sum())
        return total

    def bounds(self, expr: Any) -> tuple[int, int] | None:
        """Smallest and largest value of ``expr`` over the guarded space (None: empty)."""
        if any(hi <= lo for lo, hi in self.ranges.values()) or self.count() == 0:
            return None
        keys, guards = self._group(set(vars_of(expr, self.nest.defs)))
        env = self._grid(keys)
        mask = self._mask(keys, guards, env)
        values = np.broadcast_to(evaluate(expr, env, self.nest.defs), mask.shape)
        if not mask.any():
            return None
        return int(values[mask].min()), int(values[mask].max())

    def box(self, access: Access) -> tuple[tuple[int, int], ...] | None:
        """The access's bounding box: per dimension [start, end)."""
        out = []
        for lo_expr, hi_expr in access.bounds:
            lo, hi = self.bounds(lo_expr), self.bounds(hi_expr)
            if lo is None or hi is None:
                return None
            out.append((lo[0], hi[1] + 1))
        return tuple(out)

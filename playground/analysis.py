"""What a schedule costs, read from its scheduled and lowered TIR (never from layer formulas).

:func:`analyze` answers, for a (chain, steps) pair:

* **Work** per block. *Done* = the number of times the scheduled code executes the block: the
  points of the loop nest around it (each loop ``[min, min + extent)``) where its ``T.where``
  predicate (and any enclosing ``if``) holds, counted exactly. *Needed* = the block's own
  iteration space (the product of its iter vars' domains), i.e. what the unscheduled chain
  executes. ``redundancy = done / needed``: conv1 computed at an 8x8 tile of a 3x3 conv2 runs
  10x10 points per tile, 100/64 = 1.5625 in the interior. FLOPs per iteration are counted in
  the block body (its ``T.init`` excluded): every floating-point ``+ - * / min max`` and math
  call counts 1, selects and ``if_then_else`` count 0. So a multiply-add reduction counts 2, a
  relu 1, a pad copy 0, a batch norm ``x * scale + shift`` 2 — the rule
  ``tvm.s_tir.analysis.estimate_tir_flops`` uses, which ignores predicates: the unguarded
  count (loop extents only) equals its result, and the tests check that.
* **Footprint** of each intermediate buffer after ``CompactBufferAllocation`` (the lowering pass
  that shrinks a buffer to the region one iteration of its allocation loop touches), and the
  total allocation after ``StorageRewrite`` (which lets buffers share memory), from
  ``calculate_allocated_bytes`` on the module before ``MakePackedAPI``. TVM 0.27 compacts only
  regions it can bound by constants: a tile whose region is clipped by a ``T.where`` at the
  image border keeps the buffer's full size. The numbers say what the code allocates.
* **Bytes moved** past a cache level, by a working-set model over the loop tree (documented at
  :func:`traffic`), and **arithmetic intensity** = FLOP done / those bytes.

Everything here lowers; callers off the worker go through the ``"analyze"`` job
(:mod:`playground.analysis_jobs`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import tirx

from playground.chain import INPUT_NAME, chain_flop
from playground.errors import PlaygroundError
from playground.machine import cache_sizes
from playground.schedule import scheduled
from playground.steps import Step

#: Enumerating one group of coupled loops is refused above this many points.
MAX_POINTS = 50_000_000
_FLOAT_OPS = ("Add", "Sub", "Mul", "Div", "Min", "Max", "FloorDiv", "Mod", "FloorMod")


class AnalysisError(PlaygroundError):
    """A schedule the analysis cannot read (symbolic extents, indirect indices, huge nests)."""


# ----------------------------------------------------------------------------- IR reading

@dataclass
class Loop:
    """A loop of the scheduled function (``min``/``extent`` constant)."""

    var: Any
    name: str
    min: int
    extent: int
    node: Any


@dataclass
class Access:
    """One buffer region a block reads or writes: per dimension (lo, hi) expressions, inclusive."""

    buffer: str
    kind: str  # "read" or "write"
    bounds: list[tuple[Any, Any]]


@dataclass
class BlockNest:
    """A leaf block with everything needed to count and bound what its nest executes."""

    name: str
    loops: list[Loop]
    conjuncts: list[Any]
    defs: dict[Any, Any]  # block iter var -> binding (in loop vars and outer block vars)
    accesses: list[Access]
    flop_per_iter: int
    needed: int  # product of the block's iter var domains


def _key(var: Any) -> int:
    return hash(var)  # tvm Objects hash by handle: one key per Var node


def _split_and(expr: Any) -> list[Any]:
    if type(expr).__name__ == "And":
        return _split_and(expr.a) + _split_and(expr.b)
    if type(expr).__name__ == "IntImm" and int(expr.value) == 1:
        return []
    return [expr]


def _is_float(expr: Any) -> bool:
    return str(getattr(expr, "ty", "")).startswith(("float", "bfloat"))


def count_flops(node: Any) -> int:
    """Floating-point operations in an expression or statement (see the module's rule)."""
    kind = type(node).__name__
    if node is None:
        return 0
    if kind == "BufferStore":
        return count_flops(node.value)
    if kind == "SeqStmt":
        return sum(count_flops(s) for s in node.seq)
    if kind == "IfThenElse":
        return max(count_flops(node.then_case), count_flops(node.else_case))
    if kind == "For":
        return int(node.extent) * count_flops(node.body)
    if kind in ("Bind", "LetStmt"):
        return count_flops(node.value) + count_flops(getattr(node, "body", None))
    own = 1 if kind in _FLOAT_OPS and _is_float(node) else 0
    if kind == "Call":
        op = str(node.op.name) if hasattr(node.op, "name") else ""
        own = 0 if op.endswith(("if_then_else", "reinterpret")) or not _is_float(node) else 1
        return own + sum(count_flops(a) for a in node.args)
    if kind == "Select":
        return sum(count_flops(x) for x in (node.true_value, node.false_value))
    children = [getattr(node, a) for a in ("a", "b", "value") if hasattr(node, a)]
    return own + sum(count_flops(c) for c in children if not isinstance(c, int | float))


def block_nests(func: Any) -> list[BlockNest]:
    """Every leaf block of a scheduled PrimFunc with its loops, guards and accesses."""
    out: list[BlockNest] = []

    def walk(stmt: Any, loops: list[Loop], conds: list[Any], defs: dict) -> None:
        kind = type(stmt).__name__
        if kind == "SeqStmt":
            for s in stmt.seq:
                walk(s, loops, conds, defs)
        elif kind == "For":
            if not isinstance(stmt.extent, tirx.IntImm) or not isinstance(stmt.min, tirx.IntImm):
                raise AnalysisError(f"loop {stmt.loop_var.name} has a symbolic extent")
            names = [lp.name.split("#")[0] for lp in loops]
            name = stmt.loop_var.name
            if name in names:
                name = f"{name}#{names.count(name) + 1}"
            loop = Loop(stmt.loop_var, name, int(stmt.min), int(stmt.extent), stmt)
            walk(stmt.body, [*loops, loop], conds, defs)
        elif kind == "IfThenElse":
            walk(stmt.then_case, loops, [*conds, *_split_and(stmt.condition)], defs)
            if stmt.else_case is not None:
                walk(stmt.else_case, loops, [*conds, tirx.Not(stmt.condition)], defs)
        elif kind == "SBlockRealize":
            block = stmt.block
            inner = dict(defs)
            for iv, value in zip(block.iter_vars, stmt.iter_values, strict=True):
                inner[_key(iv.var)] = value
            guards = [*conds, *_split_and(stmt.predicate)]
            nested: list[BlockNest] = []
            before = len(out)
            walk(block.body, loops, guards, inner)
            nested = out[before:]
            if nested or block.name_hint == "root":
                return
            out.append(_leaf(block, loops, guards, inner))
        elif hasattr(stmt, "body"):
            walk(stmt.body, loops, conds, defs)

    walk(func.body, [], [], {})
    return out


def _leaf(block: Any, loops: list[Loop], guards: list[Any], defs: dict) -> BlockNest:
    accesses = []
    for kind, regions in (("read", block.reads), ("write", block.writes)):
        for region in regions:
            bounds = [(r.min, r.min + r.extent - 1) for r in region.region]
            accesses.append(Access(region.source.name, kind, bounds))
    needed = math.prod(int(iv.dom.extent) for iv in block.iter_vars) if block.iter_vars else 1
    return BlockNest(block.name_hint, list(loops), list(guards), defs, accesses,
                     count_flops(block.body), needed)


# ----------------------------------------------------------------------------- evaluation

def _vars_of(expr: Any, defs: dict, acc: dict | None = None) -> dict[int, Any]:
    """Loop variables an expression depends on (through block var definitions)."""
    acc = {} if acc is None else acc
    kind = type(expr).__name__
    if kind == "Var":
        k = _key(expr)
        if k in defs:
            _vars_of(defs[k], defs, acc)
        else:
            acc[k] = expr
        return acc
    if kind in ("IntImm", "FloatImm", "StringImm"):
        return acc
    if kind == "BufferLoad":
        raise AnalysisError("an index reads a buffer (indirect access): cannot bound it")
    for attr in ("a", "b", "value", "condition", "true_value", "false_value"):
        if hasattr(expr, attr):
            _vars_of(getattr(expr, attr), defs, acc)
    if kind == "Call":
        for a in expr.args:
            _vars_of(a, defs, acc)
    return acc


_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "FloorDiv": np.floor_divide,
    "FloorMod": np.mod, "Min": np.minimum, "Max": np.maximum, "LT": np.less,
    "LE": np.less_equal, "GT": np.greater, "GE": np.greater_equal, "EQ": np.equal,
    "NE": np.not_equal, "And": np.logical_and, "Or": np.logical_or,
}


def evaluate(expr: Any, env: dict[int, np.ndarray], defs: dict) -> np.ndarray:
    """Evaluate an integer/boolean TIR expression with numpy arrays bound to loop variables."""
    kind = type(expr).__name__
    if kind == "Var":
        k = _key(expr)
        if k in env:
            return env[k]
        if k in defs:
            return evaluate(defs[k], env, defs)
        raise AnalysisError(f"variable {expr.name} is not a loop around the block")
    if kind == "IntImm":
        return np.int64(int(expr.value))
    if kind in _BINARY:
        return _BINARY[kind](evaluate(expr.a, env, defs), evaluate(expr.b, env, defs))
    if kind in ("Div", "Mod"):  # truncating, as in C
        a, b = evaluate(expr.a, env, defs), evaluate(expr.b, env, defs)
        q = np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
        return q if kind == "Div" else a - q * b
    if kind == "Not":
        return np.logical_not(evaluate(expr.a, env, defs))
    if kind == "Select":
        return np.where(evaluate(expr.condition, env, defs),
                        evaluate(expr.true_value, env, defs),
                        evaluate(expr.false_value, env, defs))
    if kind == "Cast":
        return evaluate(expr.value, env, defs)
    if kind == "Call" and str(expr.op.name).endswith("if_then_else"):
        c, t, f = (evaluate(a, env, defs) for a in expr.args)
        return np.where(c, t, f)
    raise AnalysisError(f"cannot evaluate a {kind} in an index or a guard")


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
            k = _key(lp.var)
            if lp.name in fixed:
                v = fixed[lp.name]
                ok = lp.min <= v < lp.min + lp.extent
                self.ranges[k] = (v, v + 1) if ok else (v, v)  # out of range: empty
            else:
                self.ranges[k] = (lp.min, lp.min + lp.extent)
            self.names[k] = lp.name
        self.guard_vars = [_vars_of(c, nest.defs) for c in nest.conjuncts]

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
        keys, guards = self._group(set(_vars_of(expr, self.nest.defs)))
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


# ----------------------------------------------------------------------------- results

@dataclass(frozen=True)
class BlockWork:
    """Work of one block: iterations and FLOPs done by the schedule and needed by the chain."""

    block: str
    flop_per_iter: int
    iterations_done: int
    iterations_needed: int
    iterations_unguarded: int  # loop extents only (what estimate_tir_flops assumes)

    @property
    def redundancy(self) -> float:
        return self.iterations_done / self.iterations_needed if self.iterations_needed else 1.0

    @property
    def flop_done(self) -> int:
        return self.flop_per_iter * self.iterations_done

    @property
    def flop_needed(self) -> int:
        return self.flop_per_iter * self.iterations_needed


@dataclass(frozen=True)
class BufferUse:
    """A buffer: its role, shape before and after compaction, bytes, and the model's traffic."""

    name: str
    role: str  # input, weight, output, intermediate
    shape: tuple[int, ...]
    compact_shape: tuple[int, ...]
    dtype_bytes: int
    fits: str  # smallest cache level holding the compacted buffer, or "memory"
    traffic_bytes: int

    @property
    def bytes(self) -> int:
        return math.prod(self.compact_shape) * self.dtype_bytes

    @property
    def full_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype_bytes


@dataclass(frozen=True)
class Analysis:
    """The analysis of one schedule (see the module docstring for every rule)."""

    blocks: tuple[BlockWork, ...]
    buffers: tuple[BufferUse, ...]
    chain_flop: float
    estimated_flop: float  # tvm.s_tir.analysis.estimate_tir_flops on the scheduled module
    allocated_bytes: int  # after StorageRewrite (buffers sharing memory)
    cache_level: str
    caches: dict[str, int] = field(default_factory=dict)

    @property
    def flop_done(self) -> int:
        return sum(b.flop_done for b in self.blocks)

    @property
    def flop_needed(self) -> int:
        return sum(b.flop_needed for b in self.blocks)

    @property
    def redundancy(self) -> float:
        return self.flop_done / self.flop_needed if self.flop_needed else 1.0

    @property
    def bytes_moved(self) -> int:
        return sum(b.traffic_bytes for b in self.buffers)

    @property
    def arithmetic_intensity(self) -> float:
        return self.flop_done / self.bytes_moved if self.bytes_moved else math.inf

    def block(self, name: str) -> BlockWork:
        for b in self.blocks:
            if b.block == name:
                return b
        raise KeyError(f"no block {name!r} (blocks: {', '.join(b.block for b in self.blocks)})")

    def buffer(self, name: str) -> BufferUse:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(f"no buffer {name!r}")

    def rows(self) -> list[dict]:
        """One row per block, for a table."""
        return [{"block": b.block, "FLOP/iter": b.flop_per_iter,
                 "iterations done": b.iterations_done,
                 "iterations needed": b.iterations_needed,
                 "redundancy": round(b.redundancy, 4), "MFLOP done": b.flop_done / 1e6}
                for b in self.blocks]

    def buffer_rows(self) -> list[dict]:
        """One row per buffer, for a table."""
        return [{"buffer": b.name, "role": b.role, "shape": "x".join(map(str, b.shape)),
                 "compacted": "x".join(map(str, b.compact_shape)), "KiB": b.bytes / 1024,
                 "fits": b.fits, f"moved past {self.cache_level} (KiB)": b.traffic_bytes / 1024}
                for b in self.buffers]

    def summary(self) -> dict:
        return {"MFLOP done": self.flop_done / 1e6, "MFLOP needed": self.flop_needed / 1e6,
                "chain MFLOP": self.chain_flop / 1e6, "redundancy": self.redundancy,
                "allocated KiB": self.allocated_bytes / 1024,
                f"bytes moved past {self.cache_level}": self.bytes_moved,
                "FLOP/byte": self.arithmetic_intensity}

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, b in zip(d["blocks"], self.blocks, strict=True):
            row.update(redundancy=b.redundancy, flop_done=b.flop_done,
                       flop_needed=b.flop_needed)
        for row, b in zip(d["buffers"], self.buffers, strict=True):
            row.update(bytes=b.bytes, full_bytes=b.full_bytes)
        d.update(flop_done=self.flop_done, flop_needed=self.flop_needed,
                 redundancy=self.redundancy, bytes_moved=self.bytes_moved,
                 arithmetic_intensity=(None if math.isinf(self.arithmetic_intensity)
                                       else self.arithmetic_intensity))
        return d


# ----------------------------------------------------------------------------- traffic

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
        keys = sorted(set(_vars_of(lo_expr, self.nest.defs))
                      | set(_vars_of(hi_expr, self.nest.defs)), key=list(self.ranges).index)
        env = self._grid(keys)
        lo = np.broadcast_to(evaluate(lo_expr, env, self.nest.defs),
                             tuple(self.ranges[k][1] - self.ranges[k][0] for k in keys))
        hi = np.broadcast_to(evaluate(hi_expr, env, self.nest.defs), lo.shape)
        inner = tuple(i for i, k in enumerate(keys) if k not in self.outer)
        if inner:
            lo, hi = lo.min(axis=inner), hi.max(axis=inner)
        return int((hi - lo).max()) + 1 if lo.size else 1


# ----------------------------------------------------------------------------- lowering

@tvm.instrument.pass_instrument
class _Snapshots:
    """Keeps the module after CompactBufferAllocation and before MakePackedAPI."""

    def __init__(self) -> None:
        self.compacted = None
        self.lowered = None

    def run_before_pass(self, mod, info) -> None:
        if info.name == "tirx.MakePackedAPI" and self.lowered is None:
            self.lowered = mod

    def run_after_pass(self, mod, info) -> None:
        if info.name == "s_tir.CompactBufferAllocation" and self.compacted is None:
            self.compacted = mod


def lowered_snapshots(mod: tvm.IRModule, target_name: str = "cpu"):
    """(module after CompactBufferAllocation, module before MakePackedAPI)."""
    from playground.lowering import run_tir_pipeline

    keep = _Snapshots()
    run_tir_pipeline(mod, target_name, keep)
    return keep.compacted, keep.lowered


def _alloc_shapes(func: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the buffers allocated in blocks of a (scheduled or compacted) function."""
    shapes: dict[str, tuple[int, ...]] = {}

    def visit(stmt: Any) -> None:
        kind = type(stmt).__name__
        if kind == "SBlock":
            for buf in stmt.alloc_buffers:
                shapes[buf.name] = tuple(int(s) for s in buf.shape)
            visit(stmt.body)
            if stmt.init is not None:
                visit(stmt.init)
        elif kind == "SBlockRealize":
            visit(stmt.block)
        elif kind == "SeqStmt":
            for s in stmt.seq:
                visit(s)
        elif kind == "IfThenElse":
            visit(stmt.then_case)
            if stmt.else_case is not None:
                visit(stmt.else_case)
        elif hasattr(stmt, "body"):
            visit(stmt.body)

    visit(func.body)
    return shapes


def _roles(func: Any, chain: dict) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """name -> (role, shape, 0) for parameters and allocated buffers."""
    roles: dict[str, tuple[str, tuple[int, ...], int]] = {}
    output = chain["layers"][-1]["name"]
    for param in func.params:
        buf = param if hasattr(param, "shape") else None
        if buf is None:
            continue
        name = buf.name
        role = ("input" if name == INPUT_NAME else "output" if name == output else "weight")
        roles[name] = (role, tuple(int(s) for s in buf.shape), 0)
    for n, shape in _alloc_shapes(func).items():
        roles.setdefault(n, ("intermediate", shape, 0))
    return roles


def analyze(chain: dict, steps: tuple[Step, ...] | list[Step] = (), target: str = "cpu", *,
            cache_level: str = "L2", caches: dict[str, int] | None = None) -> Analysis:
    """Analyze the schedule ``steps`` of ``chain`` (normalized) on ``target``.

    Parameters
    ----------
    cache_level
        The cache whose misses count as "bytes moved" (``"L1"``, ``"L2"`` or ``"L3"``).
    caches
        Cache sizes in bytes (default: this machine's, :func:`playground.machine.cache_sizes`).

    Raises
    ------
    StepError, BuildError
        When a step does not apply or lowering fails.
    AnalysisError
        When the schedule has symbolic extents or indirect indices.
    """
    caches = caches or cache_sizes()
    if cache_level not in caches:
        raise AnalysisError(f"unknown cache level {cache_level!r} (known: {', '.join(caches)})")
    mod = scheduled(chain, tuple(steps)).mod
    func = mod["main"]
    nests = block_nests(func)
    work = tuple(BlockWork(n.name, n.flop_per_iter, Space(n).count(), n.needed,
                           math.prod(lp.extent for lp in n.loops)) for n in nests)

    compacted, lowered = lowered_snapshots(mod, target)
    compact = _alloc_shapes(compacted["main"])
    allocated = tvm.s_tir.analysis.calculate_allocated_bytes(lowered)
    allocated_bytes = sum(int(v) for per in allocated.values() for v in per.values())

    dtypes = _buffer_dtypes(func)
    roles = _roles(func, chain)
    sizes = {name: r[1] for name, r in roles.items()}
    intermediates = {name for name, r in roles.items() if r[0] == "intermediate"}
    moved = traffic(nests, sizes, dtypes, intermediates, caches[cache_level])

    levels = sorted(caches, key=caches.get)
    buffers = []
    for name, (role, shape, _) in roles.items():
        cshape = compact.get(name, shape)
        nbytes = math.prod(cshape) * dtypes[name]
        fits = next((lv for lv in levels if nbytes <= caches[lv]), "memory")
        buffers.append(BufferUse(name, role, shape, cshape, dtypes[name], fits,
                                 moved.get(name, 0)))
    return Analysis(work, tuple(buffers), chain_flop(chain),
                    float(tvm.s_tir.analysis.estimate_tir_flops(mod)), allocated_bytes,
                    cache_level, dict(caches))


def _buffer_dtypes(func: Any) -> dict[str, int]:
    """Bytes per element of every buffer the blocks touch."""
    out: dict[str, int] = {}

    def visit(stmt: Any) -> None:
        kind = type(stmt).__name__
        if kind == "SBlock":
            for region in (*stmt.reads, *stmt.writes):
                out[region.source.name] = tvm.DataType(str(region.source.dtype)).bits // 8
            for buf in stmt.alloc_buffers:
                out[buf.name] = tvm.DataType(str(buf.dtype)).bits // 8
            visit(stmt.body)
        elif kind == "SBlockRealize":
            visit(stmt.block)
        elif kind == "SeqStmt":
            for s in stmt.seq:
                visit(s)
        elif kind == "IfThenElse":
            visit(stmt.then_case)
            if stmt.else_case is not None:
                visit(stmt.else_case)
        elif hasattr(stmt, "body"):
            visit(stmt.body)

    visit(func.body)
    return out

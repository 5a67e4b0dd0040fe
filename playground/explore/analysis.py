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
  image border keeps the buffer's full size, unless the playground's tile-local step
  (:mod:`playground.compile.tile_local`, on by default) drops that predicate: then the buffer is
  the unclipped tile. The numbers say what the code allocates.
* **Tile-local decisions**: per predicated block under a loop, whether the step dropped its
  predicate, or why it kept it. A dropped predicate means the block also computes the ring
  outside the image: its *done* iterations are then its loop extents.
* **Bytes moved** past a cache level, by a working-set model over the loop tree (documented at
  :func:`traffic`), and **arithmetic intensity** = FLOP done / those bytes.

Everything here lowers; callers off the worker go through the ``"analyze"`` job
(:mod:`playground.jobs.facts`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import tvm

from playground.chain.spec import INPUT_NAME, chain_flop
from playground.compile.tile_local import predicate_decisions
from playground.explore.iteration_space import AnalysisError, Space, block_nests
from playground.explore.traffic import traffic
from playground.measure.machine import cache_sizes, fitting_level
from playground.schedule import ir
from playground.schedule.replay import scheduled
from playground.schedule.steps import Step


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
    # (block, reason its predicate is kept or "" where dropped); empty with the step off
    tile_local: tuple[tuple[str, str], ...] = ()

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


def lowered_snapshots(mod: tvm.IRModule, target_name: str = "cpu", *, tile_local: bool = True):
    """(module after CompactBufferAllocation, module before MakePackedAPI)."""
    from playground.compile.lowering import run_tir_pipeline

    keep = _Snapshots()
    run_tir_pipeline(mod, target_name, keep, tile_local=tile_local)
    return keep.compacted, keep.lowered


def _alloc_shapes(func: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the buffers allocated in blocks of a (scheduled or compacted) function."""
    return {buf.name: tuple(int(d) for d in buf.shape) for buf in ir.allocations(func)}


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
            cache_level: str = "L2", caches: dict[str, int] | None = None,
            tile_local: bool = True) -> Analysis:
    """Analyze the schedule ``steps`` of ``chain`` (normalized) on ``target``.

    Parameters
    ----------
    cache_level
        The cache whose misses count as "bytes moved" (``"L1"``, ``"L2"`` or ``"L3"``).
    caches
        Cache sizes in bytes (default: this machine's,
        :func:`playground.measure.machine.cache_sizes`).
    tile_local
        Lower with the tile-local step (as every build does unless switched off).

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
    decided = tuple(predicate_decisions(mod)) if tile_local else ()
    dropped = {name for name, reason in decided if not reason}
    work = tuple(BlockWork(n.name, n.flop_per_iter,
                           math.prod(lp.extent for lp in n.loops) if n.name in dropped
                           else Space(n).count(), n.needed,
                           math.prod(lp.extent for lp in n.loops)) for n in nests)

    compacted, lowered = lowered_snapshots(mod, target, tile_local=tile_local)
    compact = _alloc_shapes(compacted["main"])
    allocated = tvm.s_tir.analysis.calculate_allocated_bytes(lowered)
    allocated_bytes = sum(int(v) for per in allocated.values() for v in per.values())

    dtypes = _buffer_dtypes(func)
    roles = _roles(func, chain)
    sizes = {name: r[1] for name, r in roles.items()}
    intermediates = {name for name, r in roles.items() if r[0] == "intermediate"}
    moved = traffic(nests, sizes, dtypes, intermediates, caches[cache_level])

    buffers = []
    for name, (role, shape, _) in roles.items():
        cshape = compact.get(name, shape)
        nbytes = math.prod(cshape) * dtypes[name]
        fits = fitting_level(nbytes, caches)
        buffers.append(BufferUse(name, role, shape, cshape, dtypes[name], fits,
                                 moved.get(name, 0)))
    return Analysis(work, tuple(buffers), chain_flop(chain),
                    float(tvm.s_tir.analysis.estimate_tir_flops(mod)), allocated_bytes,
                    cache_level, dict(caches), decided)


def _buffer_dtypes(func: Any) -> dict[str, int]:
    """Bytes per element of every buffer the blocks touch."""
    out: dict[str, int] = {}
    for block in ir.statements(func.body):
        if isinstance(block, ir.SBlock):
            for buf in (*(r.source for r in (*block.reads, *block.writes)),
                        *block.alloc_buffers):
                out[buf.name] = tvm.DataType(str(buf.dtype)).bits // 8
    return out

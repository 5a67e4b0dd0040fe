"""Steps refused by what they made: the checks that run on the schedule after a step.

:func:`check_result` is the second half of the pre-checks
(:mod:`playground.schedule.prechecks`): what is easier to see in the result than to predict
from the step, such as two blocks that now share a name, a block whose loops reach outside a
buffer it writes, a copy that lost its producer's border guard, a reader moved into rounds
its producer skips, or a vector loop inside another. Each rule stands in for a TVM 0.27 bug
found by the schedule fuzzer (``docs/tvm-bugs.md``) and refuses with one plain line.
"""

from __future__ import annotations

from typing import Any

import tvm

from playground.schedule import ir
from playground.schedule.ir import Block, Loop
from playground.schedule.prechecks import Facts, bound_vars, refuse, varying_vars
from playground.schedule.steps import Step


def check_result(sch: Any, step: Step, ctx: str) -> None:
    """Refuse a step by what it made: block names that are no longer unique, a block that
    writes outside a buffer (:func:`_write_outside`), a vectorized loop inside another (a
    reorder moved one out, then the loop now innermost was vectorized: the schedule fuzzer's
    case, whose build failed with "VectorizeLoop before LiftStorageAlloc"), an unguarded
    block whose loops drive an axis outside its domain (:func:`_binding_outside`), or a
    vectorized loop that computes a buffer and reads it back in one iteration
    (:func:`_one_lane`)."""
    names = ir.block_names(sch)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise refuse(ctx, f"it would make two blocks named {dup[0]}, and blocks are named "
                          "by name in every later step — undo it or pick other arguments")
    f = Facts(sch)
    for block in f.all:
        if (outside := _write_outside(block)) is not None:
            raise refuse(ctx, _outside_message(block, *outside))
        if (outside := _binding_outside(block)) is not None:
            raise refuse(ctx, _binding_message(block, *outside))
        if (stale := _reads_unwritten_rounds(f, block)) is not None:
            raise refuse(ctx, _stale_message(block, *stale))
    for name in f.order:
        for lp in f.blocks[name].loops:
            if lp.kind != "vectorized":
                continue
            if inner := [x for x in f.below(lp) if x.kind == "vectorized"]:
                raise refuse(ctx, f"it puts the vectorized loop {inner[0].name} inside the "
                                  f"vectorized loop {lp.name} ({name}), and TVM 0.27 cannot "
                                  f"build a vector loop inside another — vectorize only one "
                                  f"of them (the innermost)", "loop")
            if found := _one_lane(f, lp):
                raise refuse(ctx, _one_lane_message(step, lp, *found), "loop")


def _write_outside(block: Block) -> tuple[str, int, int, int] | None:
    """(buffer, axis, highest or lowest index, extent) when ``block``'s iteration domain
    reaches outside a buffer it writes, else None.

    A block's domain must map into what it writes. TVM 0.27's ``cache_write`` of a block
    under a split that overshoots (a unit image loop split by 2 x 2, fused, split again)
    sizes the copy and its write-back from the loops, not from the guard: the write-back
    then iterates over 8 images of a 1-image output and the kernel writes past it (the
    schedule fuzzer's case; the worker died with SIGABRT)."""
    analyzer = tvm.sym.Analyzer()
    for iv in block.sblock.iter_vars:
        analyzer.bind(iv.var, tvm.ir.Range.from_min_extent(iv.dom.min, iv.dom.extent))
    for region in block.sblock.writes:
        for axis, (r, extent) in enumerate(zip(region.region, region.source.shape,
                                               strict=True)):
            size = ir.constant(extent)
            if size is None:
                continue
            low = analyzer.const_int_bound(r.min).min_value
            high = analyzer.const_int_bound(r.min + r.extent - 1).max_value
            if low < 0:
                return str(region.source.name), axis, low, size
            if high >= size:
                return str(region.source.name), axis, high, size
    return None


def _binding_outside(block: Block) -> tuple[str, int, int, int] | None:
    """(axis name, lowest or highest value, domain min, domain extent) when the loops around
    an unguarded ``block`` drive one of its axes outside the axis's domain, else None.

    TVM trusts a block's bindings to stay inside its axes' domains, and sizes and indexes
    buffers by the domains. TVM 0.27's ``cache_write`` of a block computed at a consumer's
    loop copies the block's region back without the block's border guard (``T.where``): the
    schedule fuzzer's case wrote column -1 of a 4-column buffer, and the worker died with
    SIGBUS. Only blocks without guards are read here (a guard may keep an axis inside, and
    the analyzer does not always see it), and only bindings of loops with constant ranges."""
    if block.guards:
        return None
    analyzer = tvm.sym.Analyzer()
    known = set()
    for lp in block.loops:
        if lp.min is None or lp.extent is None:
            continue
        analyzer.bind(lp.var, tvm.ir.Range.from_min_extent(lp.min, lp.extent))
        known.add(ir.var_key(lp.var))
    for iv, value in block.bindings():
        low, size = ir.constant(iv.dom.min), ir.constant(iv.dom.extent)
        if low is None or size is None or not ir.var_keys(value) <= known:
            continue
        bound = analyzer.const_int_bound(value)
        if bound.min_value < low:
            return str(iv.var.name), int(bound.min_value), low, size
        if bound.max_value >= low + size:
            return str(iv.var.name), int(bound.max_value), low, size
    return None


def _binding_message(block: Block, axis: str, value: int, low: int, size: int) -> str:
    return (f"TVM 0.27 made {block.name}'s axis {axis} reach {value}, outside {low}.."
            f"{low + size - 1} (a copy that lost its producer's border guard): the kernel "
            f"would touch memory outside its buffers — undo it (cache_write or cache_read "
            f"before compute_at, so that the copy is moved with the block)")


def _reads_unwritten_rounds(f: Facts, block: Block) -> tuple[str, str, str] | None:
    """(producer, buffer, guard) when ``block`` reads an intermediate that a producer writes
    only in some rounds of loops around both (a guard over those loops alone, none of which
    indexes the producer: the last round of a split that overshoots a loop of extent 1),
    and ``block`` runs in every round. (A border guard, over a loop that indexes the
    producer, only skips elements the reader does not read.)

    TVM 0.27 then sizes the buffer to one round's region and the reader, in a round the
    producer skipped, reads what the last round left (the schedule fuzzer's case: relu1
    moved under conv1's rows, both under a split ``n`` whose second round conv1 skips: 81 of
    150 outputs wrong)."""
    mine = {ir.var_key(lp.var) for lp in block.loops}
    own = {repr(g) for g in block.guards}
    for buffer in block.reads:
        if buffer in f.params:
            continue
        for name in f.writers(buffer):
            producer = f.blocks[name]
            if producer is block:
                continue
            indexing = bound_vars(producer)
            for guard in producer.guards:
                keys = ir.var_keys(guard)
                if keys and keys <= mine and not keys & indexing and repr(guard) not in own:
                    return name, buffer, str(guard)
    return None


def _stale_message(block: Block, producer: str, buffer: str, guard: str) -> str:
    return (f"{block.name} runs in every round of its loops, but {producer}, which writes "
            f"{buffer}, runs only where {guard}: in the other rounds {block.name} would read "
            f"{buffer} that {producer} did not write (TVM 0.27 keeps one round of it: wrong "
            f"numbers) — undo it, or split by factors that divide the loop")


def _outside_message(block: Block, buffer: str, axis: int, index: int, extent: int) -> str:
    return (f"TVM 0.27 made {block.name} write {buffer} at index {index} of axis {axis}, "
            f"which has {extent} element{'s' if extent != 1 else ''}: the kernel would "
            f"write past the buffer — undo it (a split that overshoots its loop before a "
            f"cache copy: split by factors that divide the loop, or cache first)")


def _one_lane(f: Facts, lp: Loop) -> tuple[str, str, str] | None:
    """(producer, buffer, reader) when a block under the vectorized loop ``lp`` writes a
    buffer that another block under it reads, and no block outside ``lp`` touches it.

    TVM 0.27 then shrinks the buffer to what one iteration needs (one element) and vectorizes
    as if every lane had its own: all lanes write that element and read it back, and the reader
    gets one lane's value (``docs/tvm-bugs.md``: the fuzzer's three cache_read cases). A
    buffer that a block outside the loop also uses keeps its full size and is computed right,
    and so is a producer whose element does not change with the loop (a per-channel value
    under a loop over columns: every lane writes the same number to the same place).
    """
    under = dict.fromkeys(f.under(lp))
    for producer in under:
        if ir.var_key(lp.var) not in varying_vars(f.blocks[producer]):
            continue  # every lane writes the same element, with the same value: right
        for buffer in f.blocks[producer].writes:
            if buffer in f.params:
                continue
            users = {*f.readers(buffer), *f.writers(buffer)}
            readers = [r for r in f.readers(buffer) if r in under and r != producer]
            if readers and users <= under.keys():
                return producer, buffer, readers[0]
    return None


def _one_lane_message(step: Step, lp: Loop, producer: str, buffer: str,
                      reader: str) -> str:
    where = (f"vectorizing {step.args['block']}.{lp.name}" if step.primitive == "vectorize"
             else f"it puts {producer} and {reader} under the vectorized loop {lp.name}")
    writes = "its buffer" if buffer == producer else buffer
    return (f"{where}: {producer} writes {writes} and {reader} reads it back in the same "
            f"iteration, and TVM 0.27 then keeps one element of {buffer} for all the vector "
            f"lanes (wrong numbers) — compute {producer} at an outer loop (split {lp.name} "
            f"first) and vectorize each block's own innermost loop, or compute_inline "
            f"{producer}")

"""Steps TVM 0.27 accepts and then miscompiles (or cannot build): refused before TVM is asked.

TVM's schedule primitives check a lot, but not everything. Random schedules (see
``benchmarks/fuzz.py``) found steps that TVM applies without a word and that later compute
wrong numbers, read memory nobody wrote, or fail deep in the build with a message that names
no block. Each such case is a rule here, read from the blocks' reads and writes and the loop
tree of the schedule the step would change, and refused with one plain line that says what
is wrong and what to do instead. :func:`check_step` runs before the primitive;
:func:`check_result` runs on the schedule after it (for what is easier to see in the result,
such as two blocks that now share a name). ``docs/tvm-bugs.md`` has a plain-TVM reproduction
for every rule that stands in for a TVM bug.

A rule errs on the side of refusing: a schedule the playground refuses can always be written
another way (each hint says how); one it accepts and miscompiles teaches the wrong lesson.
"""

from __future__ import annotations

from typing import Any

import tvm

from playground.errors import StepError
from playground.schedule import ir
from playground.schedule.ir import Block, Loop
from playground.schedule.steps import CATALOG, Step


class Facts:
    """Blocks and loops of a scheduled function (:mod:`playground.schedule.ir`), by name."""

    def __init__(self, sch: Any) -> None:
        self.params = {str(p.name) for p in sch.mod["main"].params}
        self.all = ir.blocks(sch)
        self.blocks: dict[str, Block] = {}
        for b in self.all:
            self.blocks.setdefault(b.name, b)
        self.order = [b.name for b in self.all]

    def loop(self, block: str, name: str) -> Loop | None:
        """The loop called ``name`` (with ``#k`` for repeats) around ``block``."""
        return next((lp for lp in self.blocks[block].loops if lp.name == name), None)

    def under(self, lp: Loop) -> list[str]:
        """Names of the blocks anywhere inside ``lp``, in program order, each once."""
        return list(dict.fromkeys(b.name for b in ir.blocks_under(lp, self.all)))

    def below(self, lp: Loop) -> list[Loop]:
        """The loops anywhere inside ``lp``."""
        return ir.loops_below(lp, self.all)

    def inner(self, lp: Loop) -> list[Loop]:
        """The loops directly inside ``lp``."""
        out: dict[int, Loop] = {}
        for b in ir.blocks_under(lp, self.all):
            nxt = b.loops[b.loops.index(lp) + 1:][:1]
            out.update((id(x), x) for x in nxt)
        return list(out.values())

    def readers(self, buffer: str) -> list[str]:
        return [b.name for b in self.blocks.values() if buffer in b.reads]

    def writers(self, buffer: str) -> list[str]:
        return [b.name for b in self.blocks.values() if buffer in b.writes]


def reduce_vars(block: Block) -> set[int]:
    """Keys of the loop variables that feed a reduction axis of ``block``."""
    return {k for iv, value in block.bindings() if int(iv.iter_type) == ir.REDUCE
            for k in ir.var_keys(value)}


def bound_vars(block: Block) -> set[int]:
    """Keys of the loop variables that feed any axis of ``block``."""
    return {k for _, value in block.bindings() for k in ir.var_keys(value)}


def varying_vars(block: Block) -> set[int]:
    """Keys of the loop variables that feed an axis of ``block`` longer than 1."""
    return {k for iv, value in block.bindings() if ir.constant(iv.dom.extent) != 1
            for k in ir.var_keys(value)}


def is_pad(block: Block) -> bool:
    """Is the block body ``buf[...] = if_then_else(cond, x, <constant>)``, i.e. padding?"""
    value = getattr(block.sblock.body, "value", None)
    return (ir.call_name(value).endswith("if_then_else")
            and isinstance(value.args[2], ir.FloatImm | ir.IntImm))


def _refuse(ctx: str, message: str, where: str = "") -> StepError:
    return StepError(f"{ctx}: {message}", where=where or "precheck")


# ----------------------------------------------------------------------------- the rules

def check_step(sch: Any, step: Step, ctx: str, target: str | None = None) -> None:
    """Refuse ``step`` on ``sch`` when TVM would accept it and miscompile it.

    Parameters
    ----------
    sch
        The schedule the step is about to change (read only).
    step
        A normalized step whose blocks and loops exist (see :func:`replay.apply_step`).
    ctx
        How messages name the step, e.g. ``"step 3 (compute_at)"``.
    target
        ``"cpu"`` or ``"cuda"`` when known: GPU-only steps are refused for the CPU here.

    Raises
    ------
    StepError
        One line: what is wrong, with the block and loop names, and what to do instead.
    """
    prim = CATALOG[step.primitive]
    if prim.gpu and target == "cpu":
        a = step.args
        raise _refuse(ctx, f"binding {a['block']}.{a['loop']} to {a['thread']} makes it a GPU "
                           "loop, but the target is the CPU — use parallel for CPU threads, or "
                           "switch the target to cuda", "thread")
    if prim.prechecks:
        facts = Facts(sch)
        for name in prim.prechecks:
            RULES[name](facts, dict(step.args), ctx)


def _parallel(f: Facts, a: dict, ctx: str) -> None:
    block, name = a["block"], a["loop"]
    lp = f.loop(block, name)
    outer = [x for x in f.blocks[block].loops if x.kind == "parallel" and x is not lp]
    below = [x for x in f.below(lp) if x.kind == "parallel"]
    if outer or below:
        other = (outer or below)[0].name
        raise _refuse(ctx, f"{block}.{name} is {'inside' if outer else 'around'} the parallel "
                           f"loop {other}: nested parallel loops are not supported on the "
                           "CPU — parallelize one of them (usually the outermost)", "loop")


def _vectorize(f: Facts, a: dict, ctx: str) -> None:
    block, name = a["block"], a["loop"]
    lp = f.loop(block, name)
    if lp.extent == 1:
        raise _refuse(ctx, f"{block}.{name} runs once (extent 1): there is nothing to "
                           "vectorize — vectorize a longer innermost loop", "loop")
    if f.inner(lp):
        inner = ", ".join(x.name for x in f.inner(lp))
        raise _refuse(ctx, f"{block}.{name} is not an innermost loop ({inner} inside it) — "
                           "vectorize the innermost loop of a nest (reorder or split first to "
                           "make the loop you want innermost)", "loop")
    if ir.var_key(lp.var) in reduce_vars(f.blocks[block]):
        raise _refuse(ctx, f"{block}.{name} is a reduction loop of {block} — vectorize a "
                           "spatial loop (its output elements are independent)", "loop")


#: At most this many loop iterations written out by one ``unroll`` (its extent times the
#: iterations of the loops inside it, a vector loop counted once): a 128-long loop around a
#: 4x114 copy took 66 s to compile and a kernel's whole row loop unrolled hit the worker's
#: 120 s limit (preset fuzz seeds 772205, 772280); the templates' register tiles unroll
#: under 300.
MAX_UNROLLED = 8192


def _unroll(f: Facts, a: dict, ctx: str) -> None:
    block, name = a["block"], a["loop"]
    lp = f.loop(block, name)
    total = 0
    for b in ir.blocks_under(lp, f.all):
        inner = b.loops[b.loops.index(lp):]
        count = 1
        for x in inner:
            count *= 1 if x.kind == "vectorized" else (x.extent or 1)
        total += count
    if total > MAX_UNROLLED:
        raise _refuse(ctx, f"unrolling {block}.{name} would write out {total:,} loop "
                           f"iterations ({lp.extent} copies of what is inside it; at most "
                           f"{MAX_UNROLLED:,} compile in reasonable time) — unroll an inner "
                           "loop, or split this one and unroll the inner part", "loop")


def _into_loop(f: Facts, a: dict, ctx: str, prim: str) -> Loop:
    """Checks shared by compute_at and reverse_compute_at on their target loop."""
    target, name = a["target_block"], a["target_loop"]
    lp = f.loop(target, name)
    around = f.blocks[target].loops
    vec = [x for x in around[: around.index(lp) + 1] if x.kind == "vectorized"]
    if vec:
        raise _refuse(ctx, f"{target}.{name} is {'' if vec[0] is lp else 'inside '}a vectorized "
                           f"loop ({vec[0].name}): a block moved there would be vectorized "
                           f"wrongly — {prim} at an outer loop, then vectorize each "
                           "block's own innermost loop", "target_loop")
    return lp


def _compute_at(f: Facts, a: dict, ctx: str) -> None:
    _into_loop(f, a, ctx, "compute_at")


def _reverse_compute_at(f: Facts, a: dict, ctx: str) -> None:
    block, target, name = a["block"], a["target_block"], a["target_loop"]
    lp = _into_loop(f, a, ctx, "reverse_compute_at")
    mine, theirs = f.blocks[block], f.blocks[target]
    under = [b for b in f.under(lp) if b != block]
    if not any(set(mine.reads) & set(f.blocks[b].writes) for b in under):
        producers = sorted({w for r in mine.reads for w in f.writers(r)})
        reads = ", ".join(producers) if producers else "only the function's inputs"
        hint = (f"move it under {producers[-1]}'s loops, or move {target} first"
                if producers else "compute it where it is")
        what = (f"does not read {target}" if under == [target] else
                f"reads nothing computed under {target}.{name}")
        raise _refuse(ctx, f"{block} {what} (it reads {reads}) — {hint}", "target_block")
    if reduce_vars(mine):
        raise _refuse(ctx, f"{block} is a reduction over a window of its input: TVM 0.27 "
                           f"cannot compute it under its producer's loops correctly (terms "
                           f"get dropped) — fuse the other way: compute_at {target} under "
                           f"{block}'s loops", "block")
    if is_pad(mine):
        raise _refuse(ctx, f"{block} pads its input: its zero border does not come from "
                           f"{target}, so under {target}'s loops the border is never written "
                           f"— compute_at {block} under its consumer instead, or "
                           f"compute_inline it", "block")
    if ir.var_key(lp.var) in reduce_vars(theirs):
        raise _refuse(ctx, f"{target}.{name} is a reduction loop of {target}: under it "
                           f"{target}'s values are not finished — pick a spatial loop "
                           f"of {target}", "target_loop")


def _reverse_compute_inline(f: Facts, a: dict, ctx: str) -> None:
    block = a["block"]
    mine = f.blocks[block]
    for buffer in mine.reads:
        writers = f.writers(buffer)
        others = [r for r in f.readers(buffer) if r != block]
        if writers and others and buffer not in f.params:
            raise _refuse(ctx, f"{buffer} is also read by {', '.join(others)}: inlining "
                               f"{block} into {writers[0]} would remove {buffer} that "
                               f"{others[0]} still needs — compute_inline or move {others[0]} "
                               f"first, or keep {block} as it is", "block")


def _decompose_reduction(f: Facts, a: dict, ctx: str) -> None:
    """Refuse an initialization placed above loops that repeat the update of an element.

    ``decompose_reduction`` runs the init once per iteration of the loops above ``loop`` and
    the update under all of them. That is right only when the loops from ``loop`` inwards
    reach each element of the block once: TVM 0.27 does not check it. A block computed at a
    consumer's loop is recomputed, wholly (a loop of the consumer that none of its axes uses)
    or on its overlap (``h + ax1`` over a 3-row window: the halo), and its update then adds
    onto the sums of earlier rounds (the schedule fuzzer's case, a 1x1 conv whose reduction
    is of extent 1 and computed at its consumer's rows: 328 of 336 outputs wrong)."""
    block, name = a["block"], a["loop"]
    mine = f.blocks[block]
    lp = f.loop(block, name)
    if lp is None or not mine.is_reduction:
        return  # TVM says it plainly (not a reduction block)
    nest = mine.loops[mine.loops.index(lp):]
    bound = bound_vars(mine)
    own = ", ".join(x.name for x in mine.loops if ir.var_key(x.var) in bound)
    hint = f"pick one of {block}'s own loops ({own})" if own else "decompose it at a loop inside"
    unused = [x.name for x in nest if ir.var_key(x.var) not in bound and x.extent != 1]
    if unused:
        raise _refuse(ctx, f"{unused[0]} is a loop of the block {block} was computed at, not "
                           f"one of {block}'s own: its initialization would run once while "
                           f"its update repeats — {hint}", "loop")
    if (again := _repeats(mine, nest)) is not None:
        raise _refuse(ctx, f"{block} is computed again for the same elements under "
                           f"{again} (overlapping tiles, a halo): an initialization above it "
                           f"would run once while the update repeats — decompose {block} at "
                           "a loop inside the overlap", "loop")


def _repeats(block: Block, nest: tuple[Loop, ...]) -> str | None:
    """The loop of ``nest`` whose iterations reach an element of ``block`` again (the
    innermost one with which the loops inside it stop mapping one-to-one), or None when the
    nest maps one-to-one onto the block's iterations.

    One-to-one is what TVM's iteration-map detection calls bijective: each loop variable of
    the nest in exactly one place of the bindings, with no overlapping sums (loops outside
    the nest are constants to it). Loops of extent 1 are fixed, so never repeat anything."""
    loops = [x for x in nest if x.extent != 1]
    if not loops or any(x.extent is None or x.min is None for x in loops):
        return None
    dom = {x.var: tvm.ir.Range.from_min_extent(x.min, x.extent) for x in loops}
    values = [v for _, v in block.bindings()]
    guard = block.realize.predicate
    level = tvm.sym.iter_affine_map.IterMapLevel.Bijective
    if len(tvm.sym.detect_iter_map(values, dom, guard, check_level=level).indices):
        return None
    for i in range(len(loops) - 1, -1, -1):  # inside out: the first loop that breaks it
        inner = {x.var: dom[x.var] for x in loops[i:]}
        if not len(tvm.sym.detect_iter_map(values, inner, guard, check_level=level).indices):
            return loops[i].name
    return loops[0].name


def _transform_layout(f: Facts, a: dict, ctx: str) -> None:
    block = a["block"]
    side, index = a["buffer"]
    buffers = f.blocks[block].reads if side == "read" else f.blocks[block].writes
    if index >= len(buffers):
        raise _refuse(ctx, f"{block} {side}s {len(buffers)} buffer(s) ({', '.join(buffers)}): "
                           f"there is no {side} buffer {index}", "buffer")
    buffer = buffers[index]
    if buffer in f.params:
        copy = "cache_read" if side == "read" else "cache_write"
        raise _refuse(ctx, f"{buffer} is an argument of the kernel: its layout is fixed by "
                           f"the caller — {copy} it into a copy first and transform the "
                           "copy's layout", "buffer")


def _cache(f: Facts, a: dict, ctx: str) -> None:
    block = a["block"]
    if "read_buffer_index" in a:
        buffers, index = f.blocks[block].reads, a["read_buffer_index"]
    else:
        buffers, index = f.blocks[block].writes, a["write_buffer_index"]
    if index >= len(buffers):
        side = "read" if "read_buffer_index" in a else "write"
        raise _refuse(ctx, f"{block} {side}s {len(buffers)} buffer(s) ({', '.join(buffers)}): "
                           f"there is no {side} buffer {index}", "buffer")
    name = f"{buffers[index]}_{a['storage_scope']}"
    if name in f.blocks:
        raise _refuse(ctx, f"a block {name} exists already (a {a['storage_scope']} copy of "
                           f"{buffers[index]}): the new copy would get the same name — use "
                           f"that copy, or another storage scope", "storage_scope")


#: The rules by name; a primitive's catalog record lists the ones run before it
#: (``Primitive.prechecks`` in :mod:`playground.schedule.steps`).
RULES = {
    "parallel": _parallel,
    "vectorize": _vectorize,
    "unroll": _unroll,
    "compute_at": _compute_at,
    "reverse_compute_at": _reverse_compute_at,
    "reverse_compute_inline": _reverse_compute_inline,
    "transform_layout": _transform_layout,
    "decompose_reduction": _decompose_reduction,
    "cache": _cache,
}


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
        raise _refuse(ctx, f"it would make two blocks named {dup[0]}, and blocks are named "
                           "by name in every later step — undo it or pick other arguments")
    f = Facts(sch)
    for block in f.all:
        if (outside := _write_outside(block)) is not None:
            raise _refuse(ctx, _outside_message(block, *outside))
        if (outside := _binding_outside(block)) is not None:
            raise _refuse(ctx, _binding_message(block, *outside))
        if (stale := _reads_unwritten_rounds(f, block)) is not None:
            raise _refuse(ctx, _stale_message(block, *stale))
    for name in f.order:
        for lp in f.blocks[name].loops:
            if lp.kind != "vectorized":
                continue
            if inner := [x for x in f.below(lp) if x.kind == "vectorized"]:
                raise _refuse(ctx, f"it puts the vectorized loop {inner[0].name} inside the "
                                   f"vectorized loop {lp.name} ({name}), and TVM 0.27 cannot "
                                   f"build a vector loop inside another — vectorize only one "
                                   f"of them (the innermost)", "loop")
            if found := _one_lane(f, lp):
                raise _refuse(ctx, _one_lane_message(step, lp, *found), "loop")


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

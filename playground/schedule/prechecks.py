"""Steps TVM 0.27 accepts and then miscompiles (or cannot build): refused before TVM is asked.

TVM's schedule primitives check a lot, but not everything. Random schedules (see
``benchmarks/fuzz.py``) found steps that TVM applies without a word and that later compute
wrong numbers, read memory nobody wrote, or fail deep in the build with a message that names
no block. Each such case is a rule here, read from the blocks' reads and writes and the loop
tree of the schedule the step would change, and refused with one plain line that says what
is wrong and what to do instead. :func:`check_step` runs before the primitive;
:func:`playground.schedule.postchecks.check_result` runs on the schedule after it (for what
is easier to see in the result, such as two blocks that now share a name).
``docs/tvm-bugs.md`` has a plain-TVM reproduction for every rule that stands in for a TVM bug.

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


def refuse(ctx: str, message: str, where: str = "") -> StepError:
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
        raise refuse(ctx, f"binding {a['block']}.{a['loop']} to {a['thread']} makes it a GPU "
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
        raise refuse(ctx, f"{block}.{name} is {'inside' if outer else 'around'} the parallel "
                          f"loop {other}: nested parallel loops are not supported on the "
                          "CPU — parallelize one of them (usually the outermost)", "loop")


def _vectorize(f: Facts, a: dict, ctx: str) -> None:
    block, name = a["block"], a["loop"]
    lp = f.loop(block, name)
    if lp.extent == 1:
        raise refuse(ctx, f"{block}.{name} runs once (extent 1): there is nothing to "
                          "vectorize — vectorize a longer innermost loop", "loop")
    if f.inner(lp):
        inner = ", ".join(x.name for x in f.inner(lp))
        raise refuse(ctx, f"{block}.{name} is not an innermost loop ({inner} inside it) — "
                          "vectorize the innermost loop of a nest (reorder or split first to "
                          "make the loop you want innermost)", "loop")
    if ir.var_key(lp.var) in reduce_vars(f.blocks[block]):
        raise refuse(ctx, f"{block}.{name} is a reduction loop of {block} — vectorize a "
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
        raise refuse(ctx, f"unrolling {block}.{name} would write out {total:,} loop "
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
        raise refuse(ctx, f"{target}.{name} is {'' if vec[0] is lp else 'inside '}a vectorized "
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
        raise refuse(ctx, f"{block} {what} (it reads {reads}) — {hint}", "target_block")
    if reduce_vars(mine):
        raise refuse(ctx, f"{block} is a reduction over a window of its input: TVM 0.27 "
                          f"cannot compute it under its producer's loops correctly (terms "
                          f"get dropped) — fuse the other way: compute_at {target} under "
                          f"{block}'s loops", "block")
    if is_pad(mine):
        raise refuse(ctx, f"{block} pads its input: its zero border does not come from "
                          f"{target}, so under {target}'s loops the border is never written "
                          f"— compute_at {block} under its consumer instead, or "
                          f"compute_inline it", "block")
    if ir.var_key(lp.var) in reduce_vars(theirs):
        raise refuse(ctx, f"{target}.{name} is a reduction loop of {target}: under it "
                          f"{target}'s values are not finished — pick a spatial loop "
                          f"of {target}", "target_loop")


def _reverse_compute_inline(f: Facts, a: dict, ctx: str) -> None:
    block = a["block"]
    mine = f.blocks[block]
    for buffer in mine.reads:
        writers = f.writers(buffer)
        others = [r for r in f.readers(buffer) if r != block]
        if writers and others and buffer not in f.params:
            raise refuse(ctx, f"{buffer} is also read by {', '.join(others)}: inlining "
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
        raise refuse(ctx, f"{unused[0]} is a loop of the block {block} was computed at, not "
                          f"one of {block}'s own: its initialization would run once while "
                          f"its update repeats — {hint}", "loop")
    if (again := _repeats(mine, nest)) is not None:
        raise refuse(ctx, f"{block} is computed again for the same elements under "
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
        raise refuse(ctx, f"{block} {side}s {len(buffers)} buffer(s) ({', '.join(buffers)}): "
                          f"there is no {side} buffer {index}", "buffer")
    buffer = buffers[index]
    if buffer in f.params:
        copy = "cache_read" if side == "read" else "cache_write"
        raise refuse(ctx, f"{buffer} is an argument of the kernel: its layout is fixed by "
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
        raise refuse(ctx, f"{block} {side}s {len(buffers)} buffer(s) ({', '.join(buffers)}): "
                          f"there is no {side} buffer {index}", "buffer")
    name = f"{buffers[index]}_{a['storage_scope']}"
    if name in f.blocks:
        raise refuse(ctx, f"a block {name} exists already (a {a['storage_scope']} copy of "
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

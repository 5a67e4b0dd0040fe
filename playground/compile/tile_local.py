"""Tile-local fusion: tile-sized intermediates without border predicates (a TIR pipeline).

When a producer is ``compute_at`` a consumer's tile loop, TensorIR clips the producer's
region to the image with a block predicate (``T.where``). The clipped region's extent then
depends on the tile loop, so ``CompactBufferAllocation`` keeps the intermediate at full image
size, and inside 2-D tiles the predicate scalarises the vector loops. This pass drops those
predicates where it can prove that the extra (out-of-image) iterations are harmless, then
compacts with ``is_strict=False`` so every intermediate allocated under the tile loop shrinks
to the unclipped region one tile touches (its indices offset by the tile's origin).

Why dropping is safe where it is dropped: an in-image element of any buffer is computed, as
before, from in-image elements only (the original program reads in bounds). The new
iterations only write out-of-image positions of tile-local buffers, which only other new
iterations read: their values never reach the output. A predicate is kept, and the reason
recorded, when a new iteration could do harm:

* it writes a buffer that is not allocated under a loop (a function output, or an
  intermediate shared by tiles): it would write outside that buffer;
* it reads a buffer that is not tile-local (the chain's input, a residual, a per-pixel
  parameter) at an index not provably in bounds (guards such as a pad's ``if_then_else``
  count);
* the predicate clips a reduction axis (dropping it would add terms to in-image results);
* a spatial axis it extends is not written as a plain index of its own (after a layout
  change an out-of-image iteration could alias an in-image element).

What goes is the border's part of a predicate: a split's loop guard joined to it (the last
round of a cooperative copy that the threads do not divide) stays, so that round stays within
its tile, unless it would scalarise a vector loop and its extra round provably writes only
new elements past the tile (:func:`_border_free`).

The decisions are stored on the function as the attribute :data:`TILE_LOCAL_ATTR`, so the
lowered TIR shows which blocks lost their predicate and why the others kept theirs.

This module imports only tvm, :mod:`playground.compile.pad_taps` and
:mod:`playground.compile.strided_loads` (which import only tvm): exported scripts embed all
three verbatim and build with
``tvm.compile(mod, target=target, tir_pipeline=TILE_LOCAL_PIPELINE)``.
"""

import tvm
from tvm import s_tir, tirx

from playground.compile.pad_taps import (
    PADDING_TAPS,
    conjuncts_of,
    is_true,
    same_structure,
    var_id,
)
from playground.compile.strided_loads import strided_loads

TILE_LOCAL_PIPELINE = "playground_tile_local"
TILE_LOCAL_ATTR = "playground.tile_local"


def _before_plan():
    """The passes TVM's default pipeline runs up to buffer placement, in its order."""
    t = s_tir.transform
    return [t.CanonicalizeLoop(), t.LowerCrossThreadReduction(), t.LowerInitBlock(),
            t.PlanAndUpdateBufferAllocationLocation()]


def _compact():
    """The rest of the default pipeline's passes up to compaction, which here is not strict
    (a region may start before the buffer's first element: the ring outside the image)."""
    t = s_tir.transform
    return [t.ConvertBlocksToOpaque(), t.LiftThreadBinding(),
            t.ManifestSharedMemoryLocalStage(), t.CompactBufferAllocation(is_strict=False)]


def _loads(expr, guards, out) -> None:
    """Collect (load, guard conditions) in ``expr``; the then-branch of an ``if_then_else``
    or ``Select`` is guarded by its condition. (TVM 0.27 names a load ``TensorLoad``, with
    the buffer in ``source``.)"""
    if isinstance(expr, tvm.ir.TensorLoad):
        out.append((expr, guards))
        for index in expr.indices:
            _loads(index, guards, out)
    elif isinstance(expr, tvm.ir.Call):
        if str(expr.op.name if hasattr(expr.op, "name") else "").endswith("if_then_else"):
            cond, then, other = expr.args
            _loads(cond, guards, out)
            _loads(then, (*guards, cond), out)
            _loads(other, guards, out)
        else:
            for arg in expr.args:
                _loads(arg, guards, out)
    elif isinstance(expr, tirx.Select):
        _loads(expr.condition, guards, out)
        _loads(expr.true_value, (*guards, expr.condition), out)
        _loads(expr.false_value, guards, out)
    elif isinstance(expr, tirx.Ramp):
        _loads(expr.base, guards, out)
        _loads(expr.stride, guards, out)
    elif isinstance(expr, tirx.Let):
        _loads(expr.value, guards, out)
        _loads(expr.body, guards, out)
    elif isinstance(expr, tirx.Cast | tirx.Broadcast):
        _loads(expr.value, guards, out)
    elif hasattr(expr, "a"):  # binary operators, comparisons, Not
        _loads(expr.a, guards, out)
        if hasattr(expr, "b"):
            _loads(expr.b, guards, out)


def _body_loads(stmt, guards, out, loops) -> bool:
    """Loads of a block body (with their guards, and loops met inside); False when the body
    holds something this analysis does not read (a nested block)."""
    if isinstance(stmt, tirx.BufferStore):
        _loads(stmt.value, guards, out)
        for index in stmt.indices:
            _loads(index, guards, out)
        return True
    if isinstance(stmt, tirx.Evaluate):
        _loads(stmt.value, guards, out)
        return True
    if isinstance(stmt, tirx.SeqStmt):
        return all(_body_loads(s, guards, out, loops) for s in stmt.seq)
    if isinstance(stmt, tirx.For):
        loops.append(stmt)
        return _body_loads(stmt.body, guards, out, loops)
    if isinstance(stmt, tirx.IfThenElse):
        _loads(stmt.condition, guards, out)
        ok = _body_loads(stmt.then_case, (*guards, stmt.condition), out, loops)
        return ok and (stmt.else_case is None
                       or _body_loads(stmt.else_case, guards, out, loops))
    return False


def _in_bounds(analyzer, load, guards) -> bool:
    """Whether every index of ``load`` is within its buffer under ``guards``."""
    def check() -> bool:
        for index, extent in zip(load.indices, load.source.shape, strict=True):
            if not isinstance(extent, tirx.IntImm) or isinstance(index, tirx.Ramp):
                return False
            bound = analyzer.const_int_bound(index)
            if bound.min_value < 0 or bound.max_value >= int(extent.value):
                return False
        return True

    if not guards:
        return check()
    with analyzer.constraint_scope(tirx.all(*guards)):
        return check()


def _decide(realize, loops, local, analyzer) -> str:
    """Why the predicate of ``realize`` must stay, or "" when it can go."""
    block = realize.block
    for region in block.writes:
        if not any(region.source.same_as(b) for b in local):
            return (f"writes {region.source.name}, which is not allocated under a loop "
                    "(an output, or shared by tiles)")
    for loop in loops:
        analyzer.bind(loop.loop_var, tvm.ir.Range.from_min_extent(loop.min, loop.extent))
    extended = []
    for iv, value in zip(block.iter_vars, realize.iter_values, strict=True):
        bound = analyzer.const_int_bound(value)
        lo, hi = int(iv.dom.min), int(iv.dom.min) + int(iv.dom.extent) - 1
        if bound.min_value < lo or bound.max_value > hi:
            if int(iv.iter_type) != tirx.IterVar.DataPar:
                return f"its predicate clips the reduction axis {iv.var.name}"
            extended.append(iv)
        analyzer.bind(iv.var, tvm.ir.Range(bound.min_value, bound.max_value + 1))
    for iv in extended:
        for region in block.writes:
            plain = any(isinstance(r.min, tirx.Var) and r.min.same_as(iv.var)
                        and int(iv.dom.min) == 0 and isinstance(extent, tirx.IntImm)
                        and int(extent.value) == int(iv.dom.extent)
                        for r, extent in zip(region.region, region.source.shape, strict=True))
            if not plain:
                return (f"it writes {region.source.name} without {iv.var.name} as an index of "
                        "its own (a layout change could alias an in-image element)")
    found, inner = [], []
    if not _body_loads(block.body, (), found, inner):
        return "its body holds nested blocks"
    for loop in inner:
        analyzer.bind(loop.loop_var, tvm.ir.Range.from_min_extent(loop.min, loop.extent))
    for load, guards in found:
        if any(load.source.same_as(b) for b in local):
            continue
        if not _in_bounds(analyzer, load, guards):
            return (f"it reads {load.source.name} unguarded outside its bounds at the "
                    "border (an unpadded window, a residual add or another per-pixel read "
                    "of a buffer that is not tile-local)")
    return ""


def decisions(func) -> list[tuple[str, str]]:
    """(block name, reason kept or "") for every predicated block under a loop of ``func``
    (a PrimFunc after ``PlanAndUpdateBufferAllocationLocation``)."""
    out: list[tuple[str, str]] = []

    def visit(stmt, loops, local) -> None:
        if isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s, loops, local)
        elif isinstance(stmt, tirx.For):
            visit(stmt.body, (*loops, stmt), local)
        elif isinstance(stmt, s_tir.SBlockRealize):
            block = stmt.block
            if loops and block.alloc_buffers:
                local = (*local, *block.alloc_buffers)
            if loops and not is_true(stmt.predicate):
                out.append((block.name_hint,
                            _decide(stmt, loops, local, tvm.sym.Analyzer())))
            visit(block.body, loops, local)
        elif isinstance(stmt, tirx.IfThenElse):
            visit(stmt.then_case, loops, local)
            if stmt.else_case is not None:
                visit(stmt.else_case, loops, local)
        elif isinstance(stmt, tirx.AttrStmt):
            visit(stmt.body, loops, local)
        # a binding (tirx.Bind, TVM 0.27's LetStmt) has no body: its scope is the statements
        # after it in the same sequence, which the SeqStmt branch visits

    visit(func.body, (), ())
    names = [name for name, _ in out]
    return [(name, reason or ("" if names.count(name) == 1 and name else
                              "its block name is not unique"))
            for name, reason in out]


def predicate_decisions(mod) -> list[tuple[str, str]]:
    """What the step decides for ``mod``'s ``main`` (a scheduled module): (block, reason the
    predicate is kept, or "" where it is dropped), without lowering further."""
    return decisions(tvm.transform.Sequential(_before_plan())(mod)["main"])


def _border_free(realize, loops, outer=frozenset()):
    """The predicate of ``realize`` without its border terms (True when nothing is left);
    ``outer``: the identities (:func:`var_id`) of the loops around the allocation of what the
    block writes (the tile loops).

    A block's predicate can join two kinds of terms: the border's (an iteration's indices
    within the image, which :func:`_decide` showed harmless to drop) and a split's loop guard
    (the last round of a loop that its split factor does not divide). A term goes when the
    block's iteration domain and the terms kept imply it (dropping it then only admits
    iterations outside the domain) and it holds a tile loop: a term over the loops inside the
    tile alone does not move with the tile, so it keeps the buffer tile-sized and stays (the
    last round of a cooperative copy keeps its guard, and the shared tile its window). Terms
    over a vectorized loop are the exception both ways: TVM would test them lane by lane,
    scalarising the vector, so they go where implied, and a guard goes too where every loop it
    holds indexes the block (its extra round computes new elements past the tile, which only
    other extra rounds read). A guard over loops that do not index the block always stays: its
    extra rounds would repeat in-tile elements from what lies past the tile (a schedule fuzz
    case: a write-back, image index 0, ran four times under a split unit loop and stored
    garbage). Every dropped term is checked against the final kept set (a term dropped early
    may have leaned on one dropped later)."""
    block = realize.block
    analyzer = tvm.sym.Analyzer()
    for loop in loops:
        analyzer.bind(loop.loop_var, tvm.ir.Range.from_min_extent(loop.min, loop.extent))
    inside = [bound for iv, value in zip(block.iter_vars, realize.iter_values, strict=True)
              for bound in (int(iv.dom.min) <= value,
                            value < int(iv.dom.min) + int(iv.dom.extent))]
    # the analyzer rewrites a constraint before it matches it, so a term that is one of the
    # bounds is also recognised by its simplified form
    simple = [analyzer.simplify(bound) for bound in inside]
    indexing = {var_id(v) for value in realize.iter_values
                for v in tirx.analysis.undefined_vars(value)}
    vectors = {var_id(lp.loop_var) for lp in loops
               if int(lp.kind) == int(tirx.ForKind.VECTORIZED)}

    def held_by(term) -> set:
        return {var_id(v) for v in tirx.analysis.undefined_vars(term)}

    def implied(term, kept) -> bool:
        plain = analyzer.simplify(term)
        if any(same_structure(plain, bound) for bound in simple):
            return True
        with analyzer.constraint_scope(tirx.all(*inside, *kept)):
            return analyzer.can_prove(term)

    def vector_guard(term) -> bool:
        held = held_by(term)
        return bool(held & vectors) and held <= indexing

    def may_go(term, kept) -> bool:
        held = held_by(term)
        if not held & (vectors | outer):
            return False
        return vector_guard(term) or implied(term, kept)

    terms = conjuncts_of(realize.predicate)
    kept = list(terms)
    for term in terms:
        rest = [t for t in kept if not t.same_as(term)]
        if may_go(term, rest):
            kept = rest
    while True:  # a term that leaned on a term dropped after it comes back
        back = [t for t in terms if not any(t.same_as(k) for k in kept)
                and not may_go(t, kept)]
        if not back:
            break
        kept.append(back[0])
    kept = [t for t in terms if any(t.same_as(k) for k in kept)]
    return tirx.all(*kept) if kept else tirx.const(True, "bool")


def _strip(stmt, names, loops=(), guarded=None, allocated=()):
    """``stmt`` with the border terms of the predicates of the blocks named in ``names``
    dropped (:func:`_border_free`); ``loops``: the loops around ``stmt``; ``allocated``:
    (buffer, loops around its allocation) of the buffers allocated around it. The names of
    blocks that keep a term are added to ``guarded``."""
    def again(s, inner=loops, alloc=allocated):
        return _strip(s, names, inner, guarded, alloc)

    if isinstance(stmt, tirx.SeqStmt):
        seq = [again(s) for s in stmt.seq]
        same = all(a.same_as(b) for a, b in zip(seq, stmt.seq, strict=True))
        return stmt if same else tirx.SeqStmt(seq)
    if isinstance(stmt, tirx.For):
        body = again(stmt.body, (*loops, stmt))
        return stmt if body.same_as(stmt.body) else tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
            stmt.annotations)
    if isinstance(stmt, s_tir.SBlockRealize):
        b = stmt.block
        allocated = (*allocated, *((buf, loops) for buf in b.alloc_buffers))
        body = again(b.body, loops, allocated)
        block = b if body.same_as(b.body) else s_tir.SBlock(
            b.iter_vars, b.reads, b.writes, b.name_hint, body, b.init, b.alloc_buffers,
            b.match_buffers, b.annotations)
        if b.name_hint not in names:
            return stmt if block.same_as(b) else s_tir.SBlockRealize(
                stmt.iter_values, stmt.predicate, block)
        around = [at for region in b.writes for buf, at in allocated
                  if buf.same_as(region.source)]
        outer = frozenset(var_id(lp.loop_var) for lp in max(around, key=len, default=loops))
        predicate = _border_free(stmt, loops, outer)
        if not is_true(predicate) and guarded is not None:
            guarded.add(b.name_hint)
        return s_tir.SBlockRealize(stmt.iter_values, predicate, block)
    if isinstance(stmt, tirx.IfThenElse):
        then = again(stmt.then_case)
        other = None if stmt.else_case is None else again(stmt.else_case)
        return tirx.IfThenElse(stmt.condition, then, other)
    if isinstance(stmt, tirx.AttrStmt):
        body = again(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(
            stmt.node, stmt.attr_key, stmt.value, body)
    return stmt


def describe(found: list[tuple[str, str]], guarded: frozenset[str] = frozenset()) -> str:
    """The decisions as one line per block (the attribute's text); ``guarded``: blocks that
    kept terms over the tile's own loops (:func:`_border_free`)."""
    if not found:
        return "no predicated block under a tile loop"
    within = "predicate dropped but for terms over the tile's own loops, tile-local"
    return "; ".join(
        f"{name}: predicate kept, {reason}" if reason else
        f"{name}: {within}" if name in guarded else
        f"{name}: predicate dropped, tile-local" for name, reason in found)


@tvm.transform.module_pass(opt_level=0, name="playground.TileLocal")
def tile_local(mod, ctx):
    """Drop provably harmless border predicates, then compact non-strictly (see module doc).

    A module where no predicate can go is returned unchanged but for the attribute, so that
    TVM's own pipeline lowers it exactly as it would without this pass.
    """
    planned = tvm.transform.Sequential(_before_plan())(mod)
    found_by = {gvar: decisions(func) for gvar, func in planned.functions.items()
                if isinstance(func, tirx.PrimFunc)}
    if not any(not reason for found in found_by.values() for _, reason in found):
        return _with_functions(mod, {gvar: mod[gvar].with_attr(TILE_LOCAL_ATTR, describe(found))
                                     for gvar, found in found_by.items()})
    stripped = {}
    for gvar, found in found_by.items():
        func, guarded = planned[gvar], set()
        body = _strip(func.body, {name for name, reason in found if not reason}, (), guarded)
        stripped[gvar] = func.with_body(body).with_attr(TILE_LOCAL_ATTR,
                                                        describe(found, frozenset(guarded)))
    return tvm.transform.Sequential(_compact())(_with_functions(planned, stripped))


def _with_functions(mod, funcs):
    """A new module: ``mod`` with the functions in ``funcs`` replaced."""
    merged = {gvar: funcs.get(gvar, func) for gvar, func in mod.functions.items()}
    return tvm.IRModule(merged, attrs=mod.attrs)


def tile_local_pipeline():
    """TVM's default TIR pipeline with :func:`tile_local` in front, then the padding taps
    skipped (:mod:`playground.compile.pad_taps`), and after it the strided vector loads read
    contiguously (:mod:`playground.compile.strided_loads`): a pipeline factory for
    ``tvm.tirx.register_tir_pipeline``."""
    default, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("s_tir")
    return (tvm.transform.Sequential([tile_local, PADDING_TAPS, default, strided_loads]),
            finalize_host, finalize_device)


tvm.tirx.register_tir_pipeline(TILE_LOCAL_PIPELINE, tile_local_pipeline)

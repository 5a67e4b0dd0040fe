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

This module imports only tvm: exported scripts embed it verbatim and build with
``tvm.compile(mod, target=target, tir_pipeline=TILE_LOCAL_PIPELINE)``.
"""

import tvm
from tvm import s_tir, tirx

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


def _is_true(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == 1


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
            if loops and not _is_true(stmt.predicate):
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


def _conjuncts(expr) -> list:
    """The terms of a conjunction ``a and b and ...`` (the expression itself otherwise)."""
    if isinstance(expr, tirx.And):
        return _conjuncts(expr.a) + _conjuncts(expr.b)
    return [expr]


def _same(a, b) -> bool:
    """Structural equality (exported scripts may import tvm only, not ``tvm_ffi``)."""
    try:
        tvm.ir.assert_structural_equal(a, b)
    except ValueError:
        return False
    return True


def _border_free(realize, loops):
    """The predicate of ``realize`` without its border terms (True when nothing is left).

    A block's predicate can join two kinds of terms: the border's (an iteration's indices
    within the image, which :func:`_decide` showed harmless to drop) and a split's loop guard
    (the last round of a loop that its split factor does not divide). A term is the border's
    when the block's iteration domain and the terms kept imply it: dropping it only admits
    iterations outside the domain. A guard is kept, with one exception: where it holds a
    vectorized loop (TVM would test it lane by lane, scalarising the vector) and every loop
    it holds indexes the block, the extra round computes new elements of a tile-local buffer
    past the tile, which only other extra rounds read. A guard over loops the block is not
    indexed by always stays: its extra rounds would repeat in-tile elements from what is past
    the tile (a schedule fuzz case: a write-back, image index 0, ran four times under a split
    unit loop and stored garbage). Every dropped border term is checked against the final
    kept set (a term dropped early may have leaned on one dropped later)."""
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
    indexing = {v.name for value in realize.iter_values
                for v in tirx.analysis.undefined_vars(value)}
    vectors = {lp.loop_var.name for lp in loops if int(lp.kind) == int(tirx.ForKind.VECTORIZED)}

    def implied(term, kept) -> bool:
        plain = analyzer.simplify(term)
        if any(_same(plain, bound) for bound in simple):
            return True
        with analyzer.constraint_scope(tirx.all(*inside, *kept)):
            return analyzer.can_prove(term)

    def vector_guard(term) -> bool:
        names = {v.name for v in tirx.analysis.undefined_vars(term)}
        return bool(names & vectors) and names <= indexing

    terms = _conjuncts(realize.predicate)
    kept = [t for t in terms if not vector_guard(t)]
    for term in list(kept):
        rest = [t for t in kept if not t.same_as(term)]
        if implied(term, rest):
            kept = rest
    while True:  # a term that leaned on a term dropped after it comes back
        back = [t for t in terms if not any(t.same_as(k) for k in kept)
                and not vector_guard(t) and not implied(t, kept)]
        if not back:
            break
        kept.append(back[0])
    kept = [t for t in terms if any(t.same_as(k) for k in kept)]
    return tirx.all(*kept) if kept else tirx.const(True, "bool")


def _strip(stmt, names, loops=(), guarded=None):
    """``stmt`` with the border terms of the predicates of the blocks named in ``names``
    dropped (:func:`_border_free`; ``loops``: the loops around ``stmt``); the names of blocks
    that keep a loop guard are added to ``guarded``."""
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_strip(s, names, loops, guarded) for s in stmt.seq]
        same = all(a.same_as(b) for a, b in zip(seq, stmt.seq, strict=True))
        return stmt if same else tirx.SeqStmt(seq)
    if isinstance(stmt, tirx.For):
        body = _strip(stmt.body, names, (*loops, stmt), guarded)
        return stmt if body.same_as(stmt.body) else tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
            stmt.annotations)
    if isinstance(stmt, s_tir.SBlockRealize):
        b = stmt.block
        body = _strip(b.body, names, loops, guarded)
        block = b if body.same_as(b.body) else s_tir.SBlock(
            b.iter_vars, b.reads, b.writes, b.name_hint, body, b.init, b.alloc_buffers,
            b.match_buffers, b.annotations)
        predicate = _border_free(stmt, loops) if b.name_hint in names else stmt.predicate
        if b.name_hint in names and not _is_true(predicate) and guarded is not None:
            guarded.add(b.name_hint)
        if block.same_as(b) and b.name_hint not in names:
            return stmt
        return s_tir.SBlockRealize(stmt.iter_values, predicate, block)
    if isinstance(stmt, tirx.IfThenElse):
        then = _strip(stmt.then_case, names, loops, guarded)
        other = (None if stmt.else_case is None
                 else _strip(stmt.else_case, names, loops, guarded))
        return tirx.IfThenElse(stmt.condition, then, other)
    if isinstance(stmt, tirx.AttrStmt):
        body = _strip(stmt.body, names, loops, guarded)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(
            stmt.node, stmt.attr_key, stmt.value, body)
    return stmt


def describe(found: list[tuple[str, str]], guarded: frozenset[str] = frozenset()) -> str:
    """The decisions as one line per block (the attribute's text); ``guarded``: blocks whose
    split guard stayed."""
    if not found:
        return "no predicated block under a tile loop"
    return "; ".join(
        f"{name}: predicate kept, {reason}" if reason else
        f"{name}: predicate dropped but its loop guard, tile-local" if name in guarded else
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
    """TVM's default TIR pipeline with :func:`tile_local` in front (a pipeline factory for
    ``tvm.tirx.register_tir_pipeline``)."""
    default, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("s_tir")
    return tvm.transform.Sequential([tile_local, default]), finalize_host, finalize_device


tvm.tirx.register_tir_pipeline(TILE_LOCAL_PIPELINE, tile_local_pipeline)

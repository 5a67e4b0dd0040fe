"""Padding taps skipped: a convolution's multiply-adds with a zero of its padding, left out.

A template convolution reads a padded copy of its input (``conv1_pad[..] = if_then_else(in
image, data[..], 0)``), so along the image's border some taps of every window multiply a
zero: at 14x14 with a 3x3 window, one row of taps in 14 rows for each of the top and bottom
output rows (4.8% of the multiply-adds), at 7x7 9.5%. ONNX Runtime's kernels do not compute
them (``benchmarks/ort_padding_taps.py`` measured ONNX Runtime 3-8% faster on a padded conv
than on the same work with the padding given as data), and that was the size of the
playground's remaining losses to it.

This pass splits a reduction nest by the rows of its output: the rows whose window reaches
into the padding get a copy of the nest whose tap loop (the window's ``rh``) runs over the
taps inside the image only, in an ``if`` on the row loop (``if h_0 == 0: ... elif h_0 == 13:
... else: <the nest as it was>``). Each copy has constant loop bounds, so LLVM keeps the
accumulators in registers as before (an ``if`` around the tap loop's body instead measured
30-35% slower on the same kernels: the conditional stores kept them in memory). It splits
only where, for the taps it leaves out, every term the nest adds is exactly zero:

* the nest is one chain of loops around one accumulation ``acc[i] = acc[i] + p * w`` (or
  ``acc[i] + p``, a sum pool; the initialization decomposed out of it), with ``p`` a load of
  a *padded buffer*: one whose only store is ``buf[..] = if_then_else(cond, x, 0.0)``; or
  ``p`` is such an ``if_then_else`` itself (a pad inlined into the conv);
* each term of ``cond`` that bounds one axis of the buffer (``1 <= ax2``, ``ax2 < 15``,
  possibly offset by a loop around the buffer's allocation, as after tile-local compaction)
  is rewritten for the load's index at that axis: where it is false, the element is zero;
* the loops inside the tap loop are taken at their extremes (a tap is left out only where
  it reads the padding for every inner iteration: a tile of rows keeps a tap row that one of
  its rows reads inside the image), and the term must be linear in the tap loop and one loop
  around the nest (the row loop), with no vectorized loop around the nest.

In practice that skips the window rows above and below the image (a column tile is wider
than the padding, so its columns are almost never all outside). The result is the same sum
less terms that are exactly ``0 * w``: bit-identical but for the sign of a zero sum, and
``0 * inf`` or ``0 * nan`` weights (which would have made the sum ``nan``).

What it split is stored on the function as :data:`PAD_TAPS_ATTR` (the lowered TIR shows it).
It runs in the playground's TIR pipeline after the tile-local step
(:mod:`playground.compile.tile_local`) and goes with it when a build turns that off. This
module imports only tvm: exported scripts embed it verbatim.
"""

import tvm
from tvm import s_tir, tirx

PAD_TAPS_ATTR = "playground.padding_taps"


def _plan():
    """TVM's default passes up to opaque blocks, where indices are in loop variables."""
    t = s_tir.transform
    return [t.CanonicalizeLoop(), t.LowerCrossThreadReduction(), t.LowerInitBlock(),
            t.PlanAndUpdateBufferAllocationLocation(), t.ConvertBlocksToOpaque()]


def _is_zero(expr) -> bool:
    return isinstance(expr, tirx.FloatImm) and float(expr.value) == 0.0


def _is_pad(expr) -> bool:
    """Is ``expr`` ``if_then_else(cond, x, 0.0)``?"""
    return (isinstance(expr, tvm.ir.Call) and hasattr(expr.op, "name")
            and str(expr.op.name).endswith("if_then_else") and _is_zero(expr.args[2]))


def conjuncts_of(expr) -> list:
    """The terms of a conjunction ``a and b and ...`` (the expression itself otherwise)."""
    if isinstance(expr, tirx.And):
        return conjuncts_of(expr.a) + conjuncts_of(expr.b)
    return [expr]


def _at_least_zero(term):
    """``term`` as an integer expression ``f`` with ``term`` <=> ``f >= 0``; None if it is
    not a comparison of integers."""
    kinds = {tirx.LE: (1, 0), tirx.LT: (1, 1), tirx.GE: (-1, 0), tirx.GT: (-1, 1)}
    for kind, (sign, strict) in kinds.items():
        if isinstance(term, kind) and "int" in str(term.a.ty):
            diff = term.b - term.a if sign == 1 else term.a - term.b
            return diff - strict if strict else diff
    return None


def var_id(node) -> int:
    """A variable's (or buffer's) identity: two loops may share a name (a write-back's
    ``ax0_1`` inside a split's ``ax0_1``), and ``==`` on TVM expressions builds an
    expression. The same key as :func:`playground.schedule.ir.var_key`, written again
    because this module imports only tvm (exported scripts embed it). A buffer's ``data``
    variable is not stable between lookups in TVM 0.27: buffers are keyed themselves."""
    return hash(node)


def _vars(expr) -> set:
    return {var_id(v) for v in tirx.analysis.undefined_vars(expr)}


def same_structure(a, b) -> bool:
    """Structural equality (exported scripts may import tvm only, not ``tvm_ffi``)."""
    try:
        tvm.ir.assert_structural_equal(a, b)
    except ValueError:
        return False
    return True


def _padded_axes(store, allocated: set) -> list:
    """For a pad store, per axis of its buffer, the terms ``(sign, rest)``:
    ``sign * index + rest >= 0`` wherever an element is not the padding's zero (``rest`` may
    hold the loops around the buffer's allocation, ``allocated``, fixed while it lives)."""
    axes: list[list] = [[] for _ in store.indices]
    analyzer = tvm.sym.Analyzer()
    for term in conjuncts_of(store.value.args[0]):
        f = _at_least_zero(term)
        if f is None:
            continue
        for axis, index in enumerate(store.indices):
            own = _vars(index)
            for sign in (1, -1):
                rest = analyzer.simplify(f - sign * index)
                if own and not (_vars(rest) & own) and _vars(rest) <= allocated:
                    axes[axis].append((sign, rest))
    return axes


def _terms_at(axes: list, indices) -> list:
    """A padded buffer's terms (:func:`_padded_axes`) at a load's ``indices``: each ``>= 0``
    where the element loaded may be nonzero."""
    return [sign * index + rest for index, found in zip(indices, axes, strict=True)
            for sign, rest in found]


def _padded_buffers(func) -> dict:
    """Buffers (by data variable) written once, by a pad store, within their allocation."""
    stores: dict[int, list] = {}
    pads: dict[int, list] = {}

    def walk(stmt, loops, alloc_loops):
        if isinstance(stmt, tirx.For):
            walk(stmt.body, (*loops, stmt.loop_var), alloc_loops)
        elif isinstance(stmt, s_tir.SBlockRealize):
            inner = dict(alloc_loops)
            inner.update({var_id(b): loops for b in stmt.block.alloc_buffers})
            walk(stmt.block.body, loops, inner)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                walk(s, loops, alloc_loops)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, loops, alloc_loops)
            if stmt.else_case is not None:
                walk(stmt.else_case, loops, alloc_loops)
        elif isinstance(stmt, tirx.AttrStmt):
            walk(stmt.body, loops, alloc_loops)
        elif isinstance(stmt, tirx.BufferStore):
            key = var_id(stmt.buffer)
            stores.setdefault(key, []).append(stmt)
            if _is_pad(stmt.value) and key in alloc_loops:
                pads[key] = _padded_axes(stmt, {var_id(v) for v in alloc_loops[key]})

    walk(func.body, (), {})
    return {k: pad for k, pad in pads.items() if len(stores[k]) == 1}


def _zero_terms(store, pads) -> list | None:
    """The terms ``f >= 0`` outside which ``store`` adds exactly zero, or None when it is not
    an accumulation of a padded value."""
    value = store.value
    if not isinstance(value, tirx.Add):
        return None
    for acc, term in ((value.a, value.b), (value.b, value.a)):
        if not (isinstance(acc, tvm.ir.TensorLoad) and acc.source.same_as(store.buffer)
                and all(same_structure(a, b)
                        for a, b in zip(acc.indices, store.indices, strict=True))):
            continue
        factors = [term.a, term.b] if isinstance(term, tirx.Mul) else [term]
        for p in factors:
            if isinstance(p, tvm.ir.TensorLoad) and var_id(p.source) in pads:
                return _terms_at(pads[var_id(p.source)], p.indices)
            if _is_pad(p):
                found = [_at_least_zero(t) for t in conjuncts_of(p.args[0])]
                return [f for f in found if f is not None]
    return None


def _only_store(stmt):
    """The one store in ``stmt`` through loops and plain opaque blocks, else None."""
    while True:
        if isinstance(stmt, tirx.For):
            stmt = stmt.body
        elif isinstance(stmt, s_tir.SBlockRealize) and not stmt.block.alloc_buffers \
                and stmt.block.init is None and is_true(stmt.predicate):
            stmt = stmt.block.body
        elif isinstance(stmt, tirx.BufferStore):
            return stmt
        else:
            return None


def _is_one(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == 1


def is_true(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == 1


def _inner_loops(stmt) -> list:
    out = []
    while not isinstance(stmt, tirx.BufferStore):
        if isinstance(stmt, tirx.For):
            out.append(stmt)
            stmt = stmt.body
        else:
            stmt = stmt.block.body
    return out


def _chain(stmt) -> list:
    """The loops of a nest that is one chain of loops (and plain opaque blocks) around one
    store, outer first; [] when ``stmt`` is not such a nest."""
    return _inner_loops(stmt) if _only_store(stmt) is not None else []


def _linear(f, tap, row, analyzer):
    """``(a, b, c)`` with ``f == a * tap + b * row + c`` (integers), else None."""
    found = tvm.sym.detect_linear_equation(analyzer.simplify(f), [tap, row])
    if len(found) != 3 or not all(isinstance(x, tirx.IntImm) for x in found):
        return None
    return tuple(int(x.value) for x in found)


def _tap_loop(nest, terms, outer_loops, analyzer):
    """(tap loop, row loop, [(a, b, c)]) for a nest whose zero terms read, once the loops
    inside one loop of the nest are taken at their extremes, ``a * tap + b * row + c >= 0``:
    ``tap`` a serial loop of the nest (the window's ``rh``), ``row`` one loop around the nest
    (the tile's rows). None when no loop of the nest fits."""
    for i, loop in enumerate(nest):
        if int(loop.kind) != int(tirx.ForKind.SERIAL) or _is_one(loop.extent) or not (
                isinstance(loop.min, tirx.IntImm) and isinstance(loop.extent, tirx.IntImm)):
            continue
        inner = {lp.loop_var: tvm.sym.IntervalSet(lp.min, lp.min + lp.extent - 1)
                 for lp in nest[i + 1:]}
        found, row = [], None
        for f in terms:
            high = analyzer.int_set(f, inner).max_value
            used = {var_id(v): v for v in tirx.analysis.undefined_vars(high)}
            if var_id(loop.loop_var) not in used or any(
                    var_id(lp.loop_var) in used for lp in nest[:i]):
                continue
            others = [v for k, v in used.items() if k != var_id(loop.loop_var)]
            if len(others) != 1 or not any(lp.loop_var.same_as(others[0])
                                           for lp in outer_loops):
                continue
            if row is not None and not row.same_as(others[0]):
                return None
            row = others[0]
            line = _linear(high, loop.loop_var, row, analyzer)
            if line is None:
                return None
            found.append(line)
        if found:
            return loop, next(lp for lp in outer_loops if lp.loop_var.same_as(row)), found
    return None


def _with_body(stmt, body):
    """A ``For`` or an ``SBlockRealize`` like ``stmt`` around ``body`` instead."""
    if isinstance(stmt, tirx.For):
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body,
                        stmt.thread_binding, stmt.annotations)
    b = stmt.block
    block = s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint, body, b.init,
                         b.alloc_buffers, b.match_buffers, b.annotations)
    return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, block)


def _with_extent(stmt, loop, low, high):
    """The nest ``stmt`` with ``loop`` running over ``[low, high)`` only."""
    if stmt.same_as(loop):
        return tirx.For(stmt.loop_var, tirx.IntImm("int32", low),
                        tirx.IntImm("int32", high - low), stmt.kind,
                        _with_extent(stmt.body, loop, low, high), stmt.thread_binding,
                        stmt.annotations)
    if isinstance(stmt, tirx.For):
        return _with_body(stmt, _with_extent(stmt.body, loop, low, high))
    if isinstance(stmt, s_tir.SBlockRealize):
        return _with_body(stmt, _with_extent(stmt.block.body, loop, low, high))
    return stmt


#: At most this many border versions of a nest (each a copy of its code).
MAX_VERSIONS = 6


def _versions(nest_root, outer_loops, pads, analyzer):
    """The nest at ``nest_root`` split by rows: (condition, nest) pairs for the rows whose
    window reaches into the padding, each with the tap loop narrowed to the taps that read
    inside the image; None when there is nothing to split (see the module doc)."""
    if any(int(lp.kind) == int(tirx.ForKind.VECTORIZED) for lp in outer_loops):
        return None  # a branch inside a vector loop would be scalarised
    nest = _chain(nest_root)
    terms = _zero_terms(_only_store(nest_root), pads) if nest else None
    if not terms:
        return None
    found = _tap_loop(nest, terms, outer_loops, analyzer)
    if found is None:
        return None
    tap, row, lines = found
    t0, tn = int(tap.min.value), int(tap.extent.value)
    if not isinstance(row.min, tirx.IntImm) or not isinstance(row.extent, tirx.IntImm):
        return None
    r0, rn = int(row.min.value), int(row.extent.value)
    runs: list = []  # [first row, last row + 1, (low, high)]
    for r in range(r0, r0 + rn):
        taps = [t for t in range(t0, t0 + tn) if all(a * t + b * r + c >= 0
                                                     for a, b, c in lines)]
        span = (taps[0], taps[-1] + 1) if taps else (t0, t0)
        if taps and taps != list(range(span[0], span[1])):
            return None  # not one run of taps
        if runs and runs[-1][2] == span and runs[-1][1] == r:
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1, span])
    border = [run for run in runs if run[2] != (t0, t0 + tn)]
    if not border or len(border) > MAX_VERSIONS:
        return None
    out = []
    for first, end, (low, high) in border:
        cond = tirx.all(row.loop_var >= first, row.loop_var < end) if end - first > 1 \
            else row.loop_var == first
        body = _with_extent(nest_root, tap, low, high) if high > low else tirx.Evaluate(0)
        out.append((cond, body))
    return out, str(tap.loop_var.name), str(row.loop_var.name)


def _split_rows(stmt, outer, pads, analyzer, found):
    """``stmt`` with border rows split off (:func:`_versions`); ``found`` collects what."""
    def again(s, loops=outer):
        return _split_rows(s, loops, pads, analyzer, found)

    if isinstance(stmt, tirx.For):
        analyzer.bind(stmt.loop_var, tvm.ir.Range.from_min_extent(stmt.min, stmt.extent),
                      allow_override=True)
        split = _versions(stmt, outer, pads, analyzer)
        if split is not None:
            versions, tap, row = split
            found.append((str(_only_store(stmt).buffer.name), tap, row))
            result = stmt
            for cond, body in reversed(versions):
                result = tirx.IfThenElse(cond, body, result)
            return result
        if _chain(stmt):
            return stmt  # one nest: split whole or not at all (never inside its loops)
        body = again(stmt.body, (*outer, stmt))
        return stmt if body.same_as(stmt.body) else _with_body(stmt, body)
    if isinstance(stmt, s_tir.SBlockRealize):
        body = again(stmt.block.body)
        return stmt if body.same_as(stmt.block.body) else _with_body(stmt, body)
    if isinstance(stmt, tirx.SeqStmt):
        seq = [again(s) for s in stmt.seq]
        same = all(a.same_as(b) for a, b in zip(seq, stmt.seq, strict=True))
        return stmt if same else tirx.SeqStmt(seq)
    if isinstance(stmt, tirx.IfThenElse):
        then = again(stmt.then_case)
        other = None if stmt.else_case is None else again(stmt.else_case)
        same = then.same_as(stmt.then_case) and (other is None
                                                  or other.same_as(stmt.else_case))
        return stmt if same else tirx.IfThenElse(stmt.condition, then, other)
    if isinstance(stmt, tirx.AttrStmt):
        body = again(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(
            stmt.node, stmt.attr_key, stmt.value, body)
    return stmt


def describe_taps(found: list[tuple[str, str, str]]) -> str:
    if not found:
        return "no padding taps skipped (no accumulation of a zero-padded value in a nest)"
    return "; ".join(f"{buf}: rows {row} whose taps {tap} reach the padding's zeros split off, "
                     f"{tap} narrowed to the taps inside the image" for buf, tap, row in found)


def skip_padding_taps(mod, ctx):
    """Put the guards in (see the module doc). A module with nothing to guard is returned as
    it was but for the attribute, so TVM lowers it exactly as it would without this pass."""
    planned = tvm.transform.Sequential(_plan())(mod)
    out, any_found = {}, False
    for gvar, func in planned.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        found: list[tuple[str, str]] = []
        body = _split_rows(func.body, (), _padded_buffers(func), tvm.sym.Analyzer(), found)
        any_found = any_found or bool(found)
        out[gvar] = (func.with_body(body), describe_taps(found))
    source = planned if any_found else mod
    funcs = {gvar: (fn if any_found else source[gvar]).with_attr(PAD_TAPS_ATTR, text)
             for gvar, (fn, text) in out.items()}
    merged = {gvar: funcs.get(gvar, func) for gvar, func in source.functions.items()}
    result = tvm.IRModule(merged, attrs=source.attrs)
    # the versions of a nest define its loop variables again: give each copy its own
    return tvm.tirx.transform.ConvertSSA()(result) if any_found else result


#: The pass itself, for a pipeline (``tvm.transform.Sequential``).
PADDING_TAPS = tvm.transform.module_pass(skip_padding_taps, opt_level=0,
                                        name="playground.PaddingTaps")

"""Strided vector loads read as one contiguous load and a shuffle (a lowering step).

A vector of ``L`` output columns of a stride-``s`` window layer reads input columns ``s``
apart: after TVM's vectorizer a ``buf[T.Ramp(base, s, L)]`` load, which LLVM turns into ``L``
scalar loads and ``L - 1`` lane inserts (on MobileNet's depthwise 3x3/2 with its input in
rows, 8 ``vmovss`` and 7 ``vinsertps`` per 8-wide multiply-add). This pass rewrites each such
load as the contiguous span it lies in and a shuffle that picks every ``s``-th element:
``T.Shuffle([buf[T.Ramp(base, 1, s * L)]], [0, s, 2s, ...])``, which LLVM emits as one wide
load and one permute per vector.

Why it is safe: the span is ``s * L`` elements only where the pass proves (from the loop
bounds) that the buffer holds all of them: it starts at the last multiple of ``s`` at or
before the first element read where that offset is a constant (a 2x2/2 pool's odd columns
then read the very span its even ones read, and LLVM loads it once, or keeps it in registers),
else at the first element read, else ``s - 1`` elements before it (ending at the last
element read); elsewhere it is ``s * (L - 1) + 1``, from the strided load's first element to its
last, so every element it reads lies between two the original program reads from the same
buffer (LLVM then splits it into a few narrower loads). Left as they are: strides other than 2 to
:data:`MAX_STRIDE`, spans over :data:`MAX_SPAN` lanes, buffers of vector elements, and loads
inside calls (``if_then_else``'s arguments are evaluated on their own
terms).

It runs last in the playground's TIR pipeline (after TVM's vectorizer, which makes the
loads it rewrites), goes with the tile-local step when a build turns that off, and stores
what it rewrote on each function as :data:`STRIDED_LOADS_ATTR`. This module imports only
tvm: exported scripts embed it verbatim.
"""

import tvm
from tvm import tirx

STRIDED_LOADS_ATTR = "playground.strided_loads"
#: Strides rewritten: 2 (stride-2 convs and pools), 3, 4.
MAX_STRIDE = 4
#: The widest contiguous span read for one strided load, in elements.
MAX_SPAN = 64

_LOAD = tvm.ir.TensorLoad  # the class of what tirx.BufferLoad(...) builds in TVM 0.27
_BINARY = (tirx.Add, tirx.Sub, tirx.Mul, tirx.Div, tirx.Mod, tirx.FloorDiv, tirx.FloorMod,
           tirx.Min, tirx.Max, tirx.EQ, tirx.NE, tirx.LT, tirx.LE, tirx.GT, tirx.GE, tirx.And,
           tirx.Or)


def _const(expr):
    """The value of an integer constant (an ``IntImm`` or a plain int), else None."""
    if isinstance(expr, int):
        return expr
    return int(expr.value) if isinstance(expr, tirx.IntImm) else None


def _contiguous(load, found, analyzer):
    """``load`` as a contiguous span and a shuffle, when it is a strided vector load this
    pass rewrites (module doc); else None. ``found`` counts the rewrites by stride."""
    if len(load.indices) != 1 or not isinstance(load.indices[0], tirx.Ramp):
        return None
    if tvm.DataType(load.source.dtype).lanes != 1:
        return None
    ramp = load.indices[0]
    stride, lanes = _const(ramp.stride), _const(ramp.lanes)
    if stride is None or lanes is None or not 2 <= stride <= MAX_STRIDE:
        return None
    span = stride * (lanes - 1) + 1
    if span > MAX_SPAN:
        return None
    shape, base, first = load.source.shape, ramp.base, 0
    if len(shape) == 1 and stride * lanes <= MAX_SPAN:
        # a whole number of vectors (one wide load, one permute) where the buffer provably
        # holds them: from the last multiple of the stride at or before the first element
        # read (so that the loads of one window's taps, ``s`` apart, share a span: LLVM then
        # loads it once), else from the first element read (``s - 1`` elements past the
        # last), else shifted back to end at the last element read
        phase = _const(analyzer.simplify(tirx.FloorMod(base, stride)))
        for shift in ([phase] if phase else []) + [0, stride - 1]:
            start = analyzer.simplify(base - shift)
            if analyzer.can_prove(start >= 0) and analyzer.can_prove(
                    start + stride * lanes <= shape[0]):
                span, base, first = stride * lanes, start, shift
                break
    found[stride] = found.get(stride, 0) + 1
    wide = tirx.BufferLoad(load.source, [tirx.Ramp(base, 1, span)])
    return tirx.Shuffle([wide], [tirx.IntImm("int32", first + stride * i)
                                 for i in range(lanes)])


def _expr(e, found, analyzer):
    """``e`` with its strided loads rewritten (the same object where nothing changed)."""
    if isinstance(e, _LOAD):
        indices = [_expr(i, found, analyzer) for i in e.indices]
        if any(not a.same_as(b) for a, b in zip(indices, e.indices, strict=True)):
            e = tirx.BufferLoad(e.source, indices)
        wide = _contiguous(e, found, analyzer)
        return e if wide is None else wide
    if isinstance(e, _BINARY):
        a, b = _expr(e.a, found, analyzer), _expr(e.b, found, analyzer)
        return e if a.same_as(e.a) and b.same_as(e.b) else type(e)(a, b)
    if isinstance(e, tirx.Not):
        a = _expr(e.a, found, analyzer)
        return e if a.same_as(e.a) else tirx.Not(a)
    if isinstance(e, tirx.Cast):
        v = _expr(e.value, found, analyzer)
        return e if v.same_as(e.value) else tirx.Cast(e.dtype, v)
    if isinstance(e, tirx.Select):
        parts = [_expr(x, found, analyzer) for x in (e.condition, e.true_value, e.false_value)]
        same = all(a.same_as(b) for a, b in
                   zip(parts, (e.condition, e.true_value, e.false_value), strict=True))
        return e if same else tirx.Select(*parts)
    if isinstance(e, tirx.Broadcast):
        v = _expr(e.value, found, analyzer)
        return e if v.same_as(e.value) else tirx.Broadcast(v, e.lanes)
    if isinstance(e, tirx.Let):
        v, body = _expr(e.value, found, analyzer), _expr(e.body, found, analyzer)
        return e if v.same_as(e.value) and body.same_as(e.body) else tirx.Let(e.var, v, body)
    return e  # leaves, calls, shuffles, ramps: as they are


def _stmt(s, found, analyzer):
    """``s`` with the strided loads of its expressions rewritten."""
    if isinstance(s, tirx.SeqStmt):
        seq = [_stmt(x, found, analyzer) for x in s.seq]
        return s if all(a.same_as(b) for a, b in zip(seq, s.seq, strict=True)) \
            else tirx.SeqStmt(seq)
    if isinstance(s, tirx.For):
        analyzer.bind(s.loop_var, tvm.ir.Range.from_min_extent(s.min, s.extent),
                      allow_override=True)
        body = _stmt(s.body, found, analyzer)
        return s if body.same_as(s.body) else tirx.For(
            s.loop_var, s.min, s.extent, s.kind, body, s.thread_binding, s.annotations,
            s.step)
    if isinstance(s, tirx.IfThenElse):
        then = _stmt(s.then_case, found, analyzer)
        other = None if s.else_case is None else _stmt(s.else_case, found, analyzer)
        same = then.same_as(s.then_case) and (other is None or other.same_as(s.else_case))
        return s if same else tirx.IfThenElse(s.condition, then, other)
    if isinstance(s, tirx.AttrStmt):
        body = _stmt(s.body, found, analyzer)
        return s if body.same_as(s.body) else tirx.AttrStmt(s.node, s.attr_key, s.value, body)
    if isinstance(s, tirx.While):
        body = _stmt(s.body, found, analyzer)
        return s if body.same_as(s.body) else tirx.While(s.condition, body)
    if isinstance(s, tirx.BufferStore):
        value = _expr(s.value, found, analyzer)
        return s if value.same_as(s.value) else tirx.BufferStore(s.buffer, value, s.indices)
    if isinstance(s, tirx.LetStmt):
        try:  # an index the loads may use; handles and calls are not bound
            analyzer.bind(s.var, s.value, allow_override=True)
        except (TypeError, ValueError, AttributeError):
            pass
        value = _expr(s.value, found, analyzer)
        return s if value.same_as(s.value) else tirx.LetStmt(s.var, value)
    return s  # allocations, declarations, asserts, evaluations: as they are


def describe_loads(found: dict[int, int]) -> str:
    if not found:
        return "no strided vector loads"
    by = ", ".join(f"stride {s}: {n}" for s, n in sorted(found.items()))
    return (f"{sum(found.values())} strided vector loads read as one contiguous load and a "
            f"shuffle ({by})")


def rewrite_func(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with its strided vector loads rewritten and :data:`STRIDED_LOADS_ATTR` set."""
    found: dict[int, int] = {}
    body = _stmt(func.body, found, tvm.sym.Analyzer())
    return func.with_body(body).with_attr(STRIDED_LOADS_ATTR, describe_loads(found))


def _on_cpu(func) -> bool:
    """A function built by LLVM for the CPU (a GPU kernel's shuffles are another matter)."""
    target = func.attrs.get("target") if func.attrs is not None else None
    return target is not None and target.kind.name == "llvm"


@tvm.transform.module_pass(opt_level=0, name="playground.StridedLoads")
def strided_loads(mod, ctx):
    """Rewrite the strided vector loads of every CPU function (module doc)."""
    funcs = {gvar: rewrite_func(f) if isinstance(f, tirx.PrimFunc) and _on_cpu(f) else f
             for gvar, f in mod.functions.items()}
    return tvm.IRModule(funcs, attrs=mod.attrs)

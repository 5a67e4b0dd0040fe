"""Validation builds: every intermediate allocation filled with NaN when it comes into scope.

A kernel that reads memory it never wrote computes whatever that memory held: zeros in one
process, yesterday's tile in another. Such a schedule was seen ``wrong_result`` in the worker
and "correct" in its exported script. Validation builds therefore fill every floating-point
allocation with NaN where it is allocated (a TIR pass run right after ``FlattenBuffer``, i.e.
after ``CompactBufferAllocation`` has shrunk tiles, so tiles keep their real size and are
poisoned on every iteration of the loop that allocates them). Any unwritten element then shows
up as NaN (or as a wrong value, through relu's ``max``), the same way every time.

Timing builds are never poisoned: the fills cost time. This module imports only tvm, so that
exported scripts embed it verbatim and validate exactly as the playground does::

    ex = compile_validation(mod, target)     # poisoned intermediates, to check results
    ex = tvm.compile(mod, target=target)     # the kernel that is timed
"""

import tvm
from tvm import tirx

_FLOAT_BITS = {"float16": 16, "float32": 32, "float64": 64, "bfloat16": 16}


def _fill(buffer):
    """``buffer[i, j, ...] = NaN`` over the whole buffer, as nested serial loops (one loop
    once ``FlattenBuffer`` has made every buffer 1-D)."""
    nan = tirx.const(float("nan"), buffer.dtype)
    index = [tirx.Var(f"nan_{d}", str(extent.ty) if hasattr(extent, "ty") else "int32")
             for d, extent in enumerate(buffer.shape)]
    stmt = tirx.BufferStore(buffer, nan, index)
    for var, extent in reversed(list(zip(index, buffer.shape, strict=True))):
        stmt = tirx.For(var, tirx.const(0, str(var.ty) if hasattr(var, "ty") else "int32"),
                        extent, tirx.ForKind.SERIAL, stmt)
    return stmt


def _poisonable(buffer) -> bool:
    # "shared": a CUDA schedule validated on the CPU (its thread loops made serial) keeps its
    # shared-memory tiles, which must start as NaN like any other
    return str(buffer.dtype) in _FLOAT_BITS and buffer.scope() in ("global", "local", "shared",
                                                                    "")


def _rewrite(stmt):
    """The statement with a NaN fill after every float AllocBuffer (returns ``stmt`` itself
    when nothing below it changes). TVM 0.27's lowered IR is flat: an ``AllocBuffer`` is one
    statement of a ``SeqStmt`` whose later statements are its scope; only loops, ifs and
    attributes have bodies."""
    if isinstance(stmt, tirx.SeqStmt):
        out, changed = [], False
        for s in stmt.seq:
            new = _rewrite(s)
            changed = changed or not new.same_as(s)
            out.append(new)
            if isinstance(s, tirx.AllocBuffer) and _poisonable(s.buffer):
                out.append(_fill(s.buffer))
                changed = True
        return tirx.SeqStmt(out) if changed else stmt
    if isinstance(stmt, tirx.For):
        body = _rewrite(stmt.body)
        if body.same_as(stmt.body):
            return stmt
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body,
                        stmt.thread_binding, stmt.annotations)
    if isinstance(stmt, tirx.While):
        body = _rewrite(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.While(stmt.condition, body)
    if isinstance(stmt, tirx.IfThenElse):
        then = _rewrite(stmt.then_case)
        other = _rewrite(stmt.else_case) if stmt.else_case is not None else None
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other)
    if isinstance(stmt, tirx.AttrStmt):
        body = _rewrite(stmt.body)
        if body.same_as(stmt.body):
            return stmt
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)
    return stmt


@tirx.transform.prim_func_pass(opt_level=0, name="playground.PoisonAllocations")
def poison_allocations(func, mod, ctx):
    """Fill every floating-point global/local allocation with NaN where it is allocated."""
    body = _rewrite(func.body)
    return func if body.same_as(func.body) else func.with_body(body)


def compile_validation(mod, target, pipeline="default"):
    """``tvm.compile`` with every intermediate allocation NaN-filled (validation only), through
    the TIR pipeline named ``pipeline``.

    TVM 0.27 offers no hook to add a pass to its default pipeline (the pass list is built
    inside the pipeline function), so ``tvm.tirx.transform.FlattenBuffer`` is wrapped to run
    :func:`poison_allocations` right after it while this build runs. Not thread-safe: worker
    processes and exported scripts build one module at a time.
    """
    passes = tvm.tirx.transform
    original = passes.FlattenBuffer

    def flatten_then_poison():
        return tvm.transform.Sequential([original(), poison_allocations])

    passes.FlattenBuffer = flatten_then_poison
    try:
        return tvm.compile(mod, target=target, tir_pipeline=pipeline)
    finally:
        passes.FlattenBuffer = original

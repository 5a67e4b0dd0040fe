"""Constant weights: the weight re-layouts run once, before timing, into packed buffers.

In a deployed network the weights are constants: ONNX Runtime packs them into its blocked
layout once, at session start, and a TVM model build folds constant expressions the same way.
A schedule written for one kernel call (``cache_read`` + ``transform_layout`` of a weight)
copies them on every call instead: 9.4 MB for a 512x512x3x3 layer. The ``constant`` build mode
keeps the schedule as it is (a list of plain steps) and splits the scheduled function at build
time into two functions of one module:

* ``pack(data, params..., packed...)``: the top-level loop nests of the schedule whose blocks
  read only the chain's parameters (weights, biases, batch-norm statistics) or what other such
  nests wrote; it writes their results into the ``packed`` buffers, which become arguments;
* ``main(data, params..., output, packed...)``: the rest, reading the packed buffers.

The caller runs ``pack`` once and times only ``main``. A weight copy that a schedule moved
inside a loop of the kernel (``compute_at``) is not hoisted: it stays per call, and
:func:`split_constant_weights` reports which buffers it did hoist. Validation runs both
functions on buffers that start as NaN, so a packed element ``pack`` never writes is caught.

This module imports only tvm and numpy, so that exported scripts embed it verbatim::

    mod, packed = split_constant_weights(sch.mod)      # packed: [(name, shape, dtype)]
    ex = tvm.compile(mod, target=target)
    bufs = pack_once(ex, tensors, packed, dev)          # runs "pack"
    ex["main"](*tensors, out, *bufs)                    # the kernel that is timed
"""

import numpy as np
import tvm
from tvm import s_tir, tirx


def _walk(stmt, visit):
    """Pre-order walk over the statements of a scheduled (not lowered) function."""
    if stmt is None:
        return
    visit(stmt)
    if isinstance(stmt, tirx.SeqStmt):
        for s in stmt.seq:
            _walk(s, visit)
    elif isinstance(stmt, s_tir.stmt.SBlockRealize):
        _walk(stmt.block, visit)
    elif isinstance(stmt, s_tir.stmt.SBlock):
        _walk(stmt.init, visit)
        _walk(stmt.body, visit)
    elif isinstance(stmt, tirx.IfThenElse):
        _walk(stmt.then_case, visit)
        _walk(stmt.else_case, visit)
    elif hasattr(stmt, "body"):
        _walk(stmt.body, visit)


def _accesses(stmt):
    """(names read, names written) by the blocks of ``stmt``, without the buffers those
    blocks allocate themselves."""
    reads, writes, local = set(), set(), set()

    def visit(node):
        if isinstance(node, s_tir.stmt.SBlock):
            reads.update(r.source.name for r in node.reads)
            writes.update(w.source.name for w in node.writes)
            local.update(b.name for b in node.alloc_buffers)

    _walk(stmt, visit)
    return reads - local, writes - local


def _function(params, body, alloc_buffers, attrs, name):
    root = s_tir.stmt.SBlock([], [], [], "root", body, alloc_buffers=alloc_buffers)
    func = tirx.PrimFunc(params, s_tir.stmt.SBlockRealize([], True, root))
    return func.with_attrs(attrs).with_attr("global_symbol", name)


def split_constant_weights(mod):
    """Split ``mod["main"]`` into ``pack`` and ``main`` (see the module docstring).

    Returns ``(module, packed)``: ``packed`` lists ``(name, shape, dtype)`` of the buffers
    ``pack`` writes and ``main`` reads, in argument order. With nothing to hoist the module
    comes back unchanged (``main`` only) and ``packed`` is empty.
    """
    func = mod["main"]
    params = list(func.params)
    constant = {p.name for p in params[1:-1]}  # data first, the output last
    realize = func.body
    root = realize.block
    stmts = list(root.body.seq) if isinstance(root.body, tirx.SeqStmt) else [root.body]
    # Only global buffers can become arguments (a "local" copy stays in the kernel).
    local = {b.name for b in root.alloc_buffers if str(b.ty.storage_scope) != "global"}
    hoisted, kept, made = [], [], set()
    for stmt in stmts:
        reads, writes = _accesses(stmt)
        if writes and reads <= constant | made and not writes & ({p.name for p in params}
                                                                 | local):
            hoisted.append(stmt)
            made |= writes
        else:
            kept.append(stmt)
    kept_reads, kept_writes = set(), set()
    for stmt in kept:
        reads, writes = _accesses(stmt)
        kept_reads |= reads
        kept_writes |= writes
    if not hoisted or not kept or made & kept_writes:
        return mod, []
    packed = [b for b in root.alloc_buffers if b.name in made and b.name in kept_reads]
    packed_names = {b.name for b in packed}
    inner = [b for b in root.alloc_buffers if b.name in made and b.name not in packed_names]
    rest = [b for b in root.alloc_buffers if b.name not in made]
    attrs = dict(func.attrs)
    pack = _function([*params[:-1], *packed], tirx.SeqStmt(hoisted) if len(hoisted) > 1
                     else hoisted[0], inner, attrs, "pack")
    main = _function([*params, *packed], tirx.SeqStmt(kept) if len(kept) > 1 else kept[0],
                     rest, attrs, "main")
    shapes = [(b.name, [int(d) for d in b.ty.shape], str(b.ty.dtype)) for b in packed]
    return tvm.IRModule({"main": main, "pack": pack}), shapes


def pack_once(ex, tensors, packed, dev):
    """Run ``pack`` once on the input tensors (data first, then the parameters) into new
    NaN-filled buffers; returns them, in ``main``'s argument order (after the output)."""
    if not packed:
        return []
    bufs = [tvm.runtime.tensor(np.full(shape, np.nan, dtype=dtype), dev)
            for _, shape, dtype in packed]
    ex["pack"](*tensors, *bufs)
    dev.sync()
    return bufs

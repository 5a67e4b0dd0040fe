"""The one reader of TensorIR: statements, blocks and loops of a function, read in one walk.

Every part of the playground that looks inside a scheduled (or lowered) function reads it
through here: replay (block names, the pickers' loops), the pre-checks, the loop outline, the
GPU checks, the work and traffic analysis. One module knows which statement kinds TVM 0.27
produces and where their sub-statements are (:func:`children`), so that a new kind is taught
once and every reader agrees (an ``if`` is walked into everywhere, or nowhere).

What a walk produces:

* :class:`Loop` -- a ``for``: its name as steps write it (``loops.loop_labels``: the loop
  variable, ``name#k`` for the k-th loop of that name around a block), constant ``min`` and
  ``extent`` (``None`` when symbolic), kind and thread tag. One record per ``For`` node, shared
  by every block under it, so ``loop in block.loops`` and ``a is b`` compare loops.
* :class:`Block` -- a block other than the root: the loops around it (outer first), the guards
  that must hold for it to run (enclosing ``if`` conditions and its ``T.where``), its iteration
  variables' bindings, and its reads, writes and allocations by buffer name.
* :class:`Branch` -- an ``if`` statement (its condition).
* :class:`Node` -- the tree of those three, in program order (:func:`tree`), for views that
  draw the nest.

TVM 0.27 names: blocks are ``s_tir.SBlock`` inside ``s_tir.SBlockRealize``; ``tirx.Bind``
(``LetStmt``'s new name), ``tirx.AllocBuffer`` and ``tirx.DeclBuffer`` have no body (the
statements after them in their ``SeqStmt`` are their scope). Other modules test node classes
with ``isinstance`` against the names exported here, never by ``type(x).__name__``
(``tests/unit/schedule/test_ir.py`` enforces it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import s_tir, tirx

from playground.schedule.loops import loop_labels

# Statement classes of TVM 0.27, for isinstance tests outside this module.
AllocBuffer = tirx.AllocBuffer
AttrStmt = tirx.AttrStmt
BufferStore = tirx.BufferStore
For = tirx.For
IfThenElse = tirx.IfThenElse
SBlock = s_tir.SBlock
SBlockRealize = s_tir.SBlockRealize
SeqStmt = tirx.SeqStmt
Bind = tirx.Bind
Evaluate = tirx.Evaluate
# Expression classes.
And = tirx.And
BufferLoad = tvm.ir.TensorLoad  # the class of what tirx.BufferLoad(...) builds in 0.27
Call = tvm.ir.Call
Cast = tirx.Cast
FloatImm = tirx.FloatImm
IntImm = tirx.IntImm
Not = tirx.Not
Select = tirx.Select
StringImm = tvm.ir.StringImm
Var = tvm.ir.Var

#: ``IterVar`` type code of a reduction axis.
REDUCE = 2


# ----------------------------------------------------------------------------- statements

def children(stmt: Any) -> tuple[Any, ...]:
    """The statements directly inside ``stmt``, in program order (a block's init first)."""
    if isinstance(stmt, SeqStmt):
        return tuple(stmt.seq)
    if isinstance(stmt, SBlockRealize):
        return (stmt.block,)
    if isinstance(stmt, SBlock):
        return tuple(s for s in (stmt.init, stmt.body) if s is not None)
    if isinstance(stmt, IfThenElse):
        return tuple(s for s in (stmt.then_case, stmt.else_case) if s is not None)
    if isinstance(stmt, For | AttrStmt | tirx.While):
        return (stmt.body,)
    return ()  # BufferStore, Evaluate, Bind, AllocBuffer, DeclBuffer, AssertStmt, ...


def statements(stmt: Any) -> Iterator[Any]:
    """Every statement of ``stmt`` (itself first), in program order."""
    stack = [stmt] if stmt is not None else []
    while stack:
        s = stack.pop()
        yield s
        stack.extend(reversed(children(s)))


def body(func_or_sch: Any) -> Any:
    """The body of a PrimFunc, or of the ``main`` of an IRModule or an ``s_tir.Schedule``."""
    if isinstance(func_or_sch, s_tir.Schedule):
        func_or_sch = func_or_sch.mod
    if isinstance(func_or_sch, tvm.IRModule):
        func_or_sch = func_or_sch["main"]
    return func_or_sch.body


def allocations(func_or_sch: Any) -> list[Any]:
    """The buffers blocks allocate (the root block's intermediates first), in program order."""
    return [buf for s in statements(body(func_or_sch)) if isinstance(s, SBlock)
            for buf in s.alloc_buffers]


# ----------------------------------------------------------------------------- expressions

def operands(expr: Any) -> tuple[Any, ...]:
    """The expressions directly inside ``expr`` (none for variables and constants)."""
    if isinstance(expr, tirx.expr.BinaryOpExpr | tirx.expr.CmpExpr | And | tirx.Or):
        return (expr.a, expr.b)
    if isinstance(expr, Not):
        return (expr.a,)
    if isinstance(expr, Select):
        return (expr.condition, expr.true_value, expr.false_value)
    if isinstance(expr, Cast | tirx.Broadcast):
        return (expr.value,)
    if isinstance(expr, tirx.Ramp):
        return (expr.base, expr.stride)
    if isinstance(expr, tirx.Let):
        return (expr.value, expr.body)
    if isinstance(expr, Call):
        return tuple(expr.args)
    if isinstance(expr, BufferLoad):
        return tuple(expr.indices)
    return ()


def subexpressions(expr: Any) -> Iterator[Any]:
    """Every expression of ``expr`` (itself first)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        yield e
        stack.extend(reversed(operands(e)))


def var_key(var: Any) -> int:
    """A stable identity for a TIR variable (Python wrappers differ between lookups)."""
    return int(var.__hash__())


def var_keys(expr: Any) -> set[int]:
    """Keys (:func:`var_key`) of the variables ``expr`` uses."""
    return {var_key(e) for e in subexpressions(expr) if isinstance(e, Var)}


def conjuncts(expr: Any) -> list[Any]:
    """``a && b && c`` as ``[a, b, c]``; a constant true as ``[]``."""
    if isinstance(expr, And):
        return conjuncts(expr.a) + conjuncts(expr.b)
    if isinstance(expr, IntImm) and int(expr.value) == 1:
        return []
    return [expr]


def call_name(expr: Any) -> str:
    """The operator name of a call (``"tirx.if_then_else"``), ``""`` for anything else."""
    return str(getattr(expr.op, "name", "")) if isinstance(expr, Call) else ""


def constant(expr: Any) -> int | None:
    """The value of an integer constant, ``None`` for anything else."""
    return int(expr.value) if isinstance(expr, IntImm) else None


# ----------------------------------------------------------------------------- records

@dataclass(frozen=True, eq=False)
class Loop:
    """A ``for`` of the function; compared by identity (one record per ``For`` node)."""

    name: str  # the step's name for it: the loop variable, with #k for repeats
    var: Any
    min: int | None  # None when not a constant
    extent: int | None
    kind: str  # serial, parallel, vectorized, unrolled, thread_binding
    thread: str  # thread tag ("threadIdx.x") when bound, else ""
    node: Any

    @classmethod
    def of(cls, stmt: Any, outer: tuple[Loop, ...]) -> Loop:
        """The record of ``For`` node ``stmt`` under the loops ``outer``."""
        name = loop_labels([*(lp.var.name for lp in outer), stmt.loop_var.name])[-1]
        tag = stmt.thread_binding.thread_tag if stmt.thread_binding is not None else ""
        return cls(name, stmt.loop_var, constant(stmt.min), constant(stmt.extent),
                   tirx.ForKind(int(stmt.kind)).name.lower(), tag, stmt)


@dataclass(frozen=True, eq=False)
class Block:
    """A block (not the root) where it sits: its loops, guards and iteration bindings."""

    name: str
    loops: tuple[Loop, ...]  # outer to inner
    guards: tuple[Any, ...]  # conjuncts: enclosing if conditions (else: Not), then T.where
    defs: dict[int, Any]  # var_key of an iteration variable (this block's or an outer
    # block's) -> its binding in loop variables
    sblock: Any  # the s_tir.SBlock
    realize: Any  # its SBlockRealize
    leaf: bool  # no block inside it
    reads: tuple[str, ...]  # buffer names
    writes: tuple[str, ...]
    allocs: tuple[str, ...]

    @property
    def is_reduction(self) -> bool:
        return any(int(iv.iter_type) == REDUCE for iv in self.sblock.iter_vars)

    def bindings(self) -> Iterator[tuple[Any, Any]]:
        """(iteration variable, the expression of loop variables bound to it)."""
        yield from zip(self.sblock.iter_vars, self.realize.iter_values, strict=True)


def _through(field: str) -> property:
    return property(lambda self: getattr(self.block, field), doc=f"The block's ``{field}``.")


class AboutBlock:
    """Base of a record that adds facts to one :class:`Block` (its field ``block``): the
    block's name, loops, guards, bindings, reads and writes read through, never copied."""

    block: Block
    name = _through("name")
    loops = _through("loops")
    guards = _through("guards")
    defs = _through("defs")
    reads = _through("reads")
    writes = _through("writes")


@dataclass(frozen=True, eq=False)
class Branch:
    """An ``if`` statement: ``Node.children`` run when ``condition`` holds, ``orelse`` not."""

    condition: Any
    node: Any


@dataclass(frozen=True)
class Node:
    """One level of the loop tree: a loop, a block or an ``if``, and what is inside it."""

    item: Loop | Block | Branch
    children: tuple[Node, ...] = ()
    orelse: tuple[Node, ...] = field(default=())  # a Branch's else part


@dataclass(frozen=True)
class _Context:
    loops: tuple[Loop, ...] = ()
    guards: tuple[Any, ...] = ()
    defs: dict[int, Any] = field(default_factory=dict)


def _read(stmt: Any, ctx: _Context) -> list[Node]:
    """The tree under ``stmt``: the walk every reader of this module shares."""
    if isinstance(stmt, For):
        lp = Loop.of(stmt, ctx.loops)
        inner = _Context((*ctx.loops, lp), ctx.guards, ctx.defs)
        return [Node(lp, tuple(_read(stmt.body, inner)))]
    if isinstance(stmt, IfThenElse):
        then = _Context(ctx.loops, (*ctx.guards, *conjuncts(stmt.condition)), ctx.defs)
        other = _Context(ctx.loops, (*ctx.guards, Not(stmt.condition)), ctx.defs)
        return [Node(Branch(stmt.condition, stmt), tuple(_read(stmt.then_case, then)),
                     tuple(_read(stmt.else_case, other)) if stmt.else_case is not None else ())]
    if isinstance(stmt, SBlockRealize):
        block = stmt.block
        defs = dict(ctx.defs)
        for iv, value in zip(block.iter_vars, stmt.iter_values, strict=True):
            defs[var_key(iv.var)] = value
        guards = (*ctx.guards, *conjuncts(stmt.predicate))
        inner = _read(block, _Context(ctx.loops, guards, defs))
        if block.name_hint == "root":
            return inner
        leaf = not any(isinstance(n.item, Block) for n in _flatten(inner))
        record = Block(str(block.name_hint), ctx.loops, guards, defs, block, stmt, leaf,
                       tuple(str(r.source.name) for r in block.reads),
                       tuple(str(w.source.name) for w in block.writes),
                       tuple(str(b.name) for b in block.alloc_buffers))
        return [Node(record, tuple(inner))]
    return [n for s in children(stmt) for n in _read(s, ctx)]


def _flatten(nodes: Iterable[Node]) -> Iterator[Node]:
    for n in nodes:
        yield n
        yield from _flatten(n.children)
        yield from _flatten(n.orelse)


def tree(func_or_sch: Any) -> list[Node]:
    """The function's loops, blocks and ``if`` statements as a tree (the root block left out)."""
    return _read(body(func_or_sch), _Context())


def blocks(func_or_sch: Any) -> list[Block]:
    """Every block but the root, in program order, with the loops and guards around it."""
    return [n.item for n in _flatten(tree(func_or_sch)) if isinstance(n.item, Block)]


def block_names(func_or_sch: Any) -> list[str]:
    """Names of the blocks in program order (the root excluded; repeats kept)."""
    return [b.name for b in blocks(func_or_sch)]


def loops_below(loop: Loop, among: Iterable[Block]) -> list[Loop]:
    """Loops nested in ``loop`` (any depth, outer first) around the blocks ``among``."""
    out: dict[int, Loop] = {}
    for b in among:
        if loop in b.loops:
            for lp in b.loops[b.loops.index(loop) + 1:]:
                out.setdefault(id(lp), lp)
    return list(out.values())


def blocks_under(loop: Loop, among: Iterable[Block]) -> list[Block]:
    """The blocks of ``among`` inside ``loop`` (at any depth)."""
    return [b for b in among if loop in b.loops]


__all__ = [
    "AboutBlock",
    "Block",
    "Branch",
    "Loop",
    "Node",
    "allocations",
    "block_names",
    "blocks",
    "blocks_under",
    "body",
    "call_name",
    "children",
    "conjuncts",
    "constant",
    "loop_labels",
    "loops_below",
    "operands",
    "statements",
    "subexpressions",
    "tree",
    "var_key",
    "var_keys",
]

"""Views derived from a session in-process (cheap): TVMScript, step diffs, the loop-nest outline.

Everything here reads the cached schedule and never compiles; lowering and code generation
happen in the worker (:mod:`playground.worker.registry`).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field

import tvm

from playground.chain.spec import chain_to_json
from playground.schedule.replay import scheduled
from playground.schedule.session import Session
from playground.schedule.steps import Step, steps_from_json, steps_to_json


@functools.lru_cache(maxsize=256)
def _script(chain_json: str, steps_json: str) -> str:
    import json

    return scheduled(json.loads(chain_json), steps_from_json(steps_json)).mod.script()


def script_after(chain: dict, steps: tuple[Step, ...]) -> str:
    """TVMScript of the chain scheduled by ``steps`` (cached by their JSON)."""
    return _script(chain_to_json(chain), steps_to_json(steps))


def scheduled_script(session: Session) -> str:
    """TVMScript of the session's scheduled module."""
    return script_after(session.chain, session.active)


def step_diff(session: Session, index: int, context: int = 3) -> str:
    """Unified diff of the TVMScript before and after step ``index`` (0-based)."""
    before = script_after(session.chain, session.steps[:index])
    after = script_after(session.chain, session.steps[: index + 1])
    label = session.steps[index].label()
    return "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"before step {index + 1}", tofile=f"after step {index + 1}: {label}",
        n=context))


@dataclass
class Node:
    """A node of the loop-nest outline: a loop (with extent and kind) or a block."""

    kind: str  # "loop" or "block"
    name: str
    extent: int | None = None
    loop_kind: str = ""
    thread: str = ""
    children: list[Node] = field(default_factory=list)


def outline(session: Session) -> list[Node]:
    """The loop nest as a tree: which block sits under which loop."""
    func = session.schedule().mod["main"]
    return _outline(func.body)


def _outline(stmt) -> list[Node]:
    nodes: list[Node] = []

    def visit_children(s) -> list[Node]:
        kind = type(s).__name__
        if kind == "SeqStmt":
            out: list[Node] = []
            for x in s.seq:
                out.extend(_outline(x))
            return out
        return _outline(s)

    kind = type(stmt).__name__
    if kind == "For":
        extent = int(stmt.extent) if isinstance(stmt.extent, tvm.tirx.IntImm) else None
        thread = stmt.thread_binding.thread_tag if stmt.thread_binding is not None else ""
        node = Node("loop", stmt.loop_var.name, extent,
                    tvm.tirx.ForKind(int(stmt.kind)).name.lower(), thread,
                    visit_children(stmt.body))
        nodes.append(node)
    elif kind == "SBlockRealize":
        block = stmt.block
        children = visit_children(block.body)
        if block.name_hint == "root":
            return children
        nodes.append(Node("block", block.name_hint, children=children))
    elif kind == "SeqStmt":
        return visit_children(stmt)
    elif hasattr(stmt, "body"):
        return visit_children(stmt.body)
    return nodes


def outline_text(session: Session) -> str:
    """The outline as indented text, e.g. ``for h_0 in 0..4 (parallel)`` / ``block conv1``."""
    lines: list[str] = []

    def emit(nodes: list[Node], depth: int) -> None:
        for n in nodes:
            pad = "  " * depth
            if n.kind == "loop":
                tag = n.thread or (n.loop_kind if n.loop_kind != "serial" else "")
                lines.append(f"{pad}for {n.name} in {n.extent}" + (f"  ({tag})" if tag else ""))
            else:
                lines.append(f"{pad}block {n.name}")
            emit(n.children, depth + 1)

    emit(outline(session), 0)
    return "\n".join(lines)


__all__ = [
    "Node",
    "outline",
    "outline_text",
    "scheduled_script",
    "script_after",
    "step_diff",
]

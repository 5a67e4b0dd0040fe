"""Views derived from a session in-process (cheap): TVMScript, step diffs, the loop-nest outline,
and the history's stages (runs of steps on one layer, as a template writes them).

Everything here reads the cached schedule and never compiles; lowering and code generation
happen in the worker (:mod:`playground.worker.registry`).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

from playground.chain.spec import chain_to_json
from playground.schedule import ir
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


#: Stage groups are drawn for histories of at least this many steps (a hand-made history of a
#: few steps reads best flat), and for runs of at least MIN_STAGE steps.
GROUP_FROM = 12
MIN_STAGE = 3
_FUSING = ("compute_at", "reverse_compute_at")


@dataclass(frozen=True)
class Stage:
    """Steps ``start`` to ``end - 1`` (0-based) of a history, on one layer: ``label`` says
    what they do, e.g. ``"conv1 · register tiling (12 steps)"``."""

    start: int
    end: int
    label: str


def _layer_of(block: str, layers: list[str]) -> str | None:
    """The chain layer a block belongs to: ``conv1`` for conv1, conv1_pad, conv1_local..."""
    owners = [n for n in layers if block == n or block.startswith(n + "_")]
    return max(owners, key=len) if owners else None


_LAYOUT = {"cache_read", "cache_write", "transform_layout", "set_scope", "compute_inline",
           "reverse_compute_inline"}
_INLINE = {"compute_inline", "reverse_compute_inline"}  # an epilogue folded: the run goes on


def _phase(step: Step, layer: str, layers: list[str]) -> str:
    """What a step does for its layer: ``layout`` (copies, layouts, inlined epilogues),
    ``fused into X`` (moved under another layer's loops), or ``tiling``."""
    block = str(step.args.get("block", ""))
    if step.primitive in _LAYOUT or block.endswith(("_global", "_shared")):
        return "layout"
    if step.primitive in _FUSING:
        into = _layer_of(str(step.args.get("target_block", "")), layers)
        if into not in (layer, None):
            return f"fused into {into}"
    return "tiling"


def _stage_label(steps: list[Step], layer: str, phase: str) -> str:
    if phase == "layout":
        kind = "weights and layout"
    elif phase != "tiling":
        kind = phase
    else:
        prims = {s.primitive for s in steps}
        kind = ("register tiling" if "split" in prims and prims & {"vectorize", "unroll"}
                else "tiling" if prims & {"split", "reorder", "fuse"} else "loops")
    return f"{layer} · {kind} ({len(steps)} steps)"


def stages(chain: dict, steps: tuple[Step, ...] | list[Step]) -> list[Stage]:
    """The history's stages: runs of at least MIN_STAGE consecutive steps on one layer doing
    one thing (its layout, its tiling, its fusion into another layer), for histories of
    GROUP_FROM steps or more; none for shorter ones. A step on no layer (the input's copy) or
    inlining an epilogue joins the run it is in. Derived from the steps alone, so an
    exported, linked or imported schedule groups the same way."""
    if len(steps) < GROUP_FROM:
        return []
    layers = [layer["name"] for layer in chain["layers"]]
    runs: list[list] = []  # [start, end, layer, phase]
    for i, step in enumerate(steps):
        layer = _layer_of(str(step.args.get("block", "")), layers)
        if runs and (layer is None or step.primitive in _INLINE):
            runs[-1][1] = i + 1
            continue
        layer = layer or "input"
        phase = _phase(step, layer, layers)
        if runs and runs[-1][2:] == [layer, phase]:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, layer, phase])
    return [Stage(a, b, _stage_label(list(steps[a:b]), layer, phase))
            for a, b, layer, phase in runs if b - a >= MIN_STAGE]


def outline(session: Session) -> list[ir.Node]:
    """The loop nest as a tree: which block sits under which loop and which ``if``."""
    return ir.tree(session.schedule())


def outline_text(session: Session) -> str:
    """The session's :func:`outline` as indented text (see :func:`nest_text`)."""
    return nest_text(session.schedule())


def nest_text(func_or_sch) -> str:
    """A function's loop tree as indented text: ``for h_0 in 4  (parallel)``, ``if <cond>``
    and ``else``, ``block conv1``."""
    lines: list[str] = []

    def emit(nodes: tuple[ir.Node, ...] | list[ir.Node], depth: int) -> None:
        pad = "  " * depth
        for n in nodes:
            item = n.item
            if isinstance(item, ir.Loop):
                tag = item.thread or (item.kind if item.kind != "serial" else "")
                lines.append(f"{pad}for {item.name} in {item.extent}"
                             + (f"  ({tag})" if tag else ""))
            elif isinstance(item, ir.Branch):
                lines.append(f"{pad}if {item.condition}")
            else:
                lines.append(f"{pad}block {item.name}")
            emit(n.children, depth + 1)
            if n.orelse:
                lines.append(f"{pad}else")
                emit(n.orelse, depth + 1)

    emit(ir.tree(func_or_sch), 0)
    return "\n".join(lines)


__all__ = [
    "GROUP_FROM",
    "Stage",
    "nest_text",
    "outline",
    "outline_text",
    "scheduled_script",
    "script_after",
    "stages",
    "step_diff",
]

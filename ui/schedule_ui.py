"""The schedule form (a primitive and its arguments, picked from the current schedule) and
the history (undo, redo, jump to a step, delete a step; an import or a load is one entry, and
a long history is grouped by stage).

Pickers are filled from :func:`playground.schedule.replay.blocks` of the session's schedule: block
names, that block's loops with their extents ("h_0 (7)"), divisors of a loop's extent for split
factors, a block's read and write buffers. :func:`schedule_ui` returns the step to apply (or
None); :func:`handle_apply` applies it, or keeps TVM's reason for :func:`render_step_error`.

Defaults follow the fusion the page is for: ``compute_at`` offers, as the target, the tiled
block furthest down the chain that the moved block feeds, at its innermost outer-tile loop
(``w_0`` after ``split`` + ``reorder`` to ``h_0, w_0, ...``), so the walk-through's four
``compute_at`` steps need only the block picked (see :func:`default_target`).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import streamlit as st

from playground.errors import PlaygroundError, StepError
from playground.schedule.replay import BlockInfo, LoopInfo, blocks
from playground.schedule.session import Session
from playground.schedule.steps import (
    CATALOG,
    REQUIRED,
    Arg,
    Primitive,
    Step,
    normalize_step,
    step_code,
)
from playground.schedule.views import stages
from ui import state
from ui.io_ui import render_flash
from ui.text import ERROR_ICON, WARNING_ICON, code, escape

#: What a text field starts with, by argument name.
_DEFAULT_TEXT = {"index_map": "lambda n, c, h, w: (n, c, h, w)"}
#: Loop names that ``split`` (``h_0``, ``h_1``) or ``fuse`` (``n_h_0_fused``) made.
_TILE_LOOP = re.compile(r"_\d+$|_fused$")
#: The primitive the form showed last, and the block picked in it (see :func:`_keep_block`).
_SHOWN, _CHOSEN = "sched.shown_primitive", "sched.chosen_block"


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def suggested_factor(extent: int) -> int:
    """A divisor of ``extent`` near 8 (a typical tile), or ``extent`` itself."""
    inner = [d for d in divisors(extent) if 1 < d < extent]
    return min(inner, key=lambda d: (abs(d - 8), d)) if inner else extent


def loop_label(loop: LoopInfo) -> str:
    kind = loop.thread or (loop.kind if loop.kind != "serial" else "")
    extent = "?" if loop.extent is None else loop.extent
    return f"{loop.name} ({extent})" + (f" · {kind}" if kind else "")


def _related(infos: dict[str, BlockInfo], block: str, consumers: bool) -> list[str]:
    """Blocks that read what ``block`` writes (consumers), or write what it reads."""
    me = infos[block]
    if consumers:
        return [n for n, b in infos.items() if n != block and set(me.writes) & set(b.reads)]
    return [n for n, b in infos.items() if n != block and set(me.reads) & set(b.writes)]


def _fed(infos: dict[str, BlockInfo], block: str) -> list[str]:
    """Every block that ``block`` feeds, directly or through others, in block order."""
    seen: set[str] = set()
    todo = [block]
    while todo:
        for n in _related(infos, todo.pop(), consumers=True):
            if n not in seen and n != block:
                seen.add(n)
                todo.append(n)
    return [n for n in infos if n in seen]


def _tiled(info: BlockInfo) -> bool:
    return any(_TILE_LOOP.search(lp.name) for lp in info.loops)


def default_target(infos: dict[str, BlockInfo], primitive: str, block: str) -> str | None:
    """The target block a user most likely wants for moving ``block``.

    ``compute_at``: the block whose tile loops the producer should join. Of the blocks that
    ``block`` feeds, the last (output-side) one that is tiled (split or fused loops; a block
    already moved under a tile counts), else the last one it feeds: in conv -> relu -> conv,
    conv2 for each of conv2_pad, relu1, conv1 and conv1_pad, not each one's direct consumer.
    ``reverse_compute_at``: its first direct producer (a block that does not read the
    target's output cannot go under its loops).
    """
    if block not in infos:
        return None
    if primitive == "compute_at":
        fed = _fed(infos, block)
        tiled = [n for n in fed if _tiled(infos[n])]
        return (tiled or fed or [None])[-1]
    producers = _related(infos, block, consumers=False)
    return producers[0] if producers else None


def default_block(infos: dict[str, BlockInfo], primitive: str) -> str | None:
    """The block the form offers before the user picked one: for ``compute_at`` the last
    block that feeds another (the output block feeds nothing, so it cannot be computed
    anywhere), for every other primitive the output block, where tiling usually starts."""
    names = list(infos)
    if primitive == "compute_at":
        feeding = [n for n in names if _related(infos, n, consumers=True)]
        if feeding:
            return feeding[-1]
    return names[-1] if names else None


def default_loop(loops: list[LoopInfo], primitive: str) -> int:
    """Index of the loop to offer first: for compute_at / reverse_compute_at in a tiled nest
    the innermost outer-tile loop (``w_0`` of ``h_0, w_0, k, h_1, w_1``: one tile), else the
    first loop longer than 1."""
    if primitive in ("compute_at", "reverse_compute_at"):
        names = [lp.name for lp in loops]
        inner = next((i for i, n in enumerate(names) if re.search(r"_[1-9]\d*$", n)),
                     len(names))
        outer = [i for i, n in enumerate(names[:inner]) if n.endswith("_0")]
        if outer:
            return outer[-1]
    return next((i for i, lp in enumerate(loops) if (lp.extent or 2) > 1), 0)


def select(label: str, options: list, default: Any, key: str, **kwargs) -> Any:
    """A selectbox whose options change with the schedule. Its value lives in session state
    and is set to ``default`` here when it is missing or no longer an option, so that the
    widget never gets both a default and a state value (Streamlit warns about that, and
    resets a stale value by itself on a later run)."""
    if options and st.session_state.get(key) not in options:
        st.session_state[key] = default if default in options else options[0]
    return st.selectbox(label, options, key=key, **kwargs)


_TARGET_HELP = {
    "compute_at": " Offered first: the tiled block furthest down the chain that the block "
                  "feeds (else the last one it feeds), at its innermost outer-tile loop.",
    "reverse_compute_at": " Offered first: the block's direct producer.",
}


def _block_arg(prim: Primitive, a: Arg, values: dict, infos: dict[str, BlockInfo]) -> str:
    names = list(infos)
    default = default_block(infos, prim.name)
    key, doc = f"sched.{prim.name}.{a.name}", a.doc
    if a.name == "target_block" and values.get("block") in infos:
        # Keyed by the moved block, so that the default follows it; never the block itself.
        moved = values["block"]
        names = [n for n in names if n != moved] or names
        around = names[max(0, list(infos).index(moved) - 1)] if names else None
        default = default_target(infos, prim.name, moved) or around
        key, doc = f"{key}.{moved}", doc + _TARGET_HELP.get(prim.name, "")
    if a.name != "block":
        return select(a.name.replace("_", " "), names, default, key, help=doc)
    return select("block", names, default, key, help=doc, on_change=_remember, args=(key,))


def _remember(key: str) -> None:
    """The user picked a block (a default is not a pick): later forms start on it."""
    st.session_state[_CHOSEN] = st.session_state.get(key)


def _keep_block(name: str, infos: dict[str, BlockInfo]) -> None:
    """Carry the block the user picked (under any primitive) over to ``name``'s form: each
    primitive's picker has its own key, and a new one would start at its default."""
    shown, chosen = st.session_state.get(_SHOWN), st.session_state.get(_CHOSEN)
    if shown is not None and shown != name and chosen in infos and \
            any(a.name == "block" for a in CATALOG[name].args):
        st.session_state[f"sched.{name}.block"] = chosen


def _loops_of(values: dict, a: Arg, infos: dict[str, BlockInfo]) -> tuple[str, dict]:
    owner = values.get(a.kind.of, "")
    return owner, {lp.name: lp for lp in infos[owner].loops} if owner in infos else {}


def _factors_arg(prim: Primitive, a: Arg, values: dict, infos: dict[str, BlockInfo]) -> list:
    owner, loops = _loops_of(values, prim.arg("loop"), infos)
    loop = loops.get(values.get("loop"))
    extent = loop.extent if loop is not None and loop.extent else 1
    suffix = f"{owner}.{values.get('loop')}"
    parts = st.selectbox("parts", (2, 3, 4), key=f"sched.{prim.name}.parts",
                         help="into how many nested loops to split")
    cols = st.columns(parts)
    factors = []
    for j, col in enumerate(cols):
        default = suggested_factor(extent) if j == parts - 1 else 0
        f = col.number_input(f"factor {j + 1}" + (" (outer)" if j == 0 else ""),
                             value=default, step=1, key=f"sched.{prim.name}.f{j}.{suffix}",
                             help="0 = auto: inferred from the extent (at most one)")
        factors.append(None if f == 0 else int(f))
    st.caption(f"extent {extent} · divisors {', '.join(map(str, divisors(extent)))} · "
               "0 = auto. Factors that do not divide the extent add guards (T.where).")
    return factors


def _int_arg(prim: Primitive, a: Arg, values: dict, infos: dict[str, BlockInfo]) -> int:
    block = infos.get(values.get("block", ""))
    if a.name.endswith("buffer_index") and block is not None:
        buffers = block.reads if a.name.startswith("read") else block.writes
        if buffers:
            return st.selectbox(a.name.replace("_", " "), range(len(buffers)),
                                format_func=lambda k: f"{k}: {buffers[k]}",
                                key=f"sched.{prim.name}.{a.name}.{block.name}", help=a.doc)
    default = a.default if a.default is not REQUIRED else a.kind.minimum
    return int(st.number_input(a.name.replace("_", " "), min_value=a.kind.minimum,
                               max_value=a.kind.maximum, value=default, step=1,
                               key=f"sched.{prim.name}.{a.name}", help=a.doc))


def _loop_arg(prim: Primitive, a: Arg, values: dict, infos: dict[str, BlockInfo]) -> Any:
    owner, loops = _loops_of(values, a, infos)
    fmt = lambda name: loop_label(loops[name]) if name in loops else name  # noqa: E731
    key = f"sched.{prim.name}.{a.name}.{owner}"
    if a.kind.widget == "loops":
        return st.multiselect(_label(a), list(loops), format_func=fmt, key=key,
                              help=a.doc + " (in the order you pick them)")
    names = list(loops)
    first = names[default_loop(list(loops.values()), prim.name)] if names else None
    return select(_label(a), names, first, key, format_func=fmt, help=a.doc)


def _buffer_arg(prim: Primitive, a: Arg, values: dict, infos: dict[str, BlockInfo]) -> list:
    block, key = infos.get(values.get("block", "")), f"sched.{prim.name}.{a.name}"
    left, right = st.columns(2)
    side = left.radio("buffer", ("read", "write"), horizontal=True, key=f"{key}.side")
    names = (block.reads if side == "read" else block.writes) if block else ()
    index = right.selectbox("index", range(max(len(names), 1)),
                            format_func=lambda k: f"{k}: {names[k]}" if k < len(names)
                            else str(k), key=f"{key}.index")
    return [side, index]


def _choice_arg(prim: Primitive, a: Arg, values: dict, infos: dict[str, BlockInfo]) -> str:
    choices = a.kind.choices
    index = choices.index(a.default) if a.default in choices else 0
    return st.selectbox(_label(a), choices, index=index, key=f"sched.{prim.name}.{a.name}",
                        help=a.doc)


def _label(a: Arg) -> str:
    return a.name.replace("_", " ")


#: The Streamlit field for each widget an argument kind asks for (``Kind.widget``).
_WIDGETS = {
    "block": _block_arg,
    "loop": _loop_arg,
    "loops": _loop_arg,
    "factors": _factors_arg,
    "int": _int_arg,
    "bool": lambda prim, a, values, infos: st.checkbox(
        _label(a), value=bool(a.default), key=f"sched.{prim.name}.{a.name}", help=a.doc),
    "choice": _choice_arg,
    "buffer": _buffer_arg,
    "text": lambda prim, a, values, infos: st.text_input(
        _label(a), value=_DEFAULT_TEXT.get(a.name, ""), key=f"sched.{prim.name}.{a.name}",
        help=a.doc),
}


def schedule_ui(session: Session, target: str) -> Step | None:
    """Draw the primitive form; return the step to apply when Apply was pressed."""
    infos = {b.name: b for b in blocks(session.schedule())}
    names = list(CATALOG)
    name = st.selectbox("Primitive", names, key="sched.primitive",
                        format_func=lambda n: n + ("  (GPU)" if CATALOG[n].gpu else ""))
    prim = CATALOG[name]
    returns = f" Returns the new {prim.returns}." if prim.returns else ""
    st.caption(prim.doc + returns
               + (" Needs the cuda target." if prim.gpu and target != "cuda" else ""))
    _keep_block(name, infos)
    values: dict[str, Any] = {}
    for a in prim.args:
        values[a.name] = _WIDGETS[a.kind.widget](prim, a, values, infos)
    st.session_state[_SHOWN] = name
    if values.get("block") in infos:
        if name == "compute_at" and not _related(infos, values["block"], consumers=True):
            st.caption(f"{WARNING_ICON} {values['block']} feeds no other block, so there is "
                       "nowhere to compute it at: pick a block that feeds one (or use "
                       "reverse_compute_at to move it under its producer).")
    step = Step(prim.name, values)
    try:
        st.code(step_code(normalize_step(step)), language="python", wrap_lines=True)
    except (StepError, KeyError):
        pass  # incomplete arguments: Apply reports the library's message
    return step if st.button("Apply", key="sched.apply", type="primary") else None


def handle_apply(step: Step | None, target: str = "cpu") -> None:
    """Apply ``step`` for ``target`` (the caller draws the new session, then reruns the page for
    the form); on refusal keep the reason for the form. Knowing the target, a GPU thread
    binding is refused at once on the CPU instead of failing at the build."""
    if step is None:
        return
    try:
        new = state.session().apply(step, target=target)
    except PlaygroundError as e:
        state.ui().step_error = {"message": e.message, "detail": e.detail}
        return
    state.commit(new)


def render_step_error(error: dict | None) -> None:
    if not error:
        return
    st.error(escape(error["message"]), icon=ERROR_ICON)
    if error["detail"]:
        with st.expander("Full explanation from TVM"):
            st.code(error["detail"], language=None, wrap_lines=True)


# ----------------------------------------------------------------------------- history

def _history_row(session: Session, k: int, text: str) -> tuple[str, int] | None:
    """One history entry (``k``: its cursor) with its go and delete buttons."""
    action = None
    with st.container(horizontal=True, vertical_alignment="center", gap="xsmall", wrap=False):
        if k == session.cursor:
            st.markdown(f"▶ **{text}**", width="stretch")
        elif k > session.cursor:
            st.markdown(f":gray[{text} (undone)]", width="stretch")
        else:
            st.markdown(text, width="stretch")
        if st.button("go", key=f"hist.goto.{k}", disabled=k == session.cursor,
                     help=f"make the first {k} steps active", type="tertiary"):
            action = ("goto", k)
        if k and st.button("✕", key=f"hist.delete.{k - 1}", help="delete this step",
                           type="tertiary"):
            action = ("delete", k - 1)
    return action


def _replacement_row(label: str, before: Session, key: str, undone: bool) -> bool:
    """The history entry of a replacement (an import, a preset, a load, a link); True when
    its button was pressed (going back before it, or forward to it when undone)."""
    text = (f"⟲ {escape(label)} — replaced {len(before.steps)} step(s) on "
            f"{escape(' → '.join(layer['op'] for layer in before.chain['layers']))}")
    with st.container(horizontal=True, vertical_alignment="center", gap="xsmall", wrap=False):
        st.markdown(f":gray[{text} (undone)]" if undone else text, width="stretch")
        return st.button("redo" if undone else "back", key=key, type="tertiary",
                         help="bring this replacement back" if undone else
                         "go back to the session before it (Undo at its last step does too)")


def history_ui(session: Session) -> tuple[str, int] | None:
    """The steps with undo / redo / go to / delete; returns the action pressed. A
    replacement (import, preset, load, link) is an entry of its own; a long history is
    grouped by stage (:func:`playground.schedule.views.stages`), the stage being worked on
    open."""
    action = None
    with st.container(horizontal=True):
        if st.button("↶ Undo", key="hist.undo", disabled=not session.can_undo,
                     help=f"back to before {session.replaced.label}"
                     if session.at_replacement else None):
            action = ("undo", 0)
        if st.button("↷ Redo", key="hist.redo", disabled=not session.can_redo):
            action = ("redo", 0)
    render_flash("history")
    if session.notice:
        st.warning(escape(session.notice), icon=WARNING_ICON)
    if session.replaced is not None and _replacement_row(
            session.replaced.label, session.replaced.before, "hist.before", undone=False):
        action = ("before", 0)
    action = _history_row(session, 0, "0 · unscheduled chain") or action
    groups = {g.start: g for g in stages(session.chain, session.steps)}
    k = 1
    while k <= len(session.steps):
        group = groups.get(k - 1)
        ks = range(k, group.end + 1) if group else (k,)
        with (st.expander(f"{group.start + 1}–{group.end} · {group.label}",
                          expanded=group.start < session.cursor <= group.end)
              if group else contextlib.nullcontext()):
            for j in ks:
                action = _history_row(
                    session, j, f"{j} · {code(session.steps[j - 1].label())}") or action
        k = ks[-1] + 1
    forward = session.redo_replace
    if forward is not None and forward.replaced is not None and _replacement_row(
            forward.replaced.label, session, "hist.forward", undone=True):
        action = ("forward", 0)
    return action


def handle_history(action: tuple[str, int] | None) -> None:
    """Undo, redo, go to or delete; the caller draws the new session, then reruns the page."""
    if action is None:
        return
    current = state.session()
    kind, arg = action
    try:
        new = {"undo": lambda: current.undo(), "redo": lambda: current.redo(),
               "goto": lambda: current.goto(arg), "delete": lambda: current.delete(arg),
               "before": current.before_replacement,
               "forward": lambda: current.redo_replace}[kind]()
    except PlaygroundError as e:
        st.error(escape(e.message), icon=ERROR_ICON)
        return
    state.commit(new)

"""The Inspect tabs: scheduled TVMScript, lowered TIR, a step's diff, the loop-nest outline and
the generated code. Only the open tab is computed; lowering and code generation run in the
worker, once per (session, target) (see :func:`ui.state.run_cached`).
"""

from __future__ import annotations

import streamlit as st

from playground import service
from playground.schedule.session import Session
from playground.schedule.views import outline_text, scheduled_script, step_diff
from playground.worker.pool import WorkerPool
from ui import state
from ui.measure_ui import render_failure

TABS = ("Scheduled TVMScript", "Lowered TIR", "Step diff", "Loop outline", "Generated code")
CODE_KINDS = {"cpu": ("asm", "llvm"), "cuda": ("cuda",)}
_LANGUAGE = {"asm": None, "llvm": "llvm", "cuda": "cpp"}
_HEIGHT = 620


def render_code(text: str, language: str | None, height: int | str = _HEIGHT) -> None:
    """A code panel with line numbers. Long lines wrap: the Inspect column is narrower than a
    TVMScript line, and a horizontal scrollbar at the foot of a tall panel goes unseen (the
    lines look cut off)."""
    st.code(text, language=language, line_numbers=True, height=height, wrap_lines=True)


def render_script(session: Session) -> None:
    render_code(scheduled_script(session), "python")


def render_worker_text(key: str, result) -> None:
    if result.ok:
        render_code(result.value["text"], "python")
        return
    render_failure(result)
    if st.button("Retry", key=f"inspect.retry.{key.split('|')[0]}"):
        state.forget_result(key)
        st.rerun()


def tile_local_ui() -> bool:
    """Whether the lowered TIR shows the playground's tile-local step (on by default)."""
    return st.toggle("Tile-local step", value=True, key="inspect.tile_local",
                     help="Intermediates computed under a tile loop become tile-sized and lose "
                          "their border predicates where that is provably harmless, and the "
                          "border rows of a convolution skip the taps that multiply its zero "
                          "padding, and strided vector loads become one contiguous load and a "
                          "shuffle. Switch off to see TVM's default lowering.")


def render_lowered(pool: WorkerPool, session: Session, target: str, tile_local: bool) -> None:
    key = state.result_key("lower", session, target, "tile_local" if tile_local else "")
    result = state.run_cached(
        key, lambda: service.lower(pool, session, target, tile_local=tile_local),
        "Lowering in the worker…")
    st.caption(f"The module just before `tirx.MakePackedAPI` for {target}: buffers compacted, "
               "loops flattened.")
    if result.ok and result.value.get("tile_local"):
        st.caption(f"Tile-local step: {result.value['tile_local']}")
    if result.ok and result.value.get("padding_taps"):
        st.caption(f"Padding-taps step: {result.value['padding_taps']}")
    if result.ok and result.value.get("strided_loads"):
        st.caption(f"Strided-loads step: {result.value['strided_loads']}")
    render_worker_text(key, result)


def diff_ui(session: Session) -> int | None:
    """Which step's diff to show (default: the last active one)."""
    if not session.cursor:
        st.info("No steps yet: apply one and its diff shows here.")
        return None
    options = [-1, *range(session.cursor)]
    latest = session.cursor - 1
    choice = st.selectbox(
        "Step", options, key="inspect.diff_step",
        format_func=lambda i: (f"latest (step {latest + 1}: {session.steps[latest].label()})"
                               if i < 0 else f"step {i + 1}: {session.steps[i].label()}"))
    return latest if choice is None or choice < 0 or choice >= session.cursor else choice


def render_diff(session: Session, index: int | None) -> None:
    if index is None:
        return
    text = step_diff(session, index)
    if text:
        render_code(text, "diff")
    else:
        st.info("This step did not change the TVMScript.")


def render_outline(session: Session) -> None:
    st.caption("Which block sits under which loop (extents; parallel / vectorized / thread "
               "bindings marked).")
    render_code(outline_text(session), None, height="content")


def codegen_ui(target: str) -> str:
    return st.selectbox("Code", CODE_KINDS[target], key=f"inspect.code_kind.{target}",
                        format_func={"asm": "assembly", "llvm": "LLVM IR",
                                     "cuda": "CUDA source"}.get)


def render_codegen(pool: WorkerPool, session: Session, target: str, kind: str) -> None:
    key = state.result_key("codegen", session, target, kind)
    result = state.cached_result(key)
    if result is None:
        if not st.button("Compile and show", key="inspect.codegen"):
            st.caption("Compiling takes a moment, so it runs when you ask (in the worker).")
            return
        result = state.run_cached(key, lambda: service.codegen(pool, session, target, kind),
                                  f"Compiling for {target} in the worker…")
    if result.ok:
        render_code(result.value["text"], _LANGUAGE[kind])
    else:
        render_worker_text(key, result)


def inspect_panel(pool: WorkerPool, session: Session, target: str) -> None:
    """The tabs; only the open one is computed (tabs rerun the page when switched)."""
    tabs = st.tabs(list(TABS), key="inspect.tab", on_change="rerun")
    draw = {
        TABS[0]: lambda: render_script(session),
        TABS[1]: lambda: render_lowered(pool, session, target, tile_local_ui()),
        TABS[2]: lambda: render_diff(session, diff_ui(session)),
        TABS[3]: lambda: render_outline(session),
        TABS[4]: lambda: render_codegen(pool, session, target, codegen_ui(target)),
    }
    for name, tab in zip(TABS, tabs, strict=True):
        if tab.open is False:
            continue
        with tab:
            draw[name]()

"""The page after its title: the sidebar, the tabs and their panels (see ``app.py``).

Imported by ``app.py`` once per server, under a spinner in the "1 · Chain" box on the very
first visit: importing it imports TVM and the whole library, which takes seconds on a busy
machine (``ui.serve`` starts the import in the background when the server starts, so that
a first visitor usually finds it done).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from playground.errors import PlaygroundError
from playground.worker.pool import WorkerPool
from ui import (
    chain_ui,
    experiments_ui,
    fusion_ui,
    inspect_ui,
    io_ui,
    measure_ui,
    model_ui,
    schedule_ui,
    state,
    store_ui,
)


def playground_page(pool: WorkerPool, target: str) -> None:
    """Chain, schedule and history, inspect, validate and measure."""
    with st.expander("**1 · Chain** — input and layers", expanded=True):
        edit = chain_ui.chain_ui(state.session().chain)
        chain_ui.handle_chain_input(edit)
    steps_section(pool, target)


@st.fragment
def steps_section(pool: WorkerPool, target: str) -> None:
    """Schedule, history, inspect and measure: a fragment, so that applying a step reruns
    this part of the page only, not the chain editor and the sidebar.

    A step applied (or undone) here is drawn at once with the new session: history, IR and
    result below the form. Then the whole page reruns, so that the form's pickers, the
    sidebar's export and link and the URL follow; the new IR is on the page before that.
    """
    drawn = state.session()
    left, right = st.columns([4, 7], gap="large")
    with left:
        st.subheader("2 · Schedule")
        step = schedule_ui.schedule_ui(drawn, target)
        schedule_ui.handle_apply(step, target)
        schedule_ui.render_step_error(state.ui().step_error)
        st.subheader("History")
        schedule_ui.handle_history(schedule_ui.history_ui(state.session()))
    session = state.session()
    with right:
        st.subheader("3 · Inspect")
        inspect_ui.inspect_panel(pool, session, target)
    st.subheader("4 · Validate & measure")
    pressed, timing = measure_ui.measure_ui(target)
    measure_ui.handle_measure(pressed, timing, pool, session, target)
    measure_ui.render_result(measure_ui.current_result(session, target))
    measure_ui.render_history_chart(session)
    if session is not drawn:
        st.rerun()  # the form, the sidebar and the URL still show the session before


#: The pages, as tabs; a page is ``page(pool, target)``.
PAGES: list[tuple[str, Callable[[WorkerPool, str], None]]] = [
    ("Playground", playground_page),
    ("Fusion explorer", fusion_ui.page),
    ("Experiments", experiments_ui.page),
    ("Model", model_ui.page),
]


def sidebar(session) -> str:
    """Target, export, import and the shareable link; returns the target."""
    with st.sidebar:
        st.header("Target")
        target = measure_ui.target_ui()
        st.header("Export")
        io_ui.export_ui(session, target)
        st.header("Import")
        io_ui.handle_import(io_ui.import_ui())
        with st.expander("Shareable link"):
            io_ui.share_ui(session, target)
    return target


def render() -> None:
    """Everything below the title: the session, the sidebar, the tabs."""
    state.init(io_ui.restore_from_url)
    try:
        pool = state.get_pool()
    except PlaygroundError as e:  # a deployment mistake (a malformed PLAYGROUND_* variable)
        st.error(f"The server cannot start its workers: {e.message}")
        st.stop()
    target = sidebar(state.session())
    io_ui.render_flash()
    store_ui.render_problem()
    # Lazy tabs: only the open page runs, so that applying a step on the Playground does
    # not wait for the Fusion explorer's analysis jobs.
    tabs = st.tabs([n for n, _ in PAGES], key="page", on_change="rerun")
    for tab, (_, page) in zip(tabs, PAGES, strict=True):
        if tab.open:
            with tab:
                page(pool, target)
    io_ui.sync_url(state.session())


def warm() -> None:
    """Do what a first visit would wait for (called by ``ui.serve`` when the server starts):
    start the worker pools (each worker imports TVM), list the presets, and fill the
    default chain's schedule and TVMScript caches."""
    from playground.schedule.session import Session
    from playground.schedule.views import scheduled_script

    state.get_pool()
    chain_ui.presets()
    scheduled_script(Session.new(state.DEFAULT_CHAIN))


#: Set last: ``app.py`` shows its spinner until the module is whole.
LOADED = True

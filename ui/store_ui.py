"""The page's side of the experiment store: recording what the page runs, saying plainly when
history is not being saved, and reading a chain's stored runs back for the run-time chart.

Recording never stops the page: :mod:`playground.store` returns None when the database is
unavailable, and :func:`render_problem` says so at the top of every page. Text that people
wrote (labels, notes, names) is shown through elements that never render Markdown or HTML
(:func:`render_fields`, tables, code blocks, widget values).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from playground import store
from playground.errors import PlaygroundError
from playground.measure.machine import host_fingerprint
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.store.records import chain_key, iso
from playground.worker.result import JobResult

NOT_SAVED = ("**History is not being saved.** The page works as before, but runs, sweeps, "
             "saved sessions and short links are not kept.")
#: Most points in the run-time chart: the newest stored runs of the chain.
CHART_POINTS = 50


def machine(remote_label: str | None = None) -> dict:
    """The fingerprint a run is recorded with: this machine's, or the remote device's."""
    return {"remote": remote_label} if remote_label else host_fingerprint()


def step_label(session: Session) -> str:
    """``"k: label"`` of the last active step (``"0: unscheduled"`` with none)."""
    if not session.cursor:
        return "0: unscheduled"
    return f"{session.cursor}: {session.steps[session.cursor - 1].label()}"


def record_measurement(session: Session, target: str, result: JobResult,
                       remote_label: str | None = None) -> int | None:
    """Store one Validate & measure of the page; None when history is not being saved."""
    if result.status == "cancelled":
        return None
    return store.record_run(session.chain, session.active, target, machine(remote_label),
                            status=result.status, value=result.value, error=result.message,
                            detail=result.detail, label=step_label(session), source="page")


def step_labels(steps: list[dict]) -> list[str]:
    """One line per stored step: ``"1. split conv2.h factors=[None, 8]"``."""
    out = []
    for i, raw in enumerate(steps, 1):
        try:
            out.append(f"{i}. {Step.from_dict(raw).label()}")
        except PlaygroundError:
            out.append(f"{i}. {raw!r}")
    return out


def problem() -> str | None:
    """Why history is not being saved, checking the database first (cheap: one query)."""
    try:
        store.get_store().check()
    except store.StoreError:
        pass
    return store.problem()


def render_problem() -> None:
    """The notice at the top of the page while the store cannot save."""
    why = problem()
    if why:
        st.warning(NOT_SAVED, icon="⚠️")
        st.text(why)


def chain_history(session: Session, limit: int = CHART_POINTS) -> list[dict] | None:
    """The chain's stored runs with a time, oldest first, as the chart's records (see
    :func:`ui.measure_ui.history_figure`); None when the store cannot be read or cannot save
    (the chart then shows this tab's measurements)."""
    if store.problem():
        return None
    try:
        rows = store.get_store().list_experiments(chain=chain_key(session.chain), kind="run",
                                                  timing=True, limit=4 * limit)
    except store.StoreError:
        return None
    rows = [r for r in rows if r["median_ms"] is not None][:limit][::-1]
    several = len({r["machine_key"] for r in rows}) > 1
    return [{"n": i + 1, "label": r["label"], "median_ms": r["median_ms"],
             "p10_ms": r["p10_ms"], "p90_ms": r["p90_ms"], "when": iso(r["created"]),
             "under_load": None if r["under_load"] is None else bool(r["under_load"]),
             "target": f"{r['target']} · {r['machine_name']}" if several else r["target"]}
            for i, r in enumerate(rows)]


def table_height(rows: int) -> int:
    """Pixels for a table of ``rows`` rows with no scroll bar (Streamlit's rows are 35 px)."""
    return 35 * (rows + 1) + 3


def render_fields(fields: list[tuple[str, object]], key: str) -> None:
    """Field/value pairs as a two-column table: values are shown as text, never Markdown."""
    shown = [(name, "" if value is None else str(value)) for name, value in fields
             if value not in (None, "")]
    st.dataframe(pd.DataFrame(shown, columns=["field", "value"]), hide_index=True, key=key,
                 width="stretch", height=table_height(len(shown)))

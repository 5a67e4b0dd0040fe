"""The Fusion explorer's answers: the template search and the fuse-or-not verdict.

Both run in a background thread of this tab (:mod:`ui.background`): the page shows progress,
the best schedule found so far and a Cancel button under its buttons
(:func:`ui.fusion_ui.render_tasks`), and stays usable meanwhile. Every build and run happens
in the worker pools (a search is a long job: it never holds up another user's IR view). The
results are plain steps: one click loads the best, fused or unfused schedule into the
session (one history entry that Undo reverses), where it can be edited, undone and
exported like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import streamlit as st

from playground.errors import PlaygroundError
from playground.measure.machine import machine_facts
from playground.measure.stats import spread_interval
from playground.schedule.session import Session
from playground.templates.search import Candidate, SearchResult, search_and_finalize
from playground.templates.verdict import Verdict, fusion_verdict
from playground.worker.pool import WorkerPool
from ui import background, measure_ui, state
from ui.io_ui import render_flash, replaced_text
from ui.text import ERROR_ICON, code, escape

#: Background task names of this section (the explorer's progress bar lists them).
TASKS = ("search", "verdict")


def _progress(task: background.Task, budget_s: float):
    def on_progress(cand: Candidate, result: SearchResult) -> None:
        best = result.best()
        task.progress = min(0.99, task.elapsed_s / max(budget_s, 1.0))
        task.text = (f"{result.measured} measured, {len(result.candidates)} tried; best so far: "
                     + (f"{best.label} {best.median_ms:.3f} ms" if best else "none yet"))
    return on_progress


def _ticker(task: background.Task, budget_s: float, what: str) -> None:
    """Progress from the first second: until the first candidate lands (a cold compile takes
    seconds) the bar shows the time spent against the budget."""
    def tick() -> None:
        while not task.done:
            task.progress = min(0.99, task.elapsed_s / max(budget_s, 1.0))
            if task.text.startswith("starting") or task.text.startswith(what):
                task.text = (f"{what}: {task.elapsed_s:.0f} s of {budget_s:.0f} s — building "
                             "and validating the first schedule")
            time.sleep(0.5)
    threading.Thread(target=tick, daemon=True, name=f"tick-{what}").start()


def _search_done(chain: dict) -> SearchResult | None:
    """This tab's finished search of ``chain``, if any (read on the page's thread: a task's
    thread has no session state)."""
    prior = background.get("search")
    if prior is None or prior.running or prior.result is None or prior.result.chain != chain:
        return None
    return prior.result


def start_search(pool: WorkerPool, session: Session, budget_s: float) -> None:
    facts = machine_facts()
    weights = measure_ui.weights_mode()  # read here: the background thread has no page state

    def work(task: background.Task) -> SearchResult:
        _ticker(task, budget_s, "search")

        def finalizing(n: int) -> None:
            task.text = f"timing the {n} fastest side by side in paired rounds"

        result, _ = search_and_finalize(
            pool, session.chain, facts, budget_s=budget_s, started=task.started,
            cancel=task.cancel, on_progress=_progress(task, budget_s), on_finalize=finalizing,
            record="page", weights=weights)
        return result

    background.start("search", work)


def start_verdict(pool: WorkerPool, session: Session, budget_s: float) -> None:
    """The verdict; it re-times the schedules of this tab's finished search (same chain) when
    there is one, so that the search's table and the verdict show the same measurements."""
    facts = machine_facts()
    weights = measure_ui.weights_mode()

    prior = _search_done(session.chain)

    def work(task: background.Task) -> Verdict:
        _ticker(task, budget_s, "verdict")
        return fusion_verdict(pool, session.chain, facts, budget_s=budget_s, cancel=task.cancel,
                              on_progress=_progress(task, budget_s), result=prior,
                              started=task.started, weights=weights)

    background.start("verdict", work)


def load(session: Session, cand: Candidate, what: str) -> None:
    """Replace the session's steps with the candidate's (the chain stays), as a history entry
    that Undo reverses; the message shows under the search's results."""
    try:
        new = Session.new(session.chain, [s.to_dict() for s in cand.steps])
    except PlaygroundError as e:
        state.say("error", f"Could not load the {what} schedule: {e.message}", _where(what))
        return
    before = state.session()
    state.replace_session(new, f"the {what} schedule found")
    state.say("success", f"Loaded the {what} schedule: {len(cand.steps)} steps. "
              f"{replaced_text(before)}", _where(what))


def _where(what: str) -> str:
    """Where a load's message shows: under the search's button, or under the verdict's."""
    return "search" if what == "best" else "verdict"


def _same_chain(result_chain: dict, session: Session) -> bool:
    return result_chain == session.chain


def _interval(c: Candidate) -> str:
    """The 95% interval of a candidate's median: over its paired rounds where it was re-timed,
    else over the search's samples."""
    samples = c.rounds_ms or tuple((c.timing or {}).get("samples_ms") or ())
    if not c.ok or not samples:
        return ""
    low, high = spread_interval(samples)
    return f"{low:.3f}–{high:.3f}"


def render_search(result: SearchResult, session: Session) -> None:
    best = result.best()
    status = "cancelled, " if result.cancelled else ""
    st.write(f"{status}{result.measured} schedule(s) built, validated and timed in "
             f"{result.search_s:.0f} s.")
    if best is None:
        st.error("No candidate validated: " + escape("; ".join(
            sorted({c.message for c in result.candidates if c.message})[:3])), icon=ERROR_ICON)
        return
    st.markdown(f"Best: {code(best.label)}, **{best.median_ms:.3f} ms** "
                f"({best.gflops:.1f} GFLOP/s), {len(best.steps)} steps; times taken with "
                f"{best.plan.weights} weights.")
    final = result.final
    if final is not None:
        by = ("re-timed by the verdict below" if final.by == "verdict"
              else "the fastest re-timed side by side")
        loaded = " Measured under load: unreliable." if final.under_load else ""
        st.caption(f"Against {escape(final.other)} ({by}): "
                   f"{escape(final.interval.text('its time / best'))} — {escape(final.call)}."
                   f"{loaded}")
    st.dataframe([{"candidate": c.label, "status": c.status,
                   "median (ms)": c.median_ms, "95% interval (ms)": _interval(c),
                   "side by side": f"{len(c.rounds_ms)} rounds" if c.rounds_ms else "",
                   "GFLOP/s": c.gflops, "fused": c.fused,
                   "note": "" if c.ok else c.message[:120]} for c in result.candidates],
                 hide_index=True, key="fusion.search.table",
                 column_config={"median (ms)": st.column_config.NumberColumn(format="%.3f"),
                                "GFLOP/s": st.column_config.NumberColumn(format="%.1f")})
    if not _same_chain(result.chain, session):
        st.caption("The chain changed since this search: search again to load a schedule.")
        return
    st.button("Load the best schedule into the session", key="fusion.search.load",
              on_click=load, args=(session, best, "best"))


def render_verdict(verdict: Verdict, session: Session) -> None:
    text = f" — {verdict.ratio_text}" if verdict.ratio_text else ""
    st.markdown(f"**Verdict: {verdict.verdict}**{escape(text)}")
    if verdict.under_load:
        st.warning("Measured under load (other processes kept the CPU busy"
                   + (", also when taken again" if verdict.remeasured else "")
                   + "): this verdict is unreliable; try again on a quieter machine.")
    elif verdict.remeasured:
        st.caption("The first rounds ran under load; these were taken again once it dropped.")
    st.write(escape(verdict.reason))
    cols = st.columns(2)
    for col, what, cand, ms in ((cols[0], "fused", verdict.fused, verdict.fused_ms),
                                (cols[1], "unfused", verdict.unfused, verdict.unfused_ms)):
        with col:
            if cand is None:
                st.caption(f"No {what} schedule.")
                continue
            st.metric(f"best {what}", f"{ms:.3f} ms" if ms else "n/a")
            st.caption(escape(cand.label) + f" · {cand.plan.weights} weights")
            if _same_chain(verdict.search.chain if verdict.search else session.chain, session):
                st.button(f"Load the {what} schedule", key=f"fusion.verdict.load.{what}",
                          on_click=load, args=(session, cand, what))
    if verdict.fused_layers:
        st.caption("Fused together: " + "; ".join(" + ".join(code(x) for x in group)
                                                  for group in verdict.fused_layers))


def search_section(pool: WorkerPool, session: Session, target: str,
                   progress: Callable[[], None]) -> None:
    """Budget, the two buttons, ``progress()`` (their jobs' progress and Cancel), and the last
    results. The budget keeps its value while another tab is open."""
    st.caption("Templates write ordinary steps for this chain from the machine's facts "
               f"({escape(machine_facts().summary())}); the search builds, validates and times "
               "their variants (tiles, vector axis, fusion, tile rows) within the budget.")
    cols = st.columns([1, 1, 1])
    state.keep("fusion.search.budget", 60)
    budget = cols[0].number_input("budget (s)", min_value=5, max_value=600, step=5,
                                  key="fusion.search.budget")
    if cols[1].button("Search schedules", key="fusion.search.run", width="stretch",
                      disabled=target != "cpu"):
        start_search(pool, session, float(budget))
        st.rerun()
    if cols[2].button("Fuse or not?", key="fusion.verdict.run", width="stretch",
                      disabled=target != "cpu"):
        start_verdict(pool, session, float(budget))
        st.rerun()
    progress()
    for name, render in (("search", render_search), ("verdict", render_verdict)):
        task = background.get(name)
        if task is None or task.running:
            continue
        if task.error:
            st.error(f"{name}: {escape(task.error)}", icon=ERROR_ICON)
        elif task.result is not None:
            render(task.result, session)
        render_flash(name)

"""Target choice, validate and measure (with progress and queue position), the result panel
and the chart of run time across the stored runs of this chain.

Measuring runs in the worker pool only (:func:`playground.service.run`); results are kept as
plain dicts keyed by the session's active steps and target, so going back to a measured
version shows its result again without rerunning it. Every measurement is recorded in the
experiment store (:mod:`ui.store_ui`); the chart reads the chain's stored runs back (other
tabs' and the command line's too), or this tab's when history is not being saved.
"""

from __future__ import annotations

import html
import math
import re

import plotly.graph_objects as go
import streamlit as st

from playground import service
from playground.compile.targets import TARGETS, TargetInfo, info
from playground.measure.load import Load
from playground.measure.sampling import METHOD
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult
from ui import remote_ui, state, store_ui
from ui.store_ui import step_label
from ui.text import ERROR_ICON, WARNING_ICON, escape

STATUS_TEXT = {
    "schedule_error": "The schedule does not apply to this chain.",
    "build_error": "The schedule applies but does not build for this target.",
    "wrong_result": "The kernel ran but computed wrong numbers (compared with numpy, float64).",
    "crash": "The worker process crashed (a segfault?). A fresh worker runs the next job.",
    "timeout": "The job ran past its time limit and was stopped; a fresh worker runs the next.",
    "oom": "The job ran out of memory and was stopped; a fresh worker runs the next job.",
    "error": "The worker reported an unexpected error.",
    "cancelled": "The job was cancelled.",
}


@st.cache_data(show_spinner=False)
def target_info(name: str) -> TargetInfo:
    return info(name)


def target_ui() -> str:
    """The target select (sidebar); applies a target asked for by a loaded preset or import."""
    pending = state.ui().pending_target
    if pending in TARGETS:
        st.session_state["measure.target"] = pending
    state.ui().pending_target = ""
    name = st.selectbox("Target", TARGETS, key="measure.target", label_visibility="collapsed")
    st.caption(escape(target_info(name).description))
    if not target_info(name).can_run:
        st.warning(escape(target_info(name).reason), icon=WARNING_ICON)
    return name


def measure_ui(target: str) -> tuple[bool, bool]:
    """The Validate & measure button and its options; returns (pressed, time it)."""
    remote = remote_ui.device_ui()  # None: this machine
    left, right = st.columns([1, 2], vertical_alignment="center")
    timing = right.checkbox(f"time the kernel (median of {METHOD['repeat']} samples)",
                            value=True, key="measure.timing",
                            help=f"{METHOD['warmup_ms']:g} ms of calls first (threads awake, "
                                 f"pages touched), then {METHOD['repeat']} samples of at least "
                                 f"{METHOD['min_repeat_ms']:g} ms each; the median is shown "
                                 "with its p10–p90 spread")
    right.toggle("constant weights (re-laid out once before timing, as a deployed model)",
                 key="measure.constant_weights", disabled=target != "cpu",
                 help="The schedule's weight copies (cache_read + transform_layout of "
                      "weights) run once into packed buffers; only the kernel is timed.")
    runnable = remote is not None or target_info(target).can_run
    pressed = left.button("Validate & measure" if timing else "Validate", key="measure.run",
                          type="primary", disabled=not runnable, width="stretch")
    return pressed, timing


def weights_mode(target: str = "cpu") -> str:
    """``"constant"`` when the page's constant-weights toggle is on (CPU only), else
    ``"per-call"``: the mode every measurement and search of the page is taken in."""
    on = target == "cpu" and st.session_state.get("measure.constant_weights", False)
    return "constant" if on else "per-call"


def _key(session: Session, target: str, timing: bool) -> str:
    return state.result_key("run", session, target,
                            f"measure={timing}|weights={weights_mode(target)}")


def record(session: Session, target: str, result: JobResult) -> dict:
    """The plain record of one measurement, for the chart."""
    value = result.value or {}
    timing = value.get("timing") or {}
    return {"n": len(state.ui().measurements) + 1, "label": step_label(session),
            "cursor": session.cursor, "target": target, "status": result.status,
            "median_ms": value.get("median_ms"), "p10_ms": timing.get("p10_ms"),
            "p90_ms": timing.get("p90_ms"), "gflops": value.get("gflops"),
            "weights": value.get("weights", "per-call"),
            "load": (timing.get("load") or {}).get("others_cores"),
            "under_load": (timing.get("load") or {}).get("under_load")}


def handle_measure(pressed: bool, timing: bool, pool: WorkerPool, session: Session,
                   target: str) -> None:
    """Run validation (and timing) in the worker, with progress; remember the result."""
    if not pressed:
        return
    verb = "Validating and timing" if timing else "Validating"
    remote = remote_ui.chosen()
    where = target if remote is None else f"{remote.label} ({target})"
    with st.status(f"{verb} on {escape(where)}…", expanded=True) as status:
        line = st.empty()

        def on_event(event: dict) -> None:
            if event.get("event") == "waiting":
                line.write(f"Waiting for a free worker: {event.get('position', 0)} job(s) "
                           "go first (users take turns)…")
            elif event.get("event") == "queued":
                ahead = event.get("position", 0)
                line.write(f"Queued for the measurement slot: {ahead} job(s) ahead…" if ahead
                           else "Next in line for the measurement slot…")
            elif event.get("event") == "started":
                line.write(f"Building, running and checking against numpy in worker "
                           f"{event.get('worker_pid')}…")

        if remote is None:
            result = service.run(pool, session, target, measure=timing, on_event=on_event,
                                 weights=weights_mode(target))
        else:
            result = remote_ui.run_remote(pool, session, target, remote, timing, on_event)
        done = "complete" if result.ok else "error"
        status.update(label=f"{verb} on {escape(where)}: {result.status}", state=done,
                      expanded=False)
    if remote is None:
        state.remember_result(_key(session, target, timing), result)
        state.ui().measurements.append(record(session, target, result))
        # On a measurement farm (PLAYGROUND_TRACKER) the value names the farm that timed it.
        _record(session, target, result, (result.value or {}).get("remote"))
        return
    if remote_ui.field_of(result.where):
        st.rerun()  # the message goes under the field it names (see remote_ui.device_ui)
    state.remember_result(remote_ui.result_key(session, target, remote, timing), result)
    state.ui().measurements.append(record(session, where, result))
    _record(session, target, result, remote.label)


def _record(session: Session, target: str, result: JobResult, remote: str | None) -> None:
    """Store the measurement; say at once (under the result) when it could not be kept."""
    if store_ui.record_measurement(session, target, result, remote) is None and \
            result.status != "cancelled":
        st.warning(store_ui.NOT_SAVED, icon="⚠️")


def current_result(session: Session, target: str) -> JobResult | None:
    remote = remote_ui.chosen()
    if remote is not None:
        return (state.cached_result(remote_ui.result_key(session, target, remote, True))
                or state.cached_result(remote_ui.result_key(session, target, remote, False)))
    return (state.cached_result(_key(session, target, True))
            or state.cached_result(_key(session, target, False)))


def render_failure(result: JobResult) -> None:
    """A failed job: its classification, its one-line message, the long text in an expander."""
    st.error(f"**{escape(result.status)}** — {STATUS_TEXT.get(result.status, '')}  \n"
             f"{escape(result.message)}", icon=ERROR_ICON)
    if result.detail:
        with st.expander("Details"):
            st.code(result.detail, language=None, wrap_lines=True)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def time_text(ms: float | None) -> str:
    """A kernel time short enough for a metric's narrow column, with its unit: ``2.5 s``,
    ``13.83 ms``, ``581 µs``, ``7.22 µs`` (four significant digits from a millisecond up, three
    below: ``0.007219 ms`` was cut to ``0.007219 …`` beside five other metrics); ``—`` when
    there is none. The unit changes where the rounded value would reach the next one (never
    ``1e+03 µs``)."""
    if ms is None or not math.isfinite(ms):
        return "—"
    if ms >= 999.95:
        return f"{ms / 1000:.4g} s"
    return f"{ms:.4g} ms" if ms >= 0.9995 else f"{ms * 1000:.3g} µs"


def _compiled(value: dict) -> str:
    seconds = value.get("compile_s") or 0.0
    return f"compiled in {seconds:.2f} s" if seconds else "build reused from the worker's cache"


def _weights_text(value: dict) -> str:
    if value.get("weights") == "constant":
        packed = len(value.get("packed") or [])
        return f"constant weights ({packed} buffer(s) packed once, not timed)"
    return "weights re-laid out on every call"


def render_result(result: JobResult | None) -> None:
    """The result panel: valid, correct, errors, time with spread, GFLOP/s, compile time."""
    if result is None:
        st.caption("Not validated yet: press the button to build, check and time this version.")
        return
    value = result.value or {}
    built = result.status not in ("schedule_error", "build_error") and bool(value)
    timing = value.get("timing") or {}
    cols = st.columns(6)
    cols[0].metric("Valid (builds)", "yes" if built else "no")
    cols[1].metric("Correct", {True: "yes", False: "no"}.get(value.get("correct"), "—"))
    cols[2].metric("Max abs error", _fmt(value.get("max_abs_error"), ".2e"))
    cols[3].metric("Max rel error", _fmt(value.get("max_rel_error"), ".2e"))
    cols[4].metric("Median time", time_text(value.get("median_ms")),
                   help="median of the repeats; p10–p90 below")
    cols[5].metric("GFLOP/s", _fmt(value.get("gflops"), ".2f"))
    if timing:
        st.caption(f"p10–p90: {timing['p10_ms']:.3f}–{timing['p90_ms']:.3f} ms "
                   f"(spread {timing['spread']:.1%}) over {timing['repeats']} repeats of "
                   f"{timing['number']} call(s) · {_weights_text(value)} · "
                   f"{_compiled(value)}")
    elif value.get("compile_s") is not None:
        st.caption(_compiled(value))
    render_load(timing)
    remote_ui.render_remote(value)
    if value.get("message") and value.get("correct") is False:
        st.caption(escape(value["message"]))
    if not result.ok:
        render_failure(result)


def render_load(timing: dict) -> None:
    """The machine's load while the kernel was timed; a warning when it was under load."""
    if not timing:
        return
    if not timing.get("load"):
        st.caption("Load while timing: not known (measured on another machine, or an older "
                   "record).")
        return
    load = Load.from_dict(timing["load"])
    if load.under_load:
        st.warning(f"Measured under load: {load.summary()}. Other processes took CPU from "
                   "the kernel; measure again when the machine is quieter.", icon="⚠️")
    else:
        st.caption(f"Load while timing: {load.summary()}.")


def short_label(label: str, most: int = 26, keep: int = 0) -> str:
    """``label`` in at most ``most`` characters (a little more when ``keep`` asks): its start
    and its end with "…" between; at least the first ``keep`` characters stay whole."""
    if len(label) <= most:
        return label
    head = max((most - 1) // 2, keep)
    tail = most - 1 - head
    return label[:head] + "…" + (label[-tail:] if tail >= 6 else "")


def short_labels(labels: list[str], most: int = 26) -> list[str]:
    """Each ``"n: step"`` label cut to about ``most`` characters, so that steps that differ
    stay different on the chart: where two cut labels would read the same (``split conv1.h
    factors=[None, 2]`` and ``split conv1.w …`` both cut to ``split con…[None, 2]``), each
    keeps its start up to the first character where it differs from the other."""
    parts = [re.match(r"(\d+: )?(.*)", x, re.S).groups() for x in labels]
    steps = [step for _, step in parts]
    first = [short_label(step, most) for step in steps]
    cut = list(first)
    for i, step in enumerate(steps):
        clash = [other for j, other in enumerate(steps)
                 if other != step and first[j] == first[i]]
        if clash:
            differ = max(next((k for k, (a, b) in enumerate(zip(step, other)) if a != b),
                              min(len(step), len(other))) for other in clash)
            cut[i] = short_label(step, most, keep=differ + 1)
    for i, step in enumerate(steps):  # widened ones that still read alike: whole
        if any(other != step and cut[j] == cut[i] for j, other in enumerate(steps)):
            cut[i] = step
    return [(number or "") + text for (number, _), text in zip(parts, cut, strict=True)]


def history_figure(records: list[dict]) -> go.Figure | None:
    """Median time (with p10–p90 bars) of each measurement, labelled with its step: above
    the bar, slanted (neighbours do not overlap), never cut by the plot's edge."""
    points = [r for r in records if r.get("median_ms") is not None]
    if not points:
        return None
    fig = go.Figure()
    for target in dict.fromkeys(r["target"] for r in points):
        rs = [r for r in points if r["target"] == target]
        fig.add_trace(go.Scatter(
            x=[r["n"] for r in rs], y=[r["median_ms"] for r in rs], name=target,
            mode="lines+markers",
            # Plotly reads tags (<a href>) in text: the labels are escaped.
            hovertext=[html.escape(r["label"]) + (" (under load)" if r.get("under_load") else "")
                       for r in rs],
            marker={"symbol": ["x" if r.get("under_load") else "circle" for r in rs],
                    "size": 9},
            hovertemplate="#%{x}: %{hovertext}<br>%{y:.3f} ms<extra></extra>",
            error_y={"type": "data", "symmetric": False,
                     "array": [(r["p90_ms"] or r["median_ms"]) - r["median_ms"] for r in rs],
                     "arrayminus": [r["median_ms"] - (r["p10_ms"] or r["median_ms"])
                                    for r in rs]}))
    top = max(r["p90_ms"] or r["median_ms"] for r in points)
    for r, text in zip(points, short_labels([r["label"] for r in points]), strict=True):
        fig.add_annotation(x=r["n"], y=r["p90_ms"] or r["median_ms"], yshift=8,
                           text=html.escape(text), showarrow=False,
                           textangle=-20, xanchor="left", yanchor="bottom",
                           font={"size": 11})
    fig.update_layout(xaxis_title="measurement #", yaxis_title="median time (ms)",
                      height=360, margin={"l": 60, "r": 150, "t": 20, "b": 50},
                      xaxis={"dtick": 1, "range": [0.5, len(records) + 0.5]},
                      # Room above the highest bar for its slanted label.
                      yaxis={"range": [0, top * 1.6]},
                      showlegend=len(fig.data) > 1)
    return fig


def render_history_chart(session: Session) -> None:
    """The chain's stored runs (every tab's, the command line's), or this tab's measurements
    while history is not being saved."""
    stored = store_ui.chain_history(session)
    records = stored if stored is not None else state.ui().measurements
    fig = history_figure(records)
    if fig is None:
        st.caption("Each measurement adds a point here, labelled with its last step.")
        return
    st.plotly_chart(fig, key="measure.chart")
    if stored is not None:
        runs = "timed run" if len(records) == 1 else f"{len(records)} timed runs"
        st.caption(f"The last {runs} of this chain in the experiment store (every tab and the "
                   "command line), oldest first; the Experiments tab has them all.")
    else:
        st.caption("The runs measured in this tab (history is not being saved).")
    if any(r.get("under_load") for r in records):
        st.caption("× marks a time measured under load (see the result's load line).")

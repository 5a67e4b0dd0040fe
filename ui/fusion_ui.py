"""Fusion explorer: what fusing convolutions trades away, read from the schedule and measured.

Sections: the template search and the fuse-or-not verdict (:mod:`ui.search_ui`), the
analysis of the current schedule (work done against work needed, compacted
footprints, traffic, intensity), the tile-and-halo picture of one iteration, sweeps of a
schedule parameter (time against the parameter, against redundant work and footprint, with
the Pareto front), the machine's roofline, a MetaSchedule baseline to import, and a comparison
table. Everything heavy runs in the worker; sweeps, tuning and comparisons run in a background
thread of this tab (:mod:`ui.background`) so that the page stays usable and can cancel them.
"""

from __future__ import annotations

import threading
import time

import streamlit as st

from playground import service
from playground.errors import PlaygroundError
from playground.explore import compare, sweep, sweep_report, tuning
from playground.explore.halo import TileDefaults, TileRegions, halo_figure, tile_defaults
from playground.measure import peak as peak_mod
from playground.schedule.replay import blocks
from playground.schedule.session import Session
from playground.worker.job_table import ANALYZE, TILE_REGIONS, Job
from playground.worker.pool import WorkerPool
from ui import background, search_ui, state
from ui.text import ERROR_ICON, code, escape

#: Session-state key (not a widget): the comparison rows shown while new ones are measured.
PREVIOUS_COMPARISON = "fusion._previous_comparison"
INTRO = (
    "Fusing with `compute_at` keeps a producer's tile in cache (producer–consumer locality) "
    "but recomputes the halo that neighbouring tiles share (redundant work). Whether it pays "
    "depends on the shapes: read both sides below, then sweep the tile size and measure.")


def _job(pool: WorkerPool, session: Session, job: Job, extra: dict, spinner: str):
    key = state.result_key(job.name, session, "cpu", repr(sorted(extra.items())))
    return state.run_cached(key, lambda: job.call(pool, service.payload(session, "cpu", **extra),
                                                  timeout_s=180.0), spinner)


# ----------------------------------------------------------------------------- analysis

def render_analysis(pool: WorkerPool, session: Session) -> dict | None:
    """The analysis table of the current schedule; returns the analysis dict."""
    st.markdown("#### Work, footprint and traffic of this schedule")
    result = _job(pool, session, ANALYZE, {}, "Lowering and analysing the schedule…")
    if not result.ok:
        st.error(f"analysis failed ({result.status}): {escape(result.message)}", icon=ERROR_ICON)
        return None
    a = result.value
    cols = st.columns(5)
    done, needed = a["flop_done"] / 1e6, a["flop_needed"] / 1e6
    digits = 0 if needed >= 100 else 1
    cols[0].metric("MFLOP done / needed", f"{done:,.{digits}f} / {needed:,.{digits}f}")
    cols[1].metric("redundant work", f"{a['redundancy']:.3f}x",
                   help="FLOP the code executes / FLOP the chain needs (1.0: no recomputation)")
    cols[2].metric("allocated", f"{a['allocated_bytes'] / 1024:,.1f} KiB",
                   help="intermediate buffers after compaction and memory sharing")
    moved = a["bytes_moved"] / 1024
    cols[3].metric(f"moved past {a['cache_level']}",
                   f"{moved / 1024:,.1f} MiB" if moved >= 10 * 1024 else f"{moved:,.0f} KiB",
                   help="estimated bytes to and from memory (see the model in "
                        "playground/explore/analysis.py: traffic)")
    intensity = a.get("arithmetic_intensity")
    cols[4].metric("FLOP/byte", "∞" if intensity is None else f"{intensity:,.1f}")
    st.dataframe([{"block": b["block"], "FLOP/iter": b["flop_per_iter"],
                   "iterations done": b["iterations_done"],
                   "iterations needed": b["iterations_needed"],
                   "redundancy": round(b["redundancy"], 4),
                   "MFLOP done": round(b["flop_done"] / 1e6, 3)} for b in a["blocks"]],
                 hide_index=True, key="fusion.blocks")
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in a["caches"].items())
    st.dataframe([{"buffer": b["name"], "role": b["role"],
                   "shape": "x".join(map(str, b["shape"])),
                   "compacted": "x".join(map(str, b["compact_shape"])),
                   "KiB": round(b["bytes"] / 1024, 1), "fits": b["fits"],
                   "moved KiB": round(b["traffic_bytes"] / 1024, 1)} for b in a["buffers"]],
                 hide_index=True, key="fusion.buffers")
    st.caption(f"Caches of this machine: {caches}.")
    decided = a.get("tile_local") or []
    if decided:
        dropped = [b for b, why in decided if not why]
        kept = [f"{b} ({why})" for b, why in decided if why]
        st.caption("Tile-local step: " + "; ".join(
            ([f"border predicate dropped, tile-sized: {', '.join(dropped)}"] if dropped else [])
            + ([f"predicate kept: {'; '.join(kept)}"] if kept else [])))
    return a


# ----------------------------------------------------------------------------- halo

def halo_ui(session: Session) -> tuple[str, str, dict] | None:
    """Block, loop and iteration of the tile to draw (defaults: the fused block and its tile
    loop, else the output block; a tile in the middle so that its halo is not clipped by the
    border). See :func:`playground.explore.halo.tile_defaults`."""
    infos = {b.name: b for b in blocks(session.schedule())}
    names = list(infos)
    kept = st.session_state.get("fusion.halo.defaults")
    if kept is not None and kept[0] == session.key():
        defaults = kept[1]
    else:
        try:
            defaults = tile_defaults(session.chain, session.steps)
        except PlaygroundError:  # a loop TVM cannot bound: the picture says why, when drawn
            defaults = TileDefaults(names[-1], {}, False)
        st.session_state["fusion.halo.defaults"] = (session.key(), defaults)
    default = defaults.block if defaults.block in names else names[-1]
    cols = st.columns(3)
    # Keyed by the blocks and the default, so that the defaults follow a changed schedule.
    block = cols[0].selectbox("block", names, index=names.index(default),
                              key=f"fusion.halo.block.{default}.{'.'.join(names)}")
    info = infos[block]
    if not info.loops:
        st.info(f"{code(block)} has no loops.")
        return None
    loop_names = [lp.name for lp in info.loops]
    first = defaults.loops.get(block)
    loop = cols[1].selectbox("tile loop", loop_names,
                             index=loop_names.index(first) if first in loop_names else 0,
                             key=f"fusion.halo.loop.{block}.{session.key()[-64:]}")
    depth = loop_names.index(loop) + 1
    iteration = {}
    inner = cols[2].columns(max(1, min(depth, 4)))
    for i, lp in enumerate(info.loops[:depth]):
        if (lp.extent or 1) <= 1:
            continue
        iteration[lp.name] = inner[i % len(inner)].number_input(
            lp.name, min_value=0, max_value=(lp.extent or 1) - 1, value=(lp.extent or 1) // 2,
            step=1, key=f"fusion.halo.it.{block}.{lp.name}.{lp.extent}")
    return block, loop, {k: int(v) for k, v in iteration.items()}


def render_halo(pool: WorkerPool, session: Session, choice: tuple[str, str, dict]) -> None:
    block, loop, iteration = choice
    result = _job(pool, session, TILE_REGIONS,
                  {"block": block, "loop": loop, "iteration": iteration},
                  "Computing the regions of this tile…")
    if not result.ok:
        st.error(escape(result.message), icon=ERROR_ICON)
        return
    regions = TileRegions.from_dict(result.value)
    st.plotly_chart(halo_figure(regions), key="fusion.halo.figure")
    runs = ", ".join(f"{code(b)} ×{n:,}" for b, n in regions.iterations.items())
    at = ", ".join(f"{code(k)} = {v}" for k, v in iteration.items()) or "its first value"
    st.caption(f"One iteration of {code(loop)} (at {at}) runs: {runs}. "
               "Red: region the next iteration computes again (the halo).")


# ----------------------------------------------------------------------------- sweeps

def sweep_ui(session: Session) -> tuple[sweep.SweepParam, list] | None:
    params = sweep.sweep_parameters(session)
    if not params:
        st.info("Nothing to sweep yet: add a split or a compute_at step on the Playground tab "
                "(or load a preset such as seed_two_conv_fused).")
        return None
    labels = [p.label for p in params]
    label = st.selectbox("parameter", labels, key="fusion.sweep.param")
    param = params[labels.index(label)]
    values = st.multiselect("values", list(param.candidates), default=list(param.candidates),
                            key=f"fusion.sweep.values.{label}")
    return param, values


def start_sweep(pool: WorkerPool, session: Session, param, values: list) -> None:
    def work(task: background.Task):
        def progress(i: int, n: int, point) -> None:
            task.progress = i / n
            shown = f"{point.median_ms:.3f} ms" if point.median_ms else point.status
            task.text = f"{i}/{n}: {param.label} = {point.value} → {shown}"

        # Recorded as one "sweep" group of the experiment store, a point at a time.
        return sweep.run_sweep(pool, session, param, values, on_progress=progress,
                               cancel=task.cancel, record=True)

    background.start("sweep", work)


#: How the sweep table shows each field; the data keep full precision (sorting, the CSV).
SWEEP_COLUMNS = {
    "median_ms": st.column_config.NumberColumn("median (ms)", format="%.3f"),
    "gflops": st.column_config.NumberColumn("GFLOP/s", format="%.2f"),
    "spread": st.column_config.NumberColumn("p10–p90 spread", format="percent"),
    "ci_low_ms": st.column_config.NumberColumn("95% interval from (ms)", format="%.3f"),
    "ci_high_ms": st.column_config.NumberColumn("to (ms)", format="%.3f"),
    "max_abs_error": st.column_config.NumberColumn("max abs error", format="%.1e"),
    "redundancy": st.column_config.NumberColumn("redundant work", format="%.3fx"),
    "footprint_bytes": st.column_config.NumberColumn("footprint", format="bytes"),
    "intensity": st.column_config.NumberColumn("FLOP/byte", format="%.1f"),
}


def render_sweep(result: sweep.SweepResult) -> None:
    if result.cancelled:
        st.warning(f"Sweep cancelled after {len(result.points)} point(s).")
    st.plotly_chart(sweep_report.sweep_figure(result), key="fusion.sweep.figure")
    if result.analysis:
        st.plotly_chart(sweep_report.tradeoff_figure(result), key="fusion.sweep.tradeoff")
    st.dataframe([{k: v for k, v in p.to_dict().items() if k != "steps"}
                  for p in result.points], hide_index=True, key="fusion.sweep.table",
                 column_config=SWEEP_COLUMNS)
    best = result.best()
    if best is not None:
        close = [p for p in result.points if p is not best and p.ci_low_ms is not None
                 and best.ci_high_ms is not None and p.ci_low_ms <= best.ci_high_ms]
        within = (f" Within noise of it: {', '.join(escape(p.value) for p in close)} "
                  "(their 95% intervals overlap)." if close else "")
        st.success(f"Fastest correct point: {escape(result.param.label)} = "
                   f"{escape(best.value)} ({best.median_ms:.3f} ms).{within}")
    st.download_button("Download CSV", sweep_report.to_csv(result), file_name="sweep.csv",
                       mime="text/csv", key="fusion.sweep.csv")
    for note in result.notes:
        st.caption(escape(note))


# ----------------------------------------------------------------------------- tuning

def start_tuning(pool: WorkerPool, session: Session, trials: int) -> None:
    estimate = tuning.estimate_seconds(trials)

    def work(task: background.Task):
        def tick() -> None:
            while not task.done:
                task.progress = min(0.99, task.elapsed_s / estimate)
                task.text = (f"MetaSchedule, {trials} trials: {task.elapsed_s:.0f} s of about "
                             f"{estimate:.0f} s")
                time.sleep(0.5)

        threading.Thread(target=tick, daemon=True).start()
        return tuning.tune(pool, session, trials, cancel=task.cancel)

    background.start("tune", work)


def render_tuning(result, session: Session) -> None:
    if result.status != "ok":
        st.error(f"tuning {result.status}: {escape(result.message)}", icon=ERROR_ICON)
        return
    tuned = tuning.TuneResult.from_value(result.value)
    best = f"{tuned.best_ms:.3f} ms" if tuned.best_ms else "n/a"
    runner = "checked and timed as Run does" + ("" if tuned.runner == "local"
                                                else f", on {tuned.runner}")
    st.write(f"Best of {tuned.trials} trials: **{best}** ({runner}), found in "
             f"{tuned.tune_s:.0f} s; {len(tuned.steps)} steps"
             + ("" if tuned.complete else f" (stopped at {code(tuned.unsupported)})") + ".")
    for note in tuned.notes:  # e.g. faster schedules skipped because TVM miscompiles them
        st.caption(escape(note))
    if tuned.dropped:
        with st.expander(f"{len(tuned.dropped)} instruction(s) not carried over"):
            st.code("\n".join(tuned.dropped), language="text")
    if st.button("Import the tuned steps into the session", key="fusion.tune.import"):
        try:
            new = Session.new(session.chain, [s.to_dict() for s in tuned.steps])
        except PlaygroundError as e:
            st.error(escape(e.message), icon=ERROR_ICON)
            return
        state.replace_session(new, "the tuned schedule")
        st.rerun()


# ----------------------------------------------------------------------------- comparison

def start_comparison(pool: WorkerPool, session: Session) -> None:
    tuned_task = background.get("tune")
    tuned_steps = None
    if tuned_task is not None and tuned_task.done and tuned_task.result is not None \
            and tuned_task.result.status == "ok":
        tuned_steps = tuning.TuneResult.from_value(tuned_task.result.value).steps
    auto_task = background.get("search")
    auto_steps = None
    if auto_task is not None and auto_task.done and auto_task.result is not None \
            and auto_task.result.chain == session.chain and auto_task.result.best():
        auto_steps = auto_task.result.best().steps

    def work(task: background.Task):
        def progress(i: int, n: int, row) -> None:
            task.progress = i / n
            task.text = f"{i}/{n}: {row.name} → {row.status}"

        return compare.comparison_table(pool, session, tuned=tuned_steps, auto=auto_steps,
                                        on_progress=progress, cancel=task.cancel)

    old = background.get("compare")
    if old is not None and old.done and old.result:
        st.session_state[PREVIOUS_COMPARISON] = old.result
    background.start("compare", work)


def render_comparison() -> None:
    """The last comparison table; while a new one is measured, the one before stays (with a
    line saying so) instead of an empty space."""
    task = background.get("compare")
    if task is not None and task.running:
        rows = st.session_state.get(PREVIOUS_COMPARISON)
        if rows:
            st.caption("The table measured before; the new one replaces it when it is done.")
            _comparison_table(rows)
        return
    _render_task_result("compare", _comparison_table)


def _comparison_table(rows) -> None:
    with st.container(key="fusion.compare.box"):
        st.dataframe(compare.rows_to_records(rows), hide_index=True,
                     key="fusion.compare.table")


# ----------------------------------------------------------------------------- roofline

def render_roofline(pool: WorkerPool, session: Session, analysis: dict | None) -> None:
    peak = peak_mod.cached_peak()
    if st.button("Measure this machine's peak" if peak is None else "Measure the peak again",
                 key="fusion.peak"):
        with st.spinner("Timing a vectorized FMA kernel and a triad over 256 MiB…"):
            try:
                peak = peak_mod.measure_peak(pool, refresh=True)
            except PlaygroundError as e:
                st.error(escape(e.message), icon=ERROR_ICON)
    if peak is None:
        st.caption("The roofline needs the machine's peak GFLOP/s and bandwidth: measure once "
                   "(about 10 s, cached on disk).")
        return
    points = []
    from ui import measure_ui

    run = measure_ui.current_result(session, "cpu")
    if analysis and run is not None and run.ok and run.value.get("gflops"):
        points.append({"name": f"current ({session.cursor} steps)",
                       "gflops": run.value["gflops"],
                       "intensity": analysis.get("arithmetic_intensity")})
    task = background.get("sweep")
    if task is not None and task.done and isinstance(task.result, sweep.SweepResult):
        for p in task.result.points:
            if p.gflops and getattr(p, "intensity", None):
                points.append({"name": str(p.value), "gflops": p.gflops,
                               "intensity": p.intensity})
    st.plotly_chart(peak_mod.roofline_figure(peak.gflops, peak.bandwidth_gbs, points),
                    key="fusion.roofline")
    if not points:
        st.caption("Measure the schedule (Playground tab) or run a sweep to place points.")


# ----------------------------------------------------------------------------- page

def render_tasks(*names: str) -> None:
    """Progress and Cancel of this tab's background jobs ``names``, drawn where it is called
    (beside the button that started them), refreshed every second while any of them runs;
    nothing (and no polling) while none does."""
    if any(t is not None and t.running for t in map(background.get, names)):
        _poll_tasks(names)


@st.fragment(run_every=1.0)
def _poll_tasks(names: tuple[str, ...]) -> None:
    running = False
    for name in names:
        task = background.get(name)
        if task is None or task.done:
            continue
        running = True
        cols = st.columns([6, 1], vertical_alignment="bottom")
        cols[0].progress(task.progress, text=f"{name}: {task.text}")
        if cols[1].button("Cancel", key=f"fusion.cancel.{name}"):
            task.cancel.set()
    if not running:
        st.rerun()  # show the finished job's results on the whole page


def _render_task_result(name: str, render) -> None:
    task = background.get(name)
    if task is None or task.running:
        return
    if task.error:
        st.error(f"{name}: {escape(task.error)}", icon=ERROR_ICON)
    elif task.result is not None:
        render(task.result)


def page(pool: WorkerPool, target: str) -> None:
    """The Fusion explorer tab (CPU analysis and measurements)."""
    session = state.session()
    st.markdown(INTRO)
    st.markdown("#### Search schedules, and fuse or not")
    search_ui.search_section(pool, session, target, lambda: render_tasks(*search_ui.TASKS))
    analysis = render_analysis(pool, session)

    st.markdown("#### One tile and its halo")
    choice = halo_ui(session)
    if choice is not None:
        render_halo(pool, session, choice)

    st.markdown("#### Sweep a parameter")
    chosen = sweep_ui(session)
    if chosen is not None and st.button("Run sweep", key="fusion.sweep.run",
                                        disabled=not chosen[1]):
        start_sweep(pool, session, *chosen)
        st.rerun()
    render_tasks("sweep")
    _render_task_result("sweep", render_sweep)

    st.markdown("#### Roofline")
    render_roofline(pool, session, analysis)

    st.markdown("#### Auto-tuning baseline (MetaSchedule)")
    cols = st.columns([1, 2])
    state.keep("fusion.tune.trials", 32)
    trials = cols[0].number_input("trials", min_value=1, max_value=tuning.MAX_TRIALS, step=16,
                                  key="fusion.tune.trials")
    cols[1].caption(f"About {tuning.estimate_seconds(int(trials)):.0f} s on this machine; the "
                    "best schedule comes back as steps you can import and keep editing.")
    if st.button("Tune", key="fusion.tune.run"):
        start_tuning(pool, session, int(trials))
        st.rerun()
    render_tasks("tune")
    _render_task_result("tune", lambda r: render_tuning(r, session))

    st.markdown("#### Comparison")
    if st.button("Measure the comparison table", key="fusion.compare.run"):
        start_comparison(pool, session)
        st.rerun()
    render_tasks("compare")
    render_comparison()
    if target != "cpu":
        st.caption("The explorer analyses and measures on the host CPU.")

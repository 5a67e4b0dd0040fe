"""Two stored experiments side by side: their times and facts, the diff of their steps, and
the diff of their IR (the scheduled TVMScript, derived in process, or the lowered TIR from the
worker, cached like the Inspect panel's)."""

from __future__ import annotations

import difflib

import pandas as pd
import streamlit as st

from playground import service
from playground.errors import PlaygroundError
from playground.measure.stats import CONFIDENCE, unpaired_ratio
from playground.schedule.session import Session
from playground.schedule.views import script_after
from playground.store import get_store
from playground.store.records import iso
from playground.worker.pool import WorkerPool
from ui import state
from ui.store_ui import step_labels, table_height

IR_KINDS = ("Scheduled TVMScript", "Lowered TIR")


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def facts(r: dict) -> dict[str, str]:
    """What the comparison table shows of one experiment, as text."""
    timing = _timing(r)
    return {"status": r["status"], "correct": {1: "yes", 0: "no"}.get(r["correct"], "—"),
            "median ms": _ms(r["median_ms"]), "p10 ms": _ms(timing.get("p10_ms")),
            "p90 ms": _ms(timing.get("p90_ms")),
            "GFLOP/s": "—" if r["gflops"] is None else f"{r['gflops']:.2f}",
            "steps": str(r["n_steps"]), "target": r["target"], "machine": r["machine_name"],
            "chain": r["chain_name"], "recorded": iso(r["created"]), "label": r["label"]}


def times_table(a: dict, b: dict) -> pd.DataFrame:
    """One row per fact, one column per experiment (how they compare: :func:`speedup_line`)."""
    fa, fb = facts(a), facts(b)
    return pd.DataFrame([{"": k, f"#{a['id']}": fa[k], f"#{b['id']}": fb[k]} for k in fa])


def _timing(r: dict) -> dict:
    return (r["result"] or {}).get("timing") or {}


def _samples(r: dict) -> list[float]:
    return list(_timing(r).get("samples_ms") or [])


def _loaded(r: dict) -> bool:
    return bool((_timing(r).get("load") or {}).get("under_load"))


def _weights(r: dict) -> str:
    return str((r["result"] or {}).get("weights") or "per-call")


def speedup_line(a: dict, b: dict) -> str | None:
    """One sentence: how the right experiment's time compares with the left's, with the
    interval of that ratio from each run's samples, and what makes the two not comparable
    (other chain, target, machine or weights mode; a run under load). None without times.

    The two runs were timed apart, not in paired rounds, so the sentence gives the ratio and
    its interval but never calls it a win: that needs a comparison timed side by side (the
    Fusion explorer's verdict, or ``python -m playground fusion``)."""
    if not (a["median_ms"] and b["median_ms"]):
        return None
    sa, sb = _samples(a), _samples(b)
    if sa and sb:
        ratio, low, high = unpaired_ratio(sa, sb)
        interval = f" ({CONFIDENCE:.0%} interval {low:.2f}-{high:.2f}x from each run's samples)"
    else:
        ratio, interval = a["median_ms"] / b["median_ms"], " (no samples stored: no interval)"
    faster = "faster" if ratio >= 1 else "slower"
    factor = ratio if ratio >= 1 else 1 / ratio
    caveats = [what for what, differs in (
        ("different chains", a["chain_key"] != b["chain_key"]),
        ("different targets", a["target"] != b["target"]),
        ("different machines", a["machine_key"] != b["machine_key"]),
        (f"weights {_weights(a)} vs {_weights(b)}", _weights(a) != _weights(b)),
        ("timed under load", _loaded(a) or _loaded(b)),
    ) if differs]
    line = (f"#{b['id']} ran {factor:.2f}x {faster} than #{a['id']} (left time / right time "
            f"= {ratio:.2f}x{interval}); timed apart, not side by side")
    return line + (f". Not like for like: {', '.join(caveats)}." if caveats else ".")


def _diff(a: list[str], b: list[str], left: str, right: str) -> str:
    return "\n".join(difflib.unified_diff(a, b, fromfile=left, tofile=right, lineterm=""))


def step_lines(r: dict) -> list[str]:
    return step_labels(r["steps"])


def ir_text(pool: WorkerPool, r: dict, kind: str) -> str:
    """The experiment's scheduled TVMScript or lowered TIR (raises PlaygroundError when its
    steps no longer apply)."""
    session = Session.new(r["chain"], r["steps"])
    if kind == IR_KINDS[0]:
        return script_after(session.chain, session.active)
    target = r["target"]
    result = state.run_cached(state.result_key("lower", session, target),
                              lambda: service.lower(pool, session, target),
                              f"Lowering #{r['id']} in the worker…")
    if not result.ok:
        raise PlaygroundError(f"#{r['id']} does not lower ({result.status}): {result.message}")
    return result.value["text"]


def compare_ui(pool: WorkerPool, rows: list[dict], target: str) -> None:
    """Pick two of the listed experiments; show them side by side and their diffs."""
    if len(rows) < 2:
        st.caption("Two experiments are needed to compare.")
        return
    by_id = {r["id"]: r for r in rows}
    ids = list(by_id)
    left, right = st.columns(2)

    def name(i: int) -> str:
        r = by_id[i]
        return f"#{i} · {iso(r['created'])[:16]} · {_ms(r['median_ms'])} ms · {r['label']}"

    a_id = left.selectbox("left", ids, index=1, key="exp.compare.a", format_func=name)
    b_id = right.selectbox("right", ids, index=0, key="exp.compare.b", format_func=name)
    store = get_store()
    a, b = store.get(a_id), store.get(b_id)
    table = times_table(a, b)
    st.dataframe(table, hide_index=True, key="exp.compare.table",
                 height=table_height(len(table)))
    line = speedup_line(a, b)
    if line:
        st.text(line)
    steps_diff = _diff(step_lines(a), step_lines(b), f"#{a_id} steps", f"#{b_id} steps")
    # Collapsed: two searched schedules are a hundred steps and a few thousand IR lines.
    with st.expander("Steps, side by side" + (" and their diff" if steps_diff
                                              else ": the same steps")):
        left, right = st.columns(2)
        for col, r in ((left, a), (right, b)):
            col.code("\n".join(step_lines(r)) or "(no steps)", language=None)
        if steps_diff:
            st.code(steps_diff, language="diff")
    with st.expander("IR diff"):
        _ir_diff(pool, a, b)


def _ir_diff(pool: WorkerPool, a: dict, b: dict) -> None:
    kind = st.radio("IR diff", IR_KINDS, key="exp.compare.ir", horizontal=True)
    try:
        texts = [ir_text(pool, r, kind).splitlines() for r in (a, b)]
    except PlaygroundError as e:
        st.error(f"No IR diff: {e.message}")
        return
    ir_diff = _diff(*texts, f"#{a['id']}", f"#{b['id']}")
    if not ir_diff:
        st.caption(f"The same {kind}.")
        return
    st.code(ir_diff, language="diff")

"""The Experiments tab: every stored run, sweep and search, filtered; one experiment in full
(restore it into the session, star it, annotate it, delete it); two side by side
(:mod:`ui.compare_ui`); the leaderboard of a chain on a machine; sessions saved by name.

A thin reader of :mod:`playground.store`: the store does the filtering and the ranking.
Everything here survives a store that cannot be read (the tab says so and stops); text that
people wrote (labels, notes, session names) is shown in tables, code blocks and widget values,
never as Markdown (see :mod:`ui.store_ui`).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from playground.compile.targets import TARGETS
from playground.errors import PlaygroundError
from playground.schedule.session import Session
from playground.store import Store, StoreError, get_store
from playground.store.records import chain_key, iso, machine_key
from playground.worker.pool import WorkerPool
from ui import compare_ui, state, store_ui
from ui.io_ui import replaced_text
from ui.store_ui import step_labels

#: Rows the list shows at most (newest first); filters narrow the rest down.
MAX_ROWS = 500
ALL = ""
THIS = "this"


def fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g} ms"


def option_text(row: dict) -> str:
    """A row as a picker's option (plain text): ``#12 · 2026-11-27 10:02 · run · ok · ...``."""
    star = "★ " if row.get("starred") else ""
    return (f"{star}#{row['id']} · {iso(row['created'])[:16]} · {row['kind']} · "
            f"{row['status']} · {fmt_ms(row['median_ms'])} · {row['label']}")


# ----------------------------------------------------------------------------- restoring

def restore(chain: dict, steps: list[dict], target: str, what: str) -> None:
    """Callback: make (chain, steps) the session, open the Playground tab; or say why not."""
    try:
        new = Session.new(chain, steps)
    except PlaygroundError as e:
        state.say("error", f"{what} cannot be restored, the session is unchanged: "
                           f"{e.message}")
        return
    before = state.session()
    state.replace_session(new, f"restored {what}")
    if target in TARGETS:
        state.ui().pending_target = target
    state.say("success", f"Restored {what}: {len(new.steps)} step(s). "
                         f"{replaced_text(before)}", "history")
    st.session_state["page"] = "Playground"


def _restore_experiment(experiment_id: int) -> None:
    r = _act(lambda s: s.get(experiment_id))
    if r is not None:
        restore(r["chain"], r["steps"], r["target"], f"experiment #{experiment_id}")


# ----------------------------------------------------------------------------- filters, list

def _choice(label: str, options: list[dict], key: str, this: str, *, everything: str = "",
            all_first: bool = False) -> str:
    """A select over facet ``options`` that returns a key: ``THIS`` (the session's own),
    ``ALL`` (named ``everything``; offered only when given), then the others."""
    first = ([ALL] if everything else []) + [THIS]
    keys = (first if all_first else first[::-1]) + [o["key"] for o in options
                                                    if o["key"] != this]
    names = {o["key"]: f"{o['name']} ({o['count']})" for o in options}
    names |= {ALL: everything, THIS: f"this {label}"}
    return st.selectbox(label, keys, format_func=names.get, key=key)


def filters_ui(facets: dict, session: Session, this_machine: str) -> dict:
    """The filters; returns ``list_experiments`` keyword arguments."""
    cols = st.columns([3, 3, 1, 2, 2])
    with cols[0]:
        chain = _choice("chain", facets["chains"], "exp.chain", chain_key(session.chain),
                        everything="all chains", all_first=True)
    with cols[1]:
        machine = _choice("machine", facets["machines"], "exp.machine", this_machine,
                          everything="all machines", all_first=True)
    target = cols[2].selectbox("target", [ALL] + [t["key"] for t in facets["targets"]],
                               format_func=lambda t: t or "all", key="exp.target")
    since = cols[3].date_input("from", value=None, key="exp.since")
    until = cols[4].date_input("until", value=None, key="exp.until")
    left, right = st.columns(2)
    starred = left.checkbox("starred only", key="exp.starred")
    children = right.checkbox("list sweep and search candidates too", key="exp.children")
    chain = chain_key(session.chain) if chain == THIS else chain
    machine = this_machine if machine == THIS else machine
    return {"chain": chain or None, "machine": machine or None, "target": target or None,
            "since": since, "until": until, "starred": True if starred else None,
            "everything": children}


def render_list(rows: list[dict], total_hint: str) -> None:
    table = pd.DataFrame([{
        "★": "★" if r["starred"] else "", "#": r["id"], "when": iso(r["created"])[:16],
        "kind": r["kind"] + (f" ({r['children']})" if r["children"] else ""),
        "status": r["status"], "median ms": r["median_ms"], "label": r["label"],
        "note": r["note"], "chain": r["chain_name"], "target": r["target"],
        "machine": r["machine_name"], "GFLOP/s": r["gflops"]} for r in rows])
    st.dataframe(table, hide_index=True, key="exp.table",
                 height=min(420, store_ui.table_height(len(rows))),
                 column_config={"median ms": st.column_config.NumberColumn(format="%.4g"),
                                "GFLOP/s": st.column_config.NumberColumn(format="%.2f")})
    st.caption(total_hint)


# ----------------------------------------------------------------------------- one experiment

def _star(experiment_id: int, on: bool) -> None:
    _act(lambda s: s.star(experiment_id, on))


def _save_note(experiment_id: int) -> None:
    _act(lambda s: s.annotate(experiment_id, st.session_state[f"exp.note.{experiment_id}"]))


def _delete(experiment_id: int) -> None:
    if not st.session_state.get("exp.delete.confirm"):
        state.say("warning", "Tick “yes, delete it” first.")
        return
    st.session_state["exp.delete.confirm"] = False
    if _act(lambda s: s.delete(experiment_id) or True):
        state.say("success", f"Deleted experiment #{experiment_id}.")


def _act(change):
    """``change(store)``'s value, or None with the store's message shown once."""
    try:
        return change(get_store())
    except StoreError as e:
        state.say("error", e.message)
        return None


def render_experiment(r: dict) -> None:
    """One experiment in full, with Restore, Star, the note and Delete."""
    timing = (r["result"] or {}).get("timing") or {}
    spread = (f"{timing['p10_ms']:.4g}–{timing['p90_ms']:.4g} ms over {timing.get('repeats')} "
              "repeats") if timing.get("p10_ms") is not None else None
    left, right = st.columns([3, 2], gap="large")
    with left:
        store_ui.render_fields([
            ("experiment", f"#{r['id']} ({r['kind']}, from {r['source'] or 'unknown'})"),
            ("recorded", iso(r["created"])), ("label", r["label"]),
            ("chain", r["chain_name"]), ("target", r["target"]),
            ("machine", r["machine_name"]), ("status", r["status"]),
            ("correct", {1: "yes", 0: "no"}.get(r["correct"], "—")),
            ("median", fmt_ms(r["median_ms"])), ("p10–p90", spread),
            ("GFLOP/s", None if r["gflops"] is None else f"{r['gflops']:.2f}"),
            ("error", r["error"])], key=f"exp.fields.{r['id']}")
        # Collapsed: a searched schedule has dozens of steps, a sweep dozens of points.
        with st.expander(f"Steps ({len(r['steps'])})"):
            st.code("\n".join(step_labels(r["steps"])) or "(no steps: the unscheduled chain)",
                    language=None)
        if r["children"]:
            with st.expander(f"{len(r['children'])} candidate(s)"):
                st.caption("The group stands for the fastest validated one (tick “list … "
                           "candidates too” to pick one).")
                st.dataframe(pd.DataFrame([{"#": c["id"], "label": c["label"],
                                            "status": c["status"], "median ms": c["median_ms"]}
                                           for c in r["children"]]),
                             hide_index=True, key=f"exp.children.{r['id']}")
    with right:
        st.button("Restore into the session", key="exp.restore", type="primary",
                  on_click=_restore_experiment, args=(r["id"],), width="stretch")
        st.button("Unstar" if r["starred"] else "Star ★", key="exp.star",
                  on_click=_star, args=(r["id"], not r["starred"]), width="stretch")
        st.text_area("note", value=r["note"], key=f"exp.note.{r['id']}", height=90,
                     max_chars=10_000)
        st.button("Save note", key="exp.note.save", on_click=_save_note, args=(r["id"],),
                  width="stretch")
        st.checkbox("yes, delete it", key="exp.delete.confirm")
        st.button("Delete", key="exp.delete", on_click=_delete, args=(r["id"],),
                  width="stretch")


# ----------------------------------------------------------------------------- leaderboard

def leaderboard_ui(s: Store, facets: dict, session: Session, this_machine: str,
                   target: str) -> None:
    """The fastest validated schedules of a chain on a machine, one row per schedule."""
    left, right = st.columns(2)
    with left:
        chain = _choice("chain", facets["chains"], "exp.board.chain", chain_key(session.chain))
    with right:
        machine = _choice("machine", facets["machines"], "exp.board.machine", this_machine,
                          everything="every machine")
    chain = chain_key(session.chain) if chain == THIS else chain
    machine = this_machine if machine == THIS else machine or None
    rows = s.leaderboard(chain, machine, target)
    if not rows:
        st.caption(f"No validated {target} time of this chain on this machine yet: measure "
                   "it on the Playground, or sweep it in the Fusion explorer.")
        return
    st.dataframe(pd.DataFrame([{
        "rank": i + 1, "median ms": r["median_ms"],
        "slowest run ms": r["slowest_ms"] if r["runs"] > 1 else None, "GFLOP/s": r["gflops"],
        "label": r["label"], "steps": " → ".join(step_labels(r["steps"])) or "(none)",
        "runs": r["runs"], "machine": r["machine_name"], "when": iso(r["created"]),
        "#": r["id"]} for i, r in enumerate(rows)]), hide_index=True, key="exp.board.table",
        column_config={"median ms": st.column_config.NumberColumn(format="%.4g"),
                       "slowest run ms": st.column_config.NumberColumn(
                           format="%.4g", help="the same schedule's slowest re-run: the "
                                               "spread between runs")})
    by_id = {r["id"]: r for r in rows}
    pick = st.selectbox("schedule", list(by_id), key="exp.board.pick",
                        format_func=lambda i: f"#{by_id[i]['id']} · "
                                              f"{fmt_ms(by_id[i]['median_ms'])} · "
                                              f"{by_id[i]['label']}")
    st.button("Restore this schedule", key="exp.board.restore", on_click=_restore_experiment,
              args=(pick,))


# ----------------------------------------------------------------------------- saved sessions

def _save_session(session: Session, target: str) -> None:
    name = st.session_state.get("exp.save.name", "")
    try:
        get_store().save_session(name, session, st.session_state.get("exp.save.note", ""),
                                 target)
    except StoreError as e:
        state.say("error", f"Not saved: {e.message}")
        return
    state.say("success", "Session saved.")


def _load_session(name: str) -> None:
    saved = _act(lambda s: s.load_session(name))
    if saved is None:
        return
    raw = saved["session"]
    restore(raw["chain"], raw["steps"][: raw.get("cursor", len(raw["steps"]))],
            saved["target"], "the saved session")


def _delete_session(name: str) -> None:
    _act(lambda s: s.delete_session(name))


def sessions_ui(s: Store, session: Session, target: str) -> None:
    """Save this session by name with a note; list, load and delete saved ones."""
    left, right = st.columns([2, 3])
    left.text_input("name", key="exp.save.name", max_chars=200)
    right.text_input("note", key="exp.save.note", max_chars=10_000)
    st.button("Save this session", key="exp.save", on_click=_save_session,
              args=(session, target))
    saved = s.list_sessions()
    if not saved:
        return
    st.dataframe(pd.DataFrame([{"name": x["name"], "note": x["note"], "target": x["target"],
                                "saved": iso(x["updated"])} for x in saved]),
                 hide_index=True, key="exp.sessions.table")
    name = st.selectbox("saved session", [x["name"] for x in saved], key="exp.sessions.pick")
    left, right = st.columns(2)
    left.button("Load", key="exp.sessions.load", on_click=_load_session, args=(name,),
                width="stretch")
    right.button("Delete", key="exp.sessions.delete", on_click=_delete_session, args=(name,),
                 width="stretch")


# ----------------------------------------------------------------------------- the page

def page(pool: WorkerPool, target: str) -> None:
    """The Experiments tab."""
    session = state.session()
    this_machine = machine_key(store_ui.machine())
    try:
        s = get_store()
        facets = s.facets()
        query = filters_ui(facets, session, this_machine)
        rows = s.list_experiments(**query, limit=MAX_ROWS)
        st.subheader(f"{len(rows)}{'+' if len(rows) == MAX_ROWS else ''} experiment(s)")
        if not rows:
            st.caption("Nothing recorded matches: every Validate & measure, sweep and "
                       "`run --record` adds one.")
        else:
            render_list(rows, f"Newest first, at most {MAX_ROWS}; times are medians.")
            by_id = {r["id"]: r for r in rows}
            pick = st.selectbox("experiment", list(by_id), key="exp.pick",
                                format_func=lambda i: option_text(by_id[i]))
            render_experiment(s.get(pick))
            st.subheader("Compare two")
            compare_ui.compare_ui(pool, rows, target)
        st.subheader(f"Leaderboard: fastest validated on {target}")
        leaderboard_ui(s, facets, session, this_machine, target)
        st.subheader("Saved sessions")
        sessions_ui(s, session, target)
    except StoreError as e:
        st.warning(store_ui.NOT_SAVED, icon="⚠️")
        st.text(e.message)

"""The Model tab: open an ONNX network, see its convolution chains, scan them, open one.

A thin shell over :mod:`playground.model`. A file a user uploads (at most :data:`UPLOAD_MB`)
or a bundled example is read and cut in a worker (:func:`playground.model.opened.
open_in_worker`): the server never parses a model, and a malformed or hostile file costs a
killable worker and one line beside the uploader. The tab then draws the network with its
chains coloured (:mod:`ui.model_figures`), the table of distinct chains (shape, FLOPs, count,
and after a scan their time, verdict and ratio) and what was left out. "Open in the
playground" makes a chain (with the scan's best schedule, when it has one) the session, as a
history entry that Undo reverses. "Scan all" runs :func:`playground.model.scan` in a
background thread of this tab (:mod:`ui.background`) with progress and Cancel beside the
button; a rerun reuses the outcomes the store kept. The chart then shows where the network's
time goes, fused and unfused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import streamlit as st

import playground.model as model_api
from playground.errors import PlaygroundError
from playground.measure.machine import machine_facts
from playground.model.opened import Opened, open_in_worker
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool
from ui import background, fusion_ui, model_figures, state
from ui.io_ui import render_flash, replaced_text
from ui.store_ui import table_height
from ui.text import ERROR_ICON, code, escape

#: The largest upload (MB); ``server.maxUploadSize`` (run.sh, .streamlit/config.toml) lets
#: it through, and the file is checked again before it is sent to a worker.
UPLOAD_MB = 64
MAX_BYTES = UPLOAD_MB << 20
#: The chain table's tallest (pixels): every chain of the examples without a scroll bar.
MAX_TABLE_PX = 800
#: The background task of the scan (its progress bar and Cancel are drawn beside its button).
TASK = "scan"
#: The bundled examples as the picker shows them (names from playground.model.examples).
EXAMPLE_TITLES = {"resnet18": "ResNet-18 (224×224)", "mobilenet_v2": "MobileNet v2 (224×224)",
                  "yolo_tiny": "YOLO-style: YOLOv3-tiny backbone (416×416)"}
# Session-state keys (not widgets): the source to open, the opened model, the scan's rows.
SOURCE = "model._source"
OPENED = "model._opened"
LIVE = "model._live"
INTRO = ("Open a network (an ONNX file, or one of the bundled examples), see how it cuts into "
         "convolution chains, and scan them: for each distinct chain the template search and "
         "the fuse-or-not verdict on this machine, then where the network's time goes.")


@dataclass(frozen=True)
class Request:
    """What should be open: a source (an example's name, or an upload's file id) and the
    options the cut depends on."""

    kind: str  # "example" | "upload"
    ident: str
    name: str
    max_convs: int
    input_shape: tuple[int, ...] | None


@dataclass
class Live:
    """The scan of one opened model: rows filled in by the scan's thread as chains finish."""

    key: tuple
    rows: dict = field(default_factory=dict)


def model_key(opened: Opened) -> tuple:
    """Identifies an opened model's chains (a scan's results belong to one)."""
    return (opened.model.name, *(c.key for c in opened.chains))


# ----------------------------------------------------------------------------- opening

def parse_shape(text: str) -> tuple[int, ...] | None:
    """``"1, 3, 224, 224"`` (or ``1x3x224x224``) -> a tuple; "" -> None.

    Raises
    ------
    PlaygroundError
        For anything but four positive integers.
    """
    if not text.strip():
        return None
    parts = [p for p in re.split(r"[\s,x×]+", text.strip().strip("[]()")) if p]
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise PlaygroundError(f"input shape {text!r}: write four positive integers, N, C, H, W "
                              "(e.g. 1, 3, 224, 224)", where="model.input_shape")
    return tuple(int(p) for p in parts)


def _chose(kind: str) -> None:
    """The example picked when Open was pressed, or the uploader (whatever file it holds)."""
    st.session_state[SOURCE] = (kind, st.session_state.get("model.example", ""))


def source_ui() -> tuple[Request | None, str, dict]:
    """The example picker, the uploader and the cut's options; returns what should be open
    (None: nothing yet), the input-shape field's error ("" when it reads) and, by source
    kind, the slot beside its control where a refusal is written."""
    left, right = st.columns(2, gap="large")
    with left:
        st.selectbox("Bundled example", list(EXAMPLE_TITLES), key="model.example",
                     format_func=EXAMPLE_TITLES.get)
        st.button("Open example", key="model.example.open", on_click=_chose,
                  args=("example",))
        slots = {"example": st.empty()}
        cols = st.columns(2)
        max_convs = cols[0].number_input(
            "max convs per chain", min_value=1, max_value=8, value=3, step=1,
            key="model.max_convs", help="window layers (conv, pool) per chain at most")
        shape_text = cols[1].text_input("input shape", key="model.input_shape",
                                        placeholder="1, 3, 224, 224",
                                        help="only for a file whose input has dynamic dims")
    with right:
        upload = st.file_uploader(f"…or upload a .onnx file (up to {UPLOAD_MB} MB)",
                                  type=["onnx"], key="model.upload",
                                  max_upload_size=UPLOAD_MB, on_change=_chose,
                                  args=("upload",))
        slots["upload"] = st.empty()
    try:
        shape, shape_error = parse_shape(shape_text), ""
    except PlaygroundError as e:
        shape, shape_error = None, e.message
    kind, name = st.session_state.get(SOURCE, ("", ""))
    if kind == "example":
        return Request("example", name, name, int(max_convs), shape), shape_error, slots
    if kind == "upload" and upload is not None:
        return Request("upload", upload.file_id, upload.name, int(max_convs),
                       shape), shape_error, slots
    return None, shape_error, slots


def handle_open(pool: WorkerPool, request: Request | None) -> None:
    """Open ``request`` unless it is what is open, or what was refused last (its one line
    stays beside the control that asked for it: :func:`refusal`)."""
    held = st.session_state.get(OPENED) or {}
    if request is None or held.get("request") == request:
        return
    try:
        if request.kind == "upload":
            upload = st.session_state["model.upload"]
            if upload.size > MAX_BYTES:  # never read past the cap
                raise model_api.ModelError(f"the file is {upload.size:,} bytes, above the "
                                           f"{UPLOAD_MB} MB cap")
            data, example = upload.getvalue(), ""
        else:
            data, example = None, request.ident
        with st.spinner(f"Reading and cutting {request.name} in a worker…"):
            opened = open_in_worker(pool, data, example=example,
                                    input_shape=request.input_shape,
                                    max_convs=request.max_convs, max_bytes=MAX_BYTES,
                                    name=re.sub(r"\.onnx$", "", request.name))
    except PlaygroundError as e:  # the model open before stays open
        st.session_state[OPENED] = {**held, "request": request, "error": e.message}
        return
    st.session_state[OPENED] = {"request": request, "opened": opened, "error": ""}


def refusal() -> tuple[str, str] | None:
    """``(source kind, one line)`` of the last refused open, while it is the request."""
    held = st.session_state.get(OPENED) or {}
    if not held.get("error"):
        return None
    request = held["request"]
    return request.kind, f"{request.name}: {held['error']}"


def current() -> Opened | None:
    held = st.session_state.get(OPENED)
    return held.get("opened") if held else None


# ----------------------------------------------------------------------------- summary

def render_summary(opened: Opened) -> None:
    m = opened.model
    cols = st.columns(4)
    cols[0].metric("conv + pool GFLOP", f"{m.flop / 1e9:,.2f}",
                   help="FLOPs of the model's convolutions and pools (a multiply-add is 2)")
    cols[1].metric("nodes", f"{len(m.nodes):,}")
    cols[2].metric("chains", f"{len(opened.chains)} distinct",
                   delta=f"{opened.occurrences} in the model", delta_color="off",
                   delta_arrow="off")
    cols[3].metric("ops left out", f"{sum(opened.left_out.values()):,}")
    left = ", ".join(f"{code(op)} ×{n}" for op, n in opened.left_out.items())
    covered = opened.chains_flop / m.flop if m.flop else 1.0
    st.caption(f"{escape(m.name)}: input {code(m.input_name)} {list(m.input_shape)}, "
               f"opset {m.opset}. Chains cover {covered:.1%} of the conv + pool FLOPs."
               + (f" Left out (not chain layers, or layers no chain could take): {left}."
                  if left else " Nothing left out."))


def render_drawing(opened: Opened) -> None:
    if len(opened.model.nodes) > model_figures.MAX_DRAWN:
        st.info(f"{len(opened.model.nodes):,} nodes: too many to draw (at most "
                f"{model_figures.MAX_DRAWN:,}); the table lists the chains.")
        return
    st.plotly_chart(model_figures.network_figure(opened.model, opened.chains),
                    key="model.drawing", config={"scrollZoom": True})
    st.caption("Each distinct chain has a colour and each occurrence a numbered box "
               "(squares: convs and pools); grey nodes are in no chain. Hover a node for its "
               "name, shape and chain; drag to pan, scroll to zoom.")


# ----------------------------------------------------------------------------- chains

def scan_rows(opened: Opened) -> list:
    """Each distinct chain's scan result so far (None where it has none)."""
    live = st.session_state.get(LIVE)
    if live is None or live.key != model_key(opened):
        return [None] * len(opened.chains)
    task = background.get(TASK)
    if task is not None and task.done and task.result is not None:
        for i, row in enumerate(task.result.rows):
            if row.status != "pending":
                live.rows[i] = row
    return [live.rows.get(i) for i in range(len(opened.chains))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


#: The table's columns that only a scan fills (hidden until one has).
SCAN_COLUMNS = ("time (ms)", "× count (ms)", "unfused (ms)", "verdict", "ratio", "scan")


def table_rows(opened: Opened, rows: list) -> list[dict]:
    """One row per distinct chain: what it is, and what the scan found (when it has run)."""
    out = []
    for i, (c, r) in enumerate(zip(opened.chains, rows, strict=True)):
        out.append({"#": i + 1, "chain": c.describe(), "count": c.count,
                    "MFLOP": round(c.flop / 1e6, 2),
                    "time (ms)": _ms(r.auto_ms) if r else None,
                    "× count (ms)": _ms(r.auto_ms * c.count) if r and r.auto_ms else None,
                    "unfused (ms)": _ms(r.unfused_ms) if r else None,
                    "verdict": r.verdict if r else "",
                    "ratio": round(r.ratio, 3) if r and r.ratio else None,
                    "scan": r.status if r else "",
                    "nodes": ", ".join(c.nodes)})
    if not any(rows):
        out = [{k: v for k, v in row.items() if k not in SCAN_COLUMNS} for row in out]
    return out


def render_table(opened: Opened, rows: list) -> None:
    if not opened.chains:
        st.info("No chain in this model: none of its nodes is a chain layer.")
        return
    st.dataframe(table_rows(opened, rows), hide_index=True, key="model.table",
                 height=min(table_height(len(opened.chains)), MAX_TABLE_PX),
                 column_config={"MFLOP": st.column_config.NumberColumn(
                     "MFLOP", help="one occurrence's conv and pool FLOPs", format="%.1f"),
                     "time (ms)": st.column_config.NumberColumn(
                         help="the best schedule the scan found", format="%.3f"),
                     "× count (ms)": st.column_config.NumberColumn(format="%.3f"),
                     "unfused (ms)": st.column_config.NumberColumn(format="%.3f"),
                     "ratio": st.column_config.NumberColumn(
                         help="the verdict's ratio: unfused time / fused time",
                         format="%.2fx")})


def open_chain(opened: Opened) -> None:
    """Make the picked chain (with the scan's best schedule, if it has one) the session, as a
    history entry that Undo reverses, and show the Playground. A callback: it reads the pick
    at the click, not as the button was drawn."""
    index = st.session_state["model.open.pick"]
    c, steps = opened.chains[index], best_steps(opened, index)
    where = f"chain {index + 1} of {opened.model.name}"
    try:
        new = Session.new(c.chain, steps)
    except PlaygroundError as e:
        state.say("error", f"Could not open {where}: {e.message}", "model.open")
        return
    before = state.session()
    state.replace_session(new, f"opened {where}")
    schedule = f" with the scan's best schedule ({_steps(steps)})" if steps else ""
    state.say("success", f"Opened {where} ({c.describe()}; its nodes "
                         f"{', '.join(c.nodes)}){schedule}. {replaced_text(before)}")
    st.session_state["page"] = "Playground"


def _steps(steps: list) -> str:
    return f"{len(steps)} step" + ("" if len(steps) == 1 else "s")


def best_steps(opened: Opened, index: int) -> list[dict]:
    """The steps of the best schedule the scan found for chain ``index`` ([] without one)."""
    row = scan_rows(opened)[index]
    return list(row.steps) if row is not None and row.steps else []


def open_ui(opened: Opened) -> None:
    """Pick a chain and open it in the playground."""
    if not opened.chains:
        return
    cols = st.columns([4, 1], vertical_alignment="bottom")
    index = cols[0].selectbox(
        "Chain", range(len(opened.chains)), key="model.open.pick",
        format_func=lambda i: f"{i + 1} · ×{opened.chains[i].count} · "
                              f"{opened.chains[i].describe()}")
    cols[1].button("Open in the playground", key="model.open", width="stretch",
                   on_click=open_chain, args=(opened,))
    render_flash("model.open")
    steps = best_steps(opened, index)
    st.caption("It becomes the session" + (f", with the scan's best schedule ({_steps(steps)})"
                                           if steps else "")
               + ": edit, measure and export it there; Undo brings back the session you had.")


# ----------------------------------------------------------------------------- scan

def start_scan(pool: WorkerPool, opened: Opened, budget_s: float) -> None:
    facts = machine_facts()
    live = Live(model_key(opened))
    st.session_state[LIVE] = live
    n = len(opened.chains)

    def work(task: background.Task):
        started: dict = {}  # the chain being searched, and when its search began

        def on_progress(event: dict) -> None:
            i = event["index"]
            if event["event"] == "chain":
                row = event["row"]
                live.rows[i] = row
                task.progress = (i + 1) / n
                how = "reused from the store" if event.get("reused") else row.status
                ms = f"{row.auto_ms:.3f} ms" if row.auto_ms is not None else "no time"
                task.text = f"chain {i + 1}/{n} {how}: {ms}" + (
                    f"; searching chain {i + 2}…" if i + 1 < n else "")
            else:
                if started.get("index") != i:
                    started.update(index=i, at=task.elapsed_s)
                into = (task.elapsed_s - started["at"]) / budget_s
                task.progress = (i + min(0.95, into)) / n
                shown = f"{event['median_ms']:.3f} ms" if event.get("median_ms") else \
                    event.get("status", "")
                task.text = f"chain {i + 1}/{n}: {event.get('label', '')} → {shown}"

        task.text = f"chain 1/{n}: searching…"
        return model_api.scan(pool, opened.model, list(opened.chains), facts,
                              budget_s_per_chain=budget_s, cancel=task.cancel,
                              on_progress=on_progress, source="page")

    background.start(TASK, work)


def scan_ui(pool: WorkerPool, opened: Opened, target: str) -> None:
    """Budget, Scan all, and beside them its progress and Cancel; then how the last ended."""
    if not opened.chains:
        return
    state.keep("model.scan.budget", 20)
    cols = st.columns([1, 1, 4], vertical_alignment="bottom")
    budget = cols[0].number_input("budget per chain (s)", min_value=5, max_value=600, step=5,
                                  key="model.scan.budget")
    task = background.get(TASK)
    running = task is not None and task.running
    if cols[1].button("Scan all", key="model.scan.run", width="stretch", type="primary",
                      disabled=target != "cpu" or running):
        start_scan(pool, opened, float(budget))
        st.rerun()
    with cols[2]:
        fusion_ui.render_tasks(TASK)
        if not running:
            n = len(opened.chains)
            st.caption(f"{n} distinct chain(s), each searched for {budget} s (building and "
                       "timing the verdict's pair come on top); outcomes stored for this "
                       "machine and budget are reused."
                       if target == "cpu" else "The scan runs on the host CPU: pick cpu.")
    live = st.session_state.get(LIVE)
    if task is None or running or live is None or live.key != model_key(opened):
        return
    if task.error:
        st.error(f"scan: {escape(task.error)}", icon=ERROR_ICON)
        return
    result = task.result
    reused = sum(r.status == "reused" for r in result.rows)
    done = sum(r.status in ("done", "reused") for r in result.rows)
    st.write(("Cancelled: " if result.cancelled else "Scanned: ")
             + f"{done} of {len(result.rows)} chains in {result.wall_s:.0f} s"
             + (f" ({reused} reused from the store)" if reused else "") + ".")


def render_time(opened: Opened, rows: list) -> None:
    """Totals and the chart of where the network's time goes (after a scan)."""
    timed = [r for r in rows if r is not None and r.auto_ms is not None]
    if not timed:
        return
    totals = model_api.ScanResult(opened.model.name, timed, opened.left_out, 0.0)
    cols = st.columns(3)
    cols[0].metric("network, best schedules", f"{totals.total_ms:.2f} ms",
                   help="sum of each chain's best time × its count")
    cols[1].metric("network, unfused", f"{totals.unfused_total_ms:.2f} ms",
                   help="each chain's best unfused schedule × its count")
    saved = 1 - totals.total_ms / totals.unfused_total_ms if totals.unfused_total_ms else 0.0
    cols[2].metric("fusion saves", f"{saved:.0%}")
    st.plotly_chart(model_figures.time_figure(rows, opened.chains), key="model.time")
    missing = len(rows) - len(timed)
    if missing or opened.left_out:
        st.caption((f"{missing} chain(s) without a time are not counted. " if missing else "")
                   + "Ops left out of every chain are not timed.")


# ----------------------------------------------------------------------------- page

def page(pool: WorkerPool, target: str) -> None:
    """The Model tab."""
    st.markdown(INTRO)
    request, shape_error, slots = source_ui()
    if shape_error:
        st.error(escape(shape_error), icon=ERROR_ICON)
    else:
        handle_open(pool, request)
    refused = refusal()
    if refused is not None:
        slots[refused[0]].error(escape(refused[1]), icon=ERROR_ICON)
    opened = current()
    if opened is None:
        st.info("Pick an example and press Open example, or upload a .onnx file.")
        return
    st.markdown(f"#### {escape(opened.model.name)}")
    render_summary(opened)
    render_drawing(opened)
    rows = scan_rows(opened)
    st.markdown("#### Chains")
    render_table(opened, rows)
    open_ui(opened)
    st.markdown("#### Scan: fuse or not, chain by chain")
    scan_ui(pool, opened, target)
    rows = scan_rows(opened)
    render_time(opened, rows)

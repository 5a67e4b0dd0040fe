"""Reading a sweep's result: its Pareto front, a CSV table and plotly figures.

Plotly is imported only inside the figure builders, so that the library stays importable
without it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from playground.explore.sweep import SweepPoint, SweepResult


def pareto_front(points: Sequence[Any], x: str = "redundancy",
                 y: str = "median_ms") -> list[Any]:
    """The points not dominated in (``x``, ``y``), both minimized, sorted by ``x``.

    ``points`` are :class:`SweepPoint` or dicts; those missing ``x`` or ``y`` (invalid,
    wrong, not analyzed) are left out. A point is dominated when another is no worse in both
    and better in one; of exact duplicates the first is kept.
    """
    def get(p: Any, key: str) -> Any:
        return p.get(key) if isinstance(p, dict) else getattr(p, key, None)

    usable = [p for p in points if get(p, x) is not None and get(p, y) is not None
              and get(p, "correct") is not False]
    ordered = sorted(usable, key=lambda p: (get(p, x), get(p, y)))
    front, best_y = [], math.inf
    for p in ordered:
        if get(p, y) < best_y:
            front.append(p)
            best_y = get(p, y)
    return front


CSV_FIELDS = ("value", "status", "correct", "max_abs_error", "median_ms", "gflops", "spread",
              "redundancy", "footprint_bytes", "intensity", "under_load", "others_cores",
              "message")


def to_csv(result: SweepResult) -> str:
    """The sweep as CSV: a header, then one row per point (parameter label in the header)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f"value ({result.param.label})", *CSV_FIELDS[1:]])
    for p in result.points:
        writer.writerow(["" if getattr(p, f) is None else getattr(p, f) for f in CSV_FIELDS])
    return out.getvalue()


# ----------------------------------------------------------------------------- figures

def sweep_figure(result: SweepResult) -> Any:
    """Plotly figure: median time against the parameter; failed points marked on the axis."""
    import plotly.graph_objects as go

    ok = [p for p in result.points if p.timed]
    bad = [p for p in result.points if not p.timed]
    x_of = (lambda p: p.value) if result.param.kind == "factor" else (lambda p: str(p.value))
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[x_of(p) for p in ok], y=[p.median_ms for p in ok], mode="lines+markers",
        name="correct", text=[f"{p.gflops:.2f} GFLOP/s" if p.gflops else "" for p in ok],
        hovertemplate="%{x}: %{y:.4f} ms<br>%{text}<extra></extra>"))
    if bad:
        floor = min((p.median_ms for p in ok), default=0.0)
        fig.add_trace(go.Scatter(
            x=[x_of(p) for p in bad], y=[floor] * len(bad), mode="markers", name="not timed",
            marker={"symbol": "x", "color": "crimson", "size": 10},
            text=[p.message or p.status for p in bad],
            hovertemplate="%{x}: %{text}<extra></extra>"))
    if result.param.current is not None:
        fig.add_vline(x=x_of(SweepPoint(result.param.current, "")), line_dash="dot",
                      annotation_text="current")
    fig.update_layout(title=f"time vs {result.param.label}"
                      + (" (cancelled)" if result.cancelled else ""),
                      xaxis_title=result.param.label, yaxis_title="median time (ms)",
                      xaxis_type="category" if result.param.kind == "loop" else None)
    return fig


def tradeoff_figure(result: SweepResult) -> Any:
    """Plotly figure: time against redundant work and against footprint, Pareto fronts marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("time vs redundant work",
                                                        "time vs footprint"))
    for col, (key, title, scale) in enumerate((("redundancy", "redundancy (FLOP done / needed)",
                                                1.0),
                                               ("footprint_bytes", "intermediate footprint (KiB)",
                                                1 / 1024)), start=1):
        pts = [p for p in result.points if p.timed and getattr(p, key) is not None]
        front = pareto_front(pts, x=key)
        fig.add_trace(go.Scatter(
            x=[getattr(p, key) * scale for p in pts], y=[p.median_ms for p in pts],
            mode="markers+text", text=[str(p.value) for p in pts], textposition="top center",
            name="points", showlegend=col == 1, marker={"color": "steelblue"}), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=[getattr(p, key) * scale for p in front], y=[p.median_ms for p in front],
            mode="lines+markers", name="Pareto front", showlegend=col == 1,
            line={"color": "darkorange", "dash": "dash"},
            marker={"color": "darkorange", "size": 11, "symbol": "diamond-open"}),
            row=1, col=col)
        fig.update_xaxes(title_text=title, row=1, col=col)
        fig.update_yaxes(title_text="median time (ms)", row=1, col=col)
    fig.update_layout(title=f"trade-offs over {result.param.label}")
    return fig

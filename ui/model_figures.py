"""The Model tab's pictures: the network with its chains coloured, and where its time goes.

Plain functions of the opened model (:class:`playground.model.opened.Opened`) and the scan's
rows that return plotly figures; they draw only (no Streamlit, no worker).

The drawing is a layered layout of the data path: a node's column is one more than the
deepest of its producers (so a residual block's branch and its shortcut stand side by side),
nodes of a column are stacked in model order, and an edge that skips columns (a shortcut) is
drawn as an arc above the path; a long network wraps onto bands of :data:`BAND_COLUMNS`
columns, one under the other, the edge to the next band dotted. Every occurrence of a chain
has its chain's colour and a shaded box labelled with its number; nodes in no chain are grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

#: One colour per distinct chain (cycled when a model has more).
PALETTE = (*qualitative.Plotly, *qualitative.D3[1:], *qualitative.Dark2)
LEFT_OUT = "#9e9e9e"
#: Most nodes drawn: beyond this the page lists the chains only.
MAX_DRAWN = 3000
#: Columns of the drawing per band: a longer network wraps onto the next band.
BAND_COLUMNS = 36


def chain_colour(index: int) -> str:
    """The colour of the distinct chain ``index`` (0-based), in the drawing and the chart."""
    return PALETTE[index % len(PALETTE)]


def chain_label(index: int, chain) -> str:
    """``"chain 3 ×2"``: how the table, the drawing and the chart name a distinct chain."""
    return f"chain {index + 1} ×{chain.count}"


def layered_layout(model, width: int = BAND_COLUMNS) -> dict[str, tuple[float, float]]:
    """Node name -> (x, y) of the layered drawing (see the module docstring): a long network
    wraps into bands of ``width`` columns, one under the other."""
    producer = {t: n.name for n in model.nodes for t in n.outputs}
    column: dict[str, int] = {}
    for n in model.nodes:  # topological order: producers first
        column[n.name] = 1 + max((column[producer[t]] for t in n.inputs if t in producer),
                                 default=-1)
    stacks: dict[int, list[str]] = {}
    for n in model.nodes:
        stacks.setdefault(column[n.name], []).append(n.name)
    band = band_height(stacks)
    pos = {}
    for col, names in stacks.items():
        for k, name in enumerate(names):
            pos[name] = (float(col % width), (len(names) - 1) / 2 - k - (col // width) * band)
    return pos


def band_height(stacks: dict) -> float:
    """The height of one band: its widest column, and room for arcs and labels."""
    return max((len(v) for v in stacks.values()), default=1) + 1.6


def _membership(chains: Sequence) -> dict[str, tuple[int, int]]:
    """Node name -> (distinct chain index, occurrence index)."""
    out = {}
    for i, c in enumerate(chains):
        for j, occ in enumerate(c.occurrences):
            for name in occ:
                out[name] = (i, j)
    return out


def _edges(model, pos: dict) -> tuple[list, list, list, list]:
    """Line coordinates of every data edge (None between edges): a skip edge arcs above; an
    edge that wraps onto the next band (returned apart, drawn dotted) runs back under its
    band."""
    producer = {t: n.name for n in model.nodes for t in n.outputs}
    xs: list[float | None] = []
    ys: list[float | None] = []
    wx: list[float | None] = []
    wy: list[float | None] = []
    for n in model.nodes:
        x1, y1 = pos[n.name]
        for t in dict.fromkeys(n.inputs):
            if t not in producer:
                continue
            x0, y0 = pos[producer[t]]
            if x1 < x0:  # onto the next band: right, down between the bands, left, in
                gap = y1 + (y0 - y1) / 2
                wx += [x0, x0 + 0.5, x0 + 0.5, x1 - 0.5, x1 - 0.5, x1, None]
                wy += [y0, y0, gap, gap, y1, y1, None]
            elif x1 - x0 > 1.5:  # a shortcut: lift its middle over the nodes between
                lift = 0.45 + 0.05 * min(x1 - x0, 6)
                xs += [x0, (x0 + x1) / 2, x1, None]
                ys += [y0, max(y0, y1) + lift, y1, None]
            else:
                xs += [x0, x1, None]
                ys += [y0, y1, None]
    return xs, ys, wx, wy


def _hover(node, member: tuple[int, int] | None, chains: Sequence) -> str:
    shape = "×".join(map(str, node.shape)) if node.shape else "shape unknown"
    text = f"<b>{_html(node.name)}</b> ({_html(node.op_type)})<br>{shape}"
    if member is not None:
        i, j = member
        c = chains[i]
        text += (f"<br>{chain_label(i, c)} (occurrence {j + 1})<br>"
                 f"{_html(c.describe())}")
    else:
        text += f"<br>not in a chain{': ' + _html(node.reason) if node.reason else ''}"
    return text


def _html(text: str) -> str:
    """Node names come from the file: shown as text in the hover, never as markup."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _segments(points: list) -> list[tuple[list, list]]:
    """An occurrence's node positions (in model order) split where it wraps onto the next
    band: its x and y per band."""
    out: list[tuple[list, list]] = []
    for x, y in points:
        if not out or x < out[-1][0][-1]:
            out.append(([], []))
        out[-1][0].append(x)
        out[-1][1].append(y)
    return out


def _box(fig: go.Figure, i: int, xs: list, ys: list) -> None:
    """The shaded, numbered box of chain ``i``'s occurrence (its part on one band)."""
    fig.add_shape(type="rect", x0=min(xs) - 0.4, x1=max(xs) + 0.4, y0=min(ys) - 0.35,
                  y1=max(ys) + 0.35, line={"width": 1, "color": chain_colour(i)},
                  fillcolor=chain_colour(i), opacity=0.15, layer="below")
    fig.add_annotation(x=(min(xs) + max(xs)) / 2, y=min(ys) - 0.35, text=str(i + 1),
                       showarrow=False, yanchor="top", font={"size": 10, "color": chain_colour(i)})


def network_figure(model, chains: Sequence) -> go.Figure:
    """The layered drawing of ``model`` with each of ``chains`` (distinct, with their
    occurrences) in its colour; hovering a node shows its name, op, shape and chain."""
    pos = layered_layout(model)
    member = _membership(chains)
    fig = go.Figure()
    ex, ey, wx, wy = _edges(model, pos)
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", hoverinfo="skip", showlegend=False,
                             line={"color": "#c8c8c8", "width": 1}))
    fig.add_trace(go.Scatter(x=wx, y=wy, mode="lines", hoverinfo="skip", showlegend=False,
                             line={"color": "#c8c8c8", "width": 1, "dash": "dot"}))
    groups: dict[int, list] = {}
    for n in model.nodes:
        groups.setdefault(member[n.name][0] if n.name in member else -1, []).append(n)
    for i in sorted(groups, key=lambda k: (k < 0, k)):
        nodes = groups[i]
        name = "left out" if i < 0 else chain_label(i, chains[i])
        fig.add_trace(go.Scatter(
            x=[pos[n.name][0] for n in nodes], y=[pos[n.name][1] for n in nodes],
            mode="markers", name=name, legendgroup=name,
            marker={"size": 9, "color": LEFT_OUT if i < 0 else chain_colour(i),
                    "symbol": ["square" if n.is_window else "circle" for n in nodes],
                    "line": {"width": 0.5, "color": "#555"}},
            hovertemplate="%{text}<extra></extra>",
            text=[_hover(n, member.get(n.name), chains) for n in nodes]))
    for i, c in enumerate(chains):
        for occ in c.occurrences:
            for xs, ys in _segments([pos[name] for name in occ if name in pos]):
                _box(fig, i, xs, ys)
    top = max((y for _, y in pos.values()), default=0.0)
    bottom = min((y for _, y in pos.values()), default=0.0)
    fig.update_layout(
        height=int(110 + 48 * (top - bottom + 2.3)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        plot_bgcolor="white", hovermode="closest", dragmode="pan",
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0},
        xaxis={"visible": False, "range": [-0.8, max((x for x, _ in pos.values()),
                                                     default=0.0) + 0.8]},
        yaxis={"visible": False, "range": [bottom - 1.0, top + 1.3]})
    return fig


def time_figure(rows: Sequence, chains: Sequence) -> go.Figure:
    """Where the network's time goes: one stacked bar with each chain's best time × count,
    one with its best unfused time × count (the best where it has no unfused schedule).

    ``rows`` are the scan's results (``auto_ms``, ``unfused_ms``, ``unfused_or_auto_ms``),
    in the order of ``chains``; a chain without a time is left out of both bars.
    """
    bars = ("best (auto)", "unfused")
    fig = go.Figure()
    for i, (row, c) in enumerate(zip(rows, chains, strict=True)):
        if row is None or row.auto_ms is None:
            continue
        values = [row.auto_ms * c.count, row.unfused_or_auto_ms * c.count]
        fig.add_trace(go.Bar(
            y=bars, x=values, orientation="h", name=chain_label(i, c),
            marker={"color": chain_colour(i)},
            customdata=[[row.auto_ms, c.count], [row.unfused_or_auto_ms, c.count]],
            hovertemplate=(f"{chain_label(i, c)}: %{{customdata[0]:.3f}} ms × "
                           "%{customdata[1]} = %{x:.3f} ms<extra>%{y}</extra>")))
    totals = [math.fsum(t.x[k] for t in fig.data) for k in range(2)]
    for k, total in enumerate(totals):
        fig.add_annotation(x=total, y=bars[k], text=f" {total:.2f} ms", showarrow=False,
                           xanchor="left")
    fig.update_layout(barmode="stack", height=230, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "ms per inference (chain time × count)",
                             "range": [0, max(totals, default=1.0) * 1.15 or 1.0]},
                      yaxis={"autorange": "reversed"},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.35, "x": 0,
                              "traceorder": "normal"})
    return fig

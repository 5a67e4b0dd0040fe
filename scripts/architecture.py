"""Draw ``docs/architecture.svg`` from the library's real import graph.

Every import in ``playground/`` (nested ones included, as ``tests/project/test_layering.py`` reads
them) becomes an edge between subpackages; subpackages are placed in rows by their depth in
that graph (a package sits above everything it imports), so the picture is the layering as
the code has it, not as someone drew it. Run ``python scripts/architecture.py`` after adding a
subpackage or an edge; ``tests/project/test_layering.py`` checks the picture is current.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "project"), str(ROOT / "tests" / "support")]
from test_layering import imports_of, library_files, module_name, unit_of  # noqa: E402

OUT = ROOT / "docs" / "architecture.svg"
#: What each unit is, in a few words, for the boxes.
CAPTIONS = {
    "base": "errors, pyparse",
    "chain": "chain as data -> TensorIR + numpy reference",
    "schedule": "steps, replay, session, views",
    "compile": "targets, lowering, tile-local pass, poison, GPU checks",
    "measure": "timing, sampling, intervals, load, machine facts",
    "worker": "isolated processes, lock, job table, registry",
    "jobs": "the worker's jobs: kernel, paired, facts, tuning ...",
    "io": "export, import, presets, URL state",
    "remote": "TVM RPC devices",
    "service": "what the page asks of the worker",
    "store": "experiment store (SQLite)",
    "explore": "analysis, halo, sweep, tuning, compare",
    "templates": "templates + search + verdict",
    "model": "ONNX import, cutting, network scan",
    "cli": "python -m playground",
    "api": "lazy public API",
}
SKIP = {"api"}  # imports nothing; drawing it adds no information


def unit_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in library_files():
        mine = unit_of(module_name(path))
        edges.setdefault(mine, set())
        for _, mod in imports_of(path):
            theirs = unit_of(mod) if mod.startswith("playground") else None
            if theirs and theirs != mine:
                edges[mine].add(theirs)
    for u in SKIP:
        edges.pop(u, None)
    return {u: {v for v in vs if v not in SKIP} for u, vs in edges.items()}


def depths(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each unit's row: as high as its imports force (longest path down), then lowered as far
    as its importers allow, so that an arrow rarely jumps a row (and never hides behind a box
    it does not belong to)."""
    memo: dict[str, int] = {}

    def depth(u: str) -> int:
        if u not in memo:
            memo[u] = 1 + max((depth(v) for v in edges.get(u, ())), default=-1)
        return memo[u]

    for u in edges:
        depth(u)
    importers: dict[str, set[str]] = {u: set() for u in edges}
    for u, vs in edges.items():
        for v in vs:
            importers[v].add(u)
    for u in sorted(memo, key=memo.get, reverse=True):  # top rows first
        if importers[u]:
            memo[u] = min(memo[w] for w in importers[u]) - 1
    return memo


def reduced(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The transitive reduction: drop u -> w when u reaches w through another import."""

    def reach(u: str, seen: set[str]) -> set[str]:
        for v in edges.get(u, ()):
            if v not in seen:
                seen.add(v)
                reach(v, seen)
        return seen

    out = {}
    for u, vs in edges.items():
        out[u] = {w for w in vs
                  if not any(w in reach(v, {v}) for v in vs if v != w)}
    return out


def render(edges: dict[str, set[str]]) -> str:
    level = depths(edges)
    edges = reduced(edges)
    rows: dict[int, list[str]] = {}
    for u in sorted(level, key=lambda u: (level[u], u)):
        rows.setdefault(level[u], []).append(u)
    order: dict[str, float] = {}
    for lv in sorted(rows, reverse=True):  # top row as is; below, under the importers' mean
        for i, u in enumerate(rows[lv]):
            above = [order[w] for w in edges if u in edges[w] and w in order]
            order[u] = sum(above) / len(above) if above else i
        rows[lv].sort(key=lambda u: (order[u], u))
        for i, u in enumerate(rows[lv]):
            order[u] = i - (len(rows[lv]) - 1) / 2
    box_w, box_h, gap_x, gap_y, margin = 210, 50, 30, 60, 20
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + 2 * margin
    height = len(rows) * (box_h + gap_y) + 2 * margin + 40
    pos: dict[str, tuple[float, float]] = {}
    top = max(rows)
    for lv, units in rows.items():
        y = margin + 40 + (top - lv) * (box_h + gap_y)
        row_w = len(units) * box_w + (len(units) - 1) * gap_x
        x0 = (width - row_w) / 2
        for i, u in enumerate(units):
            pos[u] = (x0 + i * (box_w + gap_x), y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/>'
           '</marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{margin}" y="{margin + 8}" font-size="14" fill="#333">playground/: '
           'subpackages by layer; an arrow: "imports" (implied arrows left out)</text>',
           f'<text x="{margin}" y="{margin + 26}" font-size="11" fill="#666">drawn from the '
           'import graph by scripts/architecture.py</text>']
    for u, (x, y) in sorted(pos.items()):
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="6" '
                   'fill="#eef4fb" stroke="#4a78a8"/>')
        out.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 20:.0f}" font-size="14" '
                   f'font-weight="bold" text-anchor="middle">{escape(u)}</text>')
        out.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 38:.0f}" font-size="10.5" '
                   f'text-anchor="middle" fill="#444">{escape(CAPTIONS.get(u, ""))}</text>')
    for u in sorted(edges):
        for v in sorted(edges[u]):
            (x1, y1), (x2, y2) = pos[u], pos[v]
            out.append(f'<line x1="{x1 + box_w / 2:.0f}" y1="{y1 + box_h:.0f}" '
                       f'x2="{x2 + box_w / 2:.0f}" y2="{y2:.0f}" stroke="#c0504d" '
                       'stroke-opacity="0.55" stroke-width="1.4" marker-end="url(#a)"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    OUT.write_text(render(unit_graph()))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

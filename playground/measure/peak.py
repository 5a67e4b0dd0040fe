"""The machine's measured limits: peak GFLOP/s and memory bandwidth, and the roofline.

Peak compute and bandwidth are *measured* with TVM kernels in a worker process (job
``"machine_peak"`` in :mod:`playground.jobs.facts`), once per machine: the result is
cached on disk under ``~/.cache/schedule-playground/machine.json``, keyed by CPU model and core
count. The FMA kernel's width follows the machine's vector width
(:func:`playground.measure.machine.machine_facts`). :func:`roofline_figure` draws measured
schedules against both limits (plotly is imported only there).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from playground.errors import PlaygroundError
from playground.measure.machine import cache_sizes, machine_key
from playground.worker.job_table import MACHINE_PEAK


@dataclass(frozen=True)
class MachinePeak:
    """Measured limits of this machine.

    Attributes
    ----------
    gflops
        Peak compute: a vectorized FMA kernel built with TVM, GFLOP/s (an FMA counts 2).
    bandwidth_gbs
        Main-memory bandwidth: a TVM triad ``a = b + s * c`` over arrays far larger than L3,
        GB/s counting 3 arrays x 4 bytes per element (write-allocate traffic not counted).
    cores
        Threads the kernels ran on.
    key
        :func:`machine_key` of the machine measured.
    caches
        :func:`cache_sizes` at measurement time.
    """

    gflops: float
    bandwidth_gbs: float
    cores: int
    key: str
    caches: dict[str, int]

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the roofline turns flat."""
        return self.gflops / self.bandwidth_gbs

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(raw: dict) -> MachinePeak:
        return MachinePeak(float(raw["gflops"]), float(raw["bandwidth_gbs"]), int(raw["cores"]),
                           str(raw["key"]), {k: int(v) for k, v in raw["caches"].items()})


def default_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "schedule-playground" / "machine.json"


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


#: The measuring method's version, stored with each result: a result of an older method is
#: measured again (2: FMA kernels of 6 and 12 rows of one and two vectors, best of interleaved
#: attempts; 1, one attempt of 6 rows, read a 2-core Xeon 10-20% low).
PEAK_METHOD = 2


def cached_peak(cores: int = 2, path: Path | None = None) -> MachinePeak | None:
    """The stored measurement for this machine and core count, if any (and if taken by the
    current :data:`PEAK_METHOD`)."""
    raw = _load(path or default_cache_file()).get(machine_key(cores))
    if not isinstance(raw, dict) or raw.get("method", 1) != PEAK_METHOD:
        return None
    try:
        return MachinePeak.from_dict(raw) if raw else None
    except (KeyError, TypeError, ValueError):
        return None


def measure_peak(pool: Any, *, cores: int = 2, path: Path | None = None, refresh: bool = False,
                 timeout_s: float = 300.0) -> MachinePeak:
    """Peak GFLOP/s and bandwidth of this machine, measured once in a worker and cached.

    Parameters
    ----------
    pool
        A :class:`playground.worker.pool.WorkerPool`; the job runs exclusively (measurement lock).
    cores
        Threads for the kernels (``parallel`` over this many).
    path
        The JSON cache file (default :func:`default_cache_file`).
    refresh
        Measure again even when a stored result exists (the higher of the two is kept).

    Raises
    ------
    PlaygroundError
        When the worker job fails (its message).
    """
    path = path or default_cache_file()
    if not refresh:
        hit = cached_peak(cores, path)
        if hit is not None:
            return hit
    result = MACHINE_PEAK.call(pool, {"cores": cores}, timeout_s=timeout_s, exclusive=True)
    if result.status != "ok":
        raise PlaygroundError(f"measuring the machine failed ({result.status}): "
                              f"{result.message}", detail=result.detail)
    # A peak is the best this machine has done: a shared host's speed moves by 10-20% over
    # seconds (three measurements in a minute on a 2-core Xeon: 466, 400 and 411 GFLOP/s), so
    # measuring again keeps the higher of the stored and the new result.
    stored = cached_peak(cores, path)
    peak = MachinePeak(gflops=max(result.value["gflops"], stored.gflops if stored else 0.0),
                       bandwidth_gbs=max(result.value["bandwidth_gbs"],
                                         stored.bandwidth_gbs if stored else 0.0),
                       cores=cores, key=machine_key(cores), caches=cache_sizes())
    data = _load(path)
    data[peak.key] = {**peak.to_dict(), "method": PEAK_METHOD}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    return peak


# ----------------------------------------------------------------------------- kernels
# Built and run inside the worker only (they compile); see analysis_jobs.machine_peak_job.

# Each accumulator row holds one or two vectors; the rows x vectors register accumulators are
# independent FMA chains. Two FMA ports with a 4-cycle latency need 8 in flight: 6 rows of one
# AVX-512 vector ran at 283 GFLOP/s where 6 rows of two ran at 421 on a 2-core Xeon; AVX2's
# 16 registers hold 6 rows x 2 (10 rows spilled to the stack and ran at half the speed).
FMA_ROWS = (6, 12)
FMA_INNER = 64  # y is rows x 64 floats: stays in L1
FMA_REPEAT = 1024  # ~6 MFLOP per call per core: thread start-up stays negligible


def fma_shapes(lanes: int, registers: int) -> list[tuple[int, int]]:
    """(rows, lanes per row) of the FMA kernels to try: one and two vectors per row, rows of
    :data:`FMA_ROWS`, as many accumulators as leave 4 registers for the operands."""
    return [(rows, v * lanes) for rows in FMA_ROWS for v in (1, 2)
            if rows * v <= registers - 4]


def fma_kernel(cores: int, lanes: int = 8, rows: int = FMA_ROWS[0]):
    """An IRModule doing multiply-adds on ``cores x rows x lanes`` register accumulators.

    ``out[p, a, l] = sum_{r, j} x[p, l] * y[a, j]`` with ``r < FMA_REPEAT``, ``j <
    FMA_INNER``: with both reduction loops outside the unrolled ``a`` and vectorized ``l``
    loops, every step is ``rows`` independent FMAs of ``lanes`` (one or two vector registers
    of ``x``, the accumulators, one broadcast of ``y[a, j]`` from L1 each), few enough
    registers that nothing spills. FLOP = 2 * cores * rows * lanes * REPEAT * INNER.
    """
    import tvm
    from tvm import s_tir, te

    x = te.placeholder((cores, lanes), "float32", name="x")
    y = te.placeholder((rows, FMA_INNER), "float32", name="y")
    r = te.reduce_axis((0, FMA_REPEAT), name="r")
    j = te.reduce_axis((0, FMA_INNER), name="j")
    out = te.compute((cores, rows, lanes),
                     lambda p, a, v: te.sum(x[p, v] * y[a, j], axis=[r, j]), name="out")
    sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([x, y, out])}))
    block = sch.get_sblock("out")
    p, a, lane, r_loop, j_loop = sch.get_loops(block)
    sch.reorder(p, r_loop, j_loop, a, lane)
    sch.parallel(p)
    sch.unroll(a)
    sch.vectorize(lane)
    sch.decompose_reduction(block, r_loop)
    flop = 2.0 * cores * rows * lanes * FMA_REPEAT * FMA_INNER
    return sch.mod, flop


def triad_kernel(n: int, cores: int):
    """``a[i] = b[i] + 3 * c[i]`` over ``n`` floats, parallel over ``cores``, vectorized."""
    import tvm
    from tvm import s_tir, te

    b = te.placeholder((n,), "float32", name="b")
    c = te.placeholder((n,), "float32", name="c")
    a = te.compute((n,), lambda i: b[i] + tvm.tirx.const(3, "float32") * c[i], name="a")
    sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([b, c, a])}))
    (i,) = sch.get_loops(sch.get_sblock("a"))
    outer, inner = sch.split(i, [cores, None])
    sch.parallel(outer)
    _, lane = sch.split(inner, [None, 16])
    sch.vectorize(lane)
    return sch.mod, 3 * 4 * n


# ----------------------------------------------------------------------------- roofline

def roofline_figure(peak_gflops: float, bandwidth_gbs: float, points: list[dict]) -> Any:
    """A log-log roofline with measured schedules.

    Parameters
    ----------
    peak_gflops, bandwidth_gbs
        The machine's limits (see :class:`MachinePeak`).
    points
        ``{"name": str, "gflops": float, "intensity": float}`` per measured schedule
        (intensity in FLOP/byte, e.g.
        :attr:`playground.explore.analysis.Analysis.arithmetic_intensity`).
    """
    import plotly.graph_objects as go

    intensities = [p["intensity"] for p in points if p.get("intensity")]
    ridge = peak_gflops / bandwidth_gbs
    lo = min([ridge / 64, *[i / 2 for i in intensities]])
    hi = max([ridge * 64, *[i * 2 for i in intensities]])
    xs = [lo, ridge, hi]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[min(peak_gflops, x * bandwidth_gbs) for x in xs],
                             mode="lines", name="roofline", line={"color": "black"}))
    fig.add_trace(go.Scatter(
        x=intensities, y=[p["gflops"] for p in points if p.get("intensity")],
        mode="markers+text", name="schedules", text=[p["name"] for p in points
                                                     if p.get("intensity")],
        textposition="top center", marker={"size": 10}))
    fig.update_layout(xaxis={"type": "log", "title": "arithmetic intensity (FLOP/byte)"},
                      yaxis={"type": "log", "title": "GFLOP/s"},
                      title=f"roofline: {peak_gflops:.0f} GFLOP/s, {bandwidth_gbs:.1f} GB/s "
                            f"(ridge {ridge:.1f} FLOP/B)")
    return fig

"""Worker jobs of the fusion explorer: schedule analysis, tile regions, machine peaks.

They run in the worker process only (see :mod:`playground.worker.registry`): analysis lowers the
schedule
and the peak job compiles and runs kernels, which the server process never does. Payloads and
results are JSON.
"""

from __future__ import annotations

import json
import os

from playground.schedule.steps import steps_from_json
from playground.worker.job_table import ANALYZE, MACHINE_PEAK, TILE_REGIONS
from playground.worker.registry import job


def _steps(payload: dict) -> tuple:
    return steps_from_json(json.dumps(payload.get("steps", [])))


@job(ANALYZE)
def analyze_job(payload: dict) -> dict:
    """Payload ``chain`` (normalized), ``steps``, ``target``, optional ``cache_level`` and
    ``tile_local`` (default True: lowered with the tile-local step).

    Returns :meth:`playground.explore.analysis.Analysis.to_dict`.
    """
    from playground.explore.analysis import analyze

    result = analyze(payload["chain"], _steps(payload), payload.get("target", "cpu"),
                     cache_level=payload.get("cache_level", "L2"),
                     tile_local=bool(payload.get("tile_local", True)))
    return result.to_dict()


@job(TILE_REGIONS)
def tile_regions_job(payload: dict) -> dict:
    """Payload ``chain``, ``steps``, ``block``, ``loop``, ``iteration`` (loop name -> value).

    Returns :meth:`playground.explore.halo.TileRegions.to_dict` (rebuild with ``from_dict``).
    """
    from playground.explore.halo import tile_regions

    return tile_regions(payload["chain"], _steps(payload), payload["block"], payload["loop"],
                        payload.get("iteration") or {}).to_dict()


def _best_seconds(ex, args, dev, number: int, repeat: int) -> float:
    """The fastest sample (seconds per call), timed by the project's one timing function: a
    peak is the best the machine can do, so the minimum, not the median."""
    from playground.measure.timing import measure

    return measure(ex, args, dev, number=number, repeat=repeat).min_ms / 1e3


@job(MACHINE_PEAK)
def machine_peak_job(payload: dict) -> dict:
    """Peak GFLOP/s (vectorized FMA kernel) and triad bandwidth (GB/s), best of repeats.

    Payload ``cores`` (threads, default 2), ``attempts`` (rounds over the FMA kernel's shapes,
    default 5), ``triad_mb`` (bytes per array, default 256 MiB
    split over 3 arrays: far above any L3). The worker's ``TVM_NUM_THREADS`` should equal
    ``cores``. Both kernels are checked against numpy before they are timed.
    """
    import numpy as np
    import tvm

    from playground.compile.lowering import compile_module
    from playground.measure import peak as machine
    from playground.measure.machine import machine_facts

    cores = int(payload.get("cores", 2))
    attempts = int(payload.get("attempts", 5))
    dev = tvm.cpu(0)
    facts = machine_facts()
    kernels = []
    for rows, lanes in machine.fma_shapes(facts.lanes("float32"), facts.registers):
        mod, flop = machine.fma_kernel(cores, lanes, rows)
        ex = compile_module(mod)
        x = np.random.rand(cores, lanes).astype("float32")
        y = np.random.rand(rows, machine.FMA_INNER).astype("float32")
        args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(y, dev),
                tvm.runtime.empty((cores, rows, lanes), "float32", dev)]
        ex["main"](*args)
        expected = machine.FMA_REPEAT * x[:, None, :] * y.sum(1)[None, :, None]
        if not np.allclose(args[2].numpy(), expected, rtol=1e-3):
            raise RuntimeError("the FMA kernel computed wrong numbers")
        kernels.append((rows, lanes, flop, ex, args))
    # A shared host's cores run 10-20% faster or slower from one second to the next (the
    # same kernel ran at 394 and 464 GFLOP/s a few seconds apart on a 2-core Xeon): every
    # shape is timed in several interleaved attempts, and the peak is the best of all.
    best_gflops, best_shape = 0.0, (0, 0)
    for _ in range(max(1, attempts)):
        for rows, lanes, flop, ex, args in kernels:
            gflops = flop / _best_seconds(ex, args, dev, 50, 10) / 1e9
            if gflops > best_gflops:
                best_gflops, best_shape = gflops, (rows, lanes)
    n = (int(payload.get("triad_mb", 256)) << 20) // 12
    n -= n % (16 * cores)
    mod, nbytes = machine.triad_kernel(n, cores)
    ex = compile_module(mod)
    b = np.random.rand(n).astype("float32")
    c = np.random.rand(n).astype("float32")
    args = [tvm.runtime.tensor(b, dev), tvm.runtime.tensor(c, dev),
            tvm.runtime.empty((n,), "float32", dev)]
    ex["main"](*args)
    if not np.allclose(args[2].numpy()[:1000], b[:1000] + 3 * c[:1000], rtol=1e-5):
        raise RuntimeError("the triad kernel computed wrong numbers")
    bandwidth = nbytes / _best_seconds(ex, args, dev, 1, 7) / 1e9
    return {"gflops": best_gflops, "rows": best_shape[0], "lanes": best_shape[1],
            "bandwidth_gbs": bandwidth, "cores": cores,
            "threads": os.environ.get("TVM_NUM_THREADS", "")}

"""Latency of the playground's interactive paths (issue 2's speed claims).

1. In-process: apply one step to a session and print its TVMScript, for every step of the seed
   presets (each step applied for the first time, so no cache hit), median and worst.
2. Worker: lowered TIR of each seed preset (warm worker, job ``lower``).
3. Worker: validate + time the ResNet preset end to end on a warm worker
   (``service.run(..., measure=True)``), as the UI's "Run" button does.

Usage: ``PYTHONPATH=. python benchmarks/latency.py`` (needs only the app's venv).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from playground.measure.machine import cores

os.environ.setdefault("TVM_NUM_THREADS", str(cores()))

from playground import service
from playground.io.presets import load_preset
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool

SEEDS = ("seed_conv_relu_fused", "seed_two_conv_fused")
RESNET = "resnet_conv_relu_conv"


def step_latency(name: str) -> list[float]:
    """ms to apply each step of preset ``name`` and print the TVMScript after it."""
    chain, steps, _ = load_preset(name)
    session = Session.new(chain, ())
    out = []
    for step in steps:
        t0 = time.perf_counter()
        session = session.apply(step)
        text = session.schedule().mod.script()
        out.append((time.perf_counter() - t0) * 1e3)
        assert "T.prim_func" in text
    return out


def main() -> int:
    from playground.measure.machine import machine_facts

    print(f"machine: {machine_facts().summary()}")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("1. apply a step + print TVMScript, in-process (every step of the preset, first time)")
    for name in SEEDS:
        ms = step_latency(name)
        print(
            f"   {name:24s} {len(ms):3d} steps: median {statistics.median(ms):6.1f} ms, "
            f"worst {max(ms):6.1f} ms (target: well under 50 ms)"
        )
    with WorkerPool(1) as pool:
        t0 = time.perf_counter()
        pool.warm_up()
        print(f"2. worker start (import tvm): {time.perf_counter() - t0:.2f} s")
        for name in SEEDS:
            chain, steps, _ = load_preset(name)
            session = Session.new(chain, steps)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                result = service.lower(pool, session)
                times.append(time.perf_counter() - t0)
                assert result.status == "ok", result.message
            print(
                f"   lowered TIR of {name:24s} (warm worker): median "
                f"{statistics.median(times):.2f} s, first {times[0]:.2f} s (target < 1 s)"
            )
        chain, steps, _ = load_preset(RESNET)
        session = Session.new(chain, steps)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = service.run(pool, session, "cpu", measure=True)
            times.append(time.perf_counter() - t0)
            assert result.status == "ok" and result.value["correct"], result.message
        print(
            f"3. validate + time {RESNET} on the warm worker, end to end: median "
            f"{statistics.median(times):.2f} s, first {times[0]:.2f} s (target < 3 s); "
            f"kernel median {result.value['median_ms']:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

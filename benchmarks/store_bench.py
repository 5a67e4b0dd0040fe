"""What the experiment store costs (issue 13's targets: recording a run adds < 5 ms; listing
10,000 experiments takes < 200 ms).

1. Recording: ``playground.store.record_run`` of one run as the page records it (a
   three-step schedule, the worker's whole result with a 10-sample timing record), into an
   empty store and into one growing from 9,500 to 10,000 experiments; median, p90 and max of
   :data:`RECORDS` calls, each its own committed transaction.
2. Reading a store of 10,000 experiments: list them all (summaries, as the page and
   ``experiments list`` do), a filtered list, the leaderboard of one chain and machine, the
   filters' facets; median of :data:`READS` calls.

The store lives in a temporary directory on the same filesystem as ``$TMPDIR``.
Usage: ``PYTHONPATH=. .venv/bin/python benchmarks/store_bench.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.measure.machine import host_fingerprint, machine_facts
from playground.store import Store, record_run
from playground.store.records import canonical_chain, chain_key, machine_key

RECORDS = 500
READS = 20
FILL = 10_000
CHAINS = [{"input": {"shape": [1, 3, 16 * (1 + k % 4), 16 * (1 + k % 4)]},
           "layers": [{"op": "conv2d", "channels": 4 + k, "kernel": 3}, {"op": "relu"}]}
          for k in range(8)]
STEPS = [{"primitive": "split", "args": {"block": "conv1", "loop": "h", "factors": [None, 4]}},
         {"primitive": "reorder", "args": {"block": "conv1", "loops": ["h_0", "w", "h_1"]}},
         {"primitive": "parallel", "args": {"block": "conv1", "loop": "h_0"}}]


def result(i: int) -> dict:
    """A run job's value as the worker returns it (the timing record with its samples)."""
    ms = 1.0 + (i % 97) / 50
    samples = [ms * (1 + 0.01 * k) for k in range(10)]
    return {"target": "cpu", "valid": True, "compile_s": 0.4, "ran": True, "correct": True,
            "flop": 4.3e7, "max_abs_error": 1.2e-7, "max_rel_error": 3e-5, "mismatches": 0,
            "nonfinite": 0, "message": "matches the float64 reference", "median_ms": ms,
            "gflops": 43.0 / ms, "timed_from": 1.0, "timed_until": 2.0,
            "timing": {"median_ms": ms, "p10_ms": samples[1], "p90_ms": samples[8],
                       "min_ms": samples[0], "max_ms": samples[-1], "spread": 0.08,
                       "repeats": 10, "number": 40, "samples_ms": samples,
                       "load": {"loadavg_1m": 0.4, "other_cpu_percent": 3.0}}}


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(f"  {name:<44} median {statistics.median(ms):7.2f} ms   p90 {p90:7.2f} ms   "
          f"max {ms[-1]:7.2f} ms   (n={len(ms)})")


def recording(store: Store, machine: dict, label: str) -> None:
    counter = iter(range(10**9))
    report(f"record a run ({label})", timed(
        lambda: record_run(CHAINS[0], STEPS, "cpu", machine, status="ok",
                           value=result(next(counter)), label="3: parallel conv1.h_0",
                           source="bench", store=store), RECORDS))


def fill(store: Store, machine: dict, other: dict) -> None:
    t0 = time.perf_counter()
    have = store.count()
    for i in range(have, FILL - RECORDS):  # the second round of recording ends at FILL
        record_run(CHAINS[i % len(CHAINS)], STEPS[: 1 + i % 3], "cpu",
                   machine if i % 2 else other, status="ok" if i % 10 else "wrong_result",
                   value=result(i), label=f"run {i}", source="bench", store=store)
    print(f"  (filled to {store.count():,} experiments in {time.perf_counter() - t0:.1f} s)")


def main() -> None:
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    print(f"Machine: {machine_facts().summary()}")
    machine = host_fingerprint()
    other = {**machine, "cpu_model": "another CPU"}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        store.check()
        print(f"Store: {store.path} (SQLite WAL, synchronous=NORMAL)")
        recording(store, machine, "empty store")
        fill(store, machine, other)
        recording(store, machine, f"{store.count():,} -> {store.count() + RECORDS:,} stored")
        n = len(store.list_experiments())
        report(f"list all {n:,} experiments", timed(store.list_experiments, READS))
        report("list one chain on one machine", timed(
            lambda: store.list_experiments(chain=chain_key(canonical_chain(CHAINS[1])),
                                           machine=machine_key(machine)), READS))
        report("leaderboard of one chain and machine", timed(
            lambda: store.leaderboard(chain_key(canonical_chain(CHAINS[1])),
                                      machine_key(machine), "cpu"), READS))
        report("facets (the filters' choices)", timed(store.facets, READS))
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        print(f"  (database and WAL: {size / 2**20:.1f} MiB)")
        store.close()


if __name__ == "__main__":
    main()

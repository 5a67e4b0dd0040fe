"""A client of the experiment store, run as its own process by the reliability tests.

Usage: ``python tests/support/store_client.py DIR NAME COUNT`` writes COUNT runs labelled
``NAME-0``, ``NAME-1``, ... (every fourth as a group of two candidates labelled
``NAME-i/a`` and ``NAME-i/b``) into the store in DIR, printing ``run ID LABEL`` after each
commit. ``COUNT`` 0 writes until killed, each run with 16 KB of detail so that most of the
time is spent inside a write.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from playground.store import Store, record_group

CHAIN = {"input": {"shape": [1, 3, 16, 16]},
         "layers": [{"op": "conv2d", "channels": 4, "kernel": 3}, {"op": "relu"}]}
MACHINE = {"cpu_model": "test CPU", "cores": 2, "vector_bits": 256, "mcpu": "test",
           "tvm_version": "0.27", "gpu": ""}


def split(factor: int) -> list[dict]:
    return [{"primitive": "split", "args": {"block": "conv1", "loop": "h",
                                            "factors": [None, factor]}}]


def write(store: Store, name: str, i: int, detail: str = "") -> None:
    label = f"{name}-{i}"
    if i % 4 == 3:
        group = record_group("sweep", CHAIN, "cpu", MACHINE, label=label, source="test",
                             store=store)
        for part, factor in (("a", 2), ("b", 4)):
            group.add(split(factor), status="ok", label=f"{label}/{part}",
                      value={"correct": True, "median_ms": float(factor)})
        group.finish()
        print(f"group {group.id} {label}", flush=True)
        return
    run_id = store.record_run(CHAIN, split(2 + i % 3), "cpu", MACHINE, status="ok",
                              value={"correct": True, "median_ms": 1.0 + i,
                                     "timing": {"median_ms": 1.0 + i, "repeats": 10}},
                              label=label, source="test", detail=detail)
    print(f"run {run_id} {label}", flush=True)


def main() -> None:
    directory, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(directory)
    detail = "x" * 16000 if count == 0 else ""
    for i in range(count) if count else itertools.count():
        write(store, name, i, detail)


if __name__ == "__main__":
    main()

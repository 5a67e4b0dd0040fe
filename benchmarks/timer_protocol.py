"""The protocol of the benchmark's competitors that run in a process of their own (PyTorch:
``torch_timer.py``, ONNX Runtime: ``ort_timer.py``).

TVM's thread pool and another runtime's threads both spin after a kernel; in one process they
fight over the cores and either side's times double or worse. So each competitor runs in its
own process, and ``auto_bench.py`` asks for one sample at a time, interleaved with the TVM
kernels (timed in the playground's worker process). One JSON object per line on stdin, one
reply per line on stdout::

    {"chain": {...}, "threads": 2}        -> {"ok": true, "correct": true, "message": "..."}
    {"time": 20}                          -> {"ms": 1.234}   (mean of 20 calls, in ms)

The competitor is prepared on the inputs ``playground.chain.reference.make_inputs`` makes and
checked against the float64 reference before any timing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import normalize_chain

#: ``prepare(chain, inputs, threads)`` returns ``forward()``, which computes the chain's output
#: (anything ``np.asarray`` reads) on those inputs.
Prepare = Callable[[dict, list, int], Callable[[], object]]


def serve(prepare: Prepare) -> None:
    """Answer requests on stdin until it closes."""
    forward = None
    for line in sys.stdin:
        request = json.loads(line)
        if "chain" in request:
            chain = normalize_chain(request["chain"])
            inputs = make_inputs(chain, 0)
            forward = prepare(chain, inputs, int(request["threads"]))
            out = np.asarray(forward())
            check = compare(out, reference_output(chain, inputs), chain["input"]["dtype"])
            reply = {"ok": True, "correct": check["correct"], "message": check["message"]}
        else:
            number = int(request["time"])
            forward()
            t0 = time.perf_counter()
            for _ in range(number):
                forward()
            reply = {"ms": (time.perf_counter() - t0) / number * 1e3}
        print(json.dumps(reply), flush=True)

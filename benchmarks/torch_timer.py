"""PyTorch CPU in a process of its own, timed on request: the benchmark's PyTorch competitor.

TVM's thread pool and PyTorch's OpenMP threads both spin after a kernel; in one process they
fight over the cores and either side's times double or worse. So PyTorch runs here, and
``auto_bench.py`` asks for one sample at a time, interleaved with the TVM kernels (timed in
the playground's worker process). Protocol: one JSON object per line on stdin, one reply per
line on stdout::

    {"chain": {...}, "threads": 2}        -> {"ok": true, "correct": true, "message": "..."}
    {"time": 20}                          -> {"ms": 1.234}   (mean of 20 calls, in ms)

The chain is built with ``F.conv2d``, pooling and the same elementwise ops, NCHW as is, under
``no_grad``, on the inputs ``playground.chain.reference.make_inputs`` makes, and checked
against the float64 reference before any timing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F

from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import normalize_chain


def forward_fn(chain: dict, tensors: dict[str, torch.Tensor]):
    """The chain as PyTorch calls, returning the last layer's output."""
    def forward():
        values = {"data": tensors["data"]}
        x = values["data"]
        for layer in chain["layers"]:
            name, op = layer["name"], layer["op"]
            if op == "conv2d":
                pt, pl, pb, pr = layer["padding"]
                pad = (pt, pl)
                if (pt, pl) != (pb, pr):
                    x, pad = F.pad(x, (pl, pr, pt, pb)), 0
                x = F.conv2d(x, tensors[name + "_weight"], stride=layer["stride"], padding=pad,
                             dilation=layer["dilation"], groups=layer["groups"])
            elif op in ("max_pool2d", "avg_pool2d"):
                pt, pl, _, _ = layer["padding"]
                x = getattr(F, op)(x, layer["kernel"], layer["stride"], (pt, pl))
            elif op == "relu":
                x = F.relu(x)
            elif op == "relu6":
                x = F.relu6(x)
            elif op == "clip":
                x = torch.clamp(x, layer["min"], layer["max"])
            elif op == "bias_add":
                x = x + tensors[name + "_bias"][None, :, None, None]
            elif op == "batch_norm":
                x = F.batch_norm(x, tensors[name + "_mean"], tensors[name + "_var"],
                                 tensors[name + "_gamma"], tensors[name + "_beta"], False, 0.0,
                                 layer["eps"])
            elif op == "add":
                x = x + values[layer["other"]]
            values[name] = x
        return x
    return forward


def main() -> None:
    forward = None
    for line in sys.stdin:
        request = json.loads(line)
        if "chain" in request:
            torch.set_num_threads(int(request["threads"]))
            chain = normalize_chain(request["chain"])
            inputs = make_inputs(chain, 0)
            tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in inputs}
            forward = forward_fn(chain, tensors)
            with torch.no_grad():
                out = forward().numpy()
            check = compare(out, reference_output(chain, inputs), chain["input"]["dtype"])
            reply = {"ok": True, "correct": check["correct"], "message": check["message"]}
        else:
            number = int(request["time"])
            with torch.no_grad():
                forward()
                t0 = time.perf_counter()
                for _ in range(number):
                    forward()
                reply = {"ms": (time.perf_counter() - t0) / number * 1e3}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()

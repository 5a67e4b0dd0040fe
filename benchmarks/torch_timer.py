"""PyTorch CPU in a process of its own, timed on request: the benchmark's PyTorch competitor
(the protocol: ``timer_protocol.py``).

The chain is built with ``F.conv2d``, pooling and the same elementwise ops, NCHW as is, under
``no_grad``: PyTorch's functional call, the weights passed as tensors on every call (nothing
pre-packed), checked against the float64 reference before any timing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timer_protocol import serve


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


def prepare(chain: dict, inputs: list, threads: int):
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in inputs}
    return forward_fn(chain, tensors)


if __name__ == "__main__":
    serve(prepare)

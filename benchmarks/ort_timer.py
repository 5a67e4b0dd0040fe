"""ONNX Runtime (CPU) in a process of its own, timed on request: the benchmark's ONNX Runtime
competitor (the protocol: ``timer_protocol.py``).

The chain is exported by ``onnx_chain.py`` with its weights as initializers, so the session
folds and pre-packs them once at start, as a deployed model's would; the session runs with
``threads`` intra-op threads, one inter-op thread, every graph optimization
(``ORT_ENABLE_ALL``: conv + bias + activation fusion, MLAS's blocked layouts) and sequential
execution. Input and output are bound once (``io_binding``, the output buffer allocated
once), so a call is the kernel work alone, like the TVM kernel's call on bound buffers.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx_chain import chain_to_onnx
from timer_protocol import serve

from playground.chain.spec import tensor_shapes


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def prepare(chain: dict, inputs: list, threads: int):
    model = chain_to_onnx(chain, inputs)
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    name = chain["layers"][-1]["name"]
    out = ort.OrtValue.ortvalue_from_shape_and_type(list(tensor_shapes(chain)[name]),
                                                    np.float32, "cpu", 0)
    binding = session.io_binding()
    binding.bind_cpu_input("data", np.ascontiguousarray(dict(inputs)["data"]))
    binding.bind_ortvalue_output(name, out)

    def forward():
        session.run_with_iobinding(binding)
        return out.numpy()

    return forward


if __name__ == "__main__":
    serve(prepare)

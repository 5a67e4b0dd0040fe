"""Does ONNX Runtime skip the taps of a convolution that read its zero padding?

    PYTHONPATH=. .venv-bench/bin/python benchmarks/ort_padding_taps.py [--rounds 9]

The same 3x3 convolution, run twice: once with ONNX padding (``pads=p``), and once without
padding on an input that was padded beforehand. Both produce the same output size and do the
same number of multiply-adds as counted. The two sessions alternate in rounds, and each
round is 0.2 s of calls. A runtime that skips the taps on the padding runs the padded
version faster, by about the share of taps that fall on the padding (printed beside the
ratio). A runtime that computes them runs both at the same speed. The question matters
because ``auto`` computes every tap (its padding is a materialized copy). On deep 3x3 layers
at 7x7 to 28x28, 9 to 18% of the taps land on padding, and those layers are where ``auto``
trails ONNX Runtime.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from ort_timer import session_options  # noqa: E402

from playground.measure.machine import cores, machine_facts  # noqa: E402

#: (input channels, output channels, output size, dilation): a deep ResNet stage at 14x14 and
#: 7x7, the benchmark's dilated_256 layer, a dilated shallow layer and a shallow one at 56x56
SHAPES = ((256, 256, 28, 2), (256, 256, 14, 1), (512, 512, 7, 1), (64, 64, 64, 4),
          (64, 64, 56, 1))


def _session(c: int, k: int, size: int, dilation: int, padded_by_onnx: bool):
    """A callable that runs one conv: padded by ONNX (``pads``) or on a pre-padded input."""
    rng = np.random.default_rng(0)
    w = rng.random((k, c, 3, 3), dtype=np.float32)
    pad = dilation if padded_by_onnx else 0
    side = size if padded_by_onnx else size + 2 * dilation
    node = helper.make_node("Conv", ["x", "w"], ["y"], dilations=[dilation] * 2,
                            pads=[pad] * 4, kernel_shape=[3, 3])
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k, size, size])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), session_options(cores()),
                                   providers=["CPUExecutionProvider"])
    x = rng.random((1, c, side, side), dtype=np.float32)

    def run():
        return session.run(None, {"x": x})

    for _ in range(20):
        run()
    return run


def _seconds_per_call(run, seconds: float = 0.2) -> float:
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run()
        calls += 1
    return (time.perf_counter() - start) / calls


def padding_share(size: int, dilation: int) -> float:
    """The share of a 3x3 conv's taps (stride 1, 'same' padding) that read the padding."""
    valid_per_axis = (3 * size - 2 * min(dilation, size)) / (3 * size)
    return 1 - valid_per_axis ** 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"machine: {machine_facts().summary()}; onnxruntime {ort.__version__}", flush=True)
    for c, k, size, dilation in SHAPES:
        padded = _session(c, k, size, dilation, True)
        pre = _session(c, k, size, dilation, False)
        ratios, padded_times, pre_times = [], [], []
        for _ in range(args.rounds):
            padded_times.append(_seconds_per_call(padded))
            pre_times.append(_seconds_per_call(pre))
            ratios.append(pre_times[-1] / padded_times[-1])
        ratios.sort()
        low, high = ratios[len(ratios) // 4], ratios[-1 - len(ratios) // 4]
        print(f"{c}->{k} {size}x{size} dilation {dilation}: padded by ONNX "
              f"{statistics.median(padded_times) * 1e3:.3f} ms, pre-padded "
              f"{statistics.median(pre_times) * 1e3:.3f} ms, pre-padded / padded "
              f"{statistics.median(ratios):.3f}x ({low:.3f}-{high:.3f}); taps on the padding "
              f"{100 * padding_share(size, dilation):.1f}%", flush=True)


if __name__ == "__main__":
    main()

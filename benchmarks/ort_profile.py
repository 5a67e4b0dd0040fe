"""Where ONNX Runtime's time goes on one chain: its per-node times from ORT's own profiler.

    PYTHONPATH=. .venv-bench/bin/python benchmarks/ort_profile.py mobilenet_dw_s2 [--runs 200]

Builds the session as ``ort_timer.py`` does (the chain's ONNX graph, weights as initializers,
every graph optimization, the machine's cores as intra-op threads), prints the graph ONNX
Runtime actually runs after its fusions (one line per node: operator, fused activation) and the
median time of each node over ``--runs`` calls, so that a loss of ``auto`` can be read against
the kernels ONNX Runtime uses for the same layers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import onnxruntime as ort  # noqa: E402
from chains import CHAINS  # noqa: E402
from onnx_chain import chain_to_onnx  # noqa: E402
from ort_timer import session_options  # noqa: E402

from playground.chain.reference import make_inputs  # noqa: E402
from playground.chain.spec import normalize_chain  # noqa: E402
from playground.measure.machine import cores  # noqa: E402


def profile(name: str, runs: int) -> None:
    chain = normalize_chain(CHAINS[name])
    inputs = make_inputs(chain, 0)
    options = session_options(cores())
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        session = ort.InferenceSession(chain_to_onnx(chain, inputs).SerializeToString(),
                                       options, providers=["CPUExecutionProvider"])
        feed = {"data": dict(inputs)["data"]}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        import onnx

        optimized = onnx.load(options.optimized_model_filepath)
    print(f"{name}: the graph ONNX Runtime runs ({len(optimized.graph.node)} nodes)")
    for node in optimized.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        act = attrs.get("activation", b"")
        act = act.decode() if isinstance(act, bytes) else act
        print(f"  {node.op_type:<24} {node.domain or 'ai.onnx':<12} {node.name:<28} {act}")
    per_node: dict[str, list[float]] = defaultdict(list)
    model_runs = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1e3)
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            model_runs.append(e["dur"] / 1e3)
    print(f"median per call over {runs} calls (ms): model_run "
          f"{statistics.median(model_runs):.3f}")
    for node, times in per_node.items():
        print(f"  {node:<40} {statistics.median(times):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chain", choices=sorted(CHAINS))
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    profile(args.chain, args.runs)

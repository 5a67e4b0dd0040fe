"""Whole networks: the example models scanned end to end, against ONNX Runtime on the same
conv parts. Writes ``benchmarks/model_results.json`` and prints the tables of the README.

    .venv/bin/python -m pip install -r benchmarks/requirements-model.txt   # onnxruntime
    PYTHONPATH=. .venv/bin/python benchmarks/model_bench.py --budget-s-per-chain 5
    PYTHONPATH=. .venv/bin/python benchmarks/model_bench.py --report        # tables only

Per example (ResNet-18, MobileNet v2, YOLOv3-tiny from :mod:`playground.model.examples`):
``scan`` (what ``python -m playground model`` runs: per distinct chain the template search
within the budget and the fuse-or-not verdict; outcomes stored in ``$PLAYGROUND_DATA``, so a
rerun with the same budget reuses them and only times ONNX Runtime again). The network total
is the sum of each chain's best time x its count: chains timed one by one, each with its
input and weights hot in cache, so it is a lower estimate of running them back to back.

ONNX Runtime (CPU execution provider, all graph optimizations, ``intra_op_num_threads`` =
the machine's cores, as TVM's) runs the same conv parts — the example without its
classifier, seeded random weights — in a process of its own (TVM's and ORT's thread pools in
one process spin against each other): 5 warm-up runs, then the median of ``--repeat`` runs.
ORT also runs what the chains leave out (ResNet-18's three downsampling adds).

Since a scan takes many minutes on a machine whose load changes, the comparison is made in
``--rounds`` alternating rounds after it: each round times ONNX Runtime, then every distinct
chain's best schedule again (the ``run`` job, in the worker, kernels kept compiled between
rounds) and sums them x count; the table gives the median round of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "model_results.json"


def ort_ms(name: str, threads: int, repeat: int) -> float:
    """Median ms of ONNX Runtime on the example's conv part (run in this process)."""
    import numpy as np
    import onnxruntime as ort

    from playground.model.examples import build

    options = {"weights": "random"}
    if name != "yolo_tiny":
        options["classifier"] = False
    proto = build(name, **options)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(5):
        session.run(None, {"input": x})
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def retime(pool, rows: list, repeat: int = 5) -> float | None:
    """The network total of the rows' best schedules timed again now (ms), or None."""
    from playground import service
    from playground.schedule.session import Session
    from playground.schedule.steps import steps_from_json

    total = 0.0
    for row in rows:
        if not row.steps:
            return None
        steps = steps_from_json(json.dumps(row.steps))
        res = service.run(pool, Session(row.chain.chain, steps, len(steps)), "cpu",
                          repeat=repeat)
        if res.status != "ok" or not (res.value or {}).get("median_ms"):
            return None
        total += res.value["median_ms"] * row.chain.count
    return total


def scan_example(name: str, budget: float, rounds: int, repeat: int) -> dict:
    from playground.measure.machine import machine_facts
    from playground.model import cut_chains, load_model, scan
    from playground.model.examples import example_bytes
    from playground.worker.pool import WorkerPool

    model = load_model(example_bytes(name), name=name)
    chains = cut_chains(model)
    facts = machine_facts()
    t0 = time.monotonic()
    ours, theirs = [], []
    with WorkerPool(1) as pool:
        result = scan(pool, model, chains, facts, budget_s_per_chain=budget, source="bench")
        wall = time.monotonic() - t0
        for r in range(rounds):
            print(f"{name}: round {r + 1}/{rounds} (load {load_line()})", file=sys.stderr)
            theirs.append(ort_subprocess(name, facts.cores, repeat))
            total = retime(pool, result.rows)
            if total is not None:
                ours.append(total)
    out = result.to_json()
    out["scan_wall_s"] = wall
    out["rounds"] = {"ours_ms": ours, "ort_ms": theirs}
    out["ort_ms"] = sorted(theirs)[len(theirs) // 2]
    out["retimed_total_ms"] = sorted(ours)[len(ours) // 2] if ours else None
    out["reused"] = sum(r.status == "reused" for r in result.rows)
    out["cores"] = facts.cores
    for row in out["chains"]:
        row.pop("steps", None)
    return out


def ort_subprocess(name: str, threads: int, repeat: int) -> float:
    """:func:`ort_ms` in a process of its own."""
    ort = subprocess.run(
        [sys.executable, __file__, "--ort", name, "--threads", str(threads), "--repeat",
         str(repeat)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(ort.stdout.strip())


def load_line() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace) -> dict:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for name in args.examples:
        print(f"{name}: scanning (load {load_line()})", file=sys.stderr)
        entry = scan_example(name, args.budget_s_per_chain, args.rounds, args.repeat)
        entry["load_after"] = load_line()
        entry["cpu"] = cpu
        results[name] = entry
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return results


def report(results: dict) -> str:
    lines = []
    for name, e in results.items():
        lines += [f"### {name}: {e['model_flop'] / 1e9:.2f} GFLOP in convs and pools, "
                  f"{len(e['chains'])} distinct chains "
                  f"({sum(r['count'] for r in e['chains'])} in all)", "",
                  "| # | chain | count | auto ms | verdict (ratio) | x count |",
                  "|---|---|---|---|---|---|"]
        for i, r in enumerate(e["chains"], 1):
            ms = "-" if r["auto_ms"] is None else f"{r['auto_ms']:.3f}"
            ratio = "" if r["ratio"] is None else f" ({r['ratio']:.2f}x)"
            total = "-" if r["auto_ms"] is None else f"{r['auto_ms'] * r['count']:.3f}"
            lines.append(f"| {i} | {r['describe']} | {r['count']} | {ms} | "
                         f"{r['verdict']}{ratio} | {total} |")
        again = e.get("retimed_total_ms")
        vs = f"{e['ort_ms'] / again:.2f}x" if again else "-"
        lines += ["", f"Total {e['total_ms']:.2f} ms as scanned (unfused "
                      f"{e['unfused_total_ms']:.2f} ms); in {len(e['rounds']['ort_ms'])} "
                      f"alternating rounds afterwards: these schedules "
                      f"{again if again is None else f'{again:.2f}'} ms, ONNX Runtime "
                      f"{e['ort_ms']:.2f} ms (ORT / ours {vs}). Left out: "
                      f"{e['skipped_ops'] or 'nothing'}; budget {e['budget_s_per_chain']:g} s "
                      f"per chain; load {e['load_after']}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s-per-chain", type=float, default=5.0)
    parser.add_argument("--examples", nargs="*",
                        default=["resnet18", "mobilenet_v2", "yolo_tiny"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="print the tables and stop")
    parser.add_argument("--ort", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ort:
        print(ort_ms(args.ort, args.threads, args.repeat))
        return 0
    results = json.loads(RESULTS.read_text()) if args.report else run(args)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the fast presets against PyTorch, the unscheduled chain and an unfused schedule.

Run through ``benchmarks/run.sh`` (it sets up ``.venv-bench`` with torch). For every preset:

1. build each competitor (the preset, its unfused counterpart, the unscheduled chain, PyTorch
   CPU on 2 threads doing the same math) and check its output against the float64 numpy
   reference (``playground.chain.reference``) before any timing; a wrong result aborts the run;
2. time them side by side: ``--rounds`` interleaved rounds, each competitor taking one sample
   per round (``number`` calls calibrated to about ``--sample-ms``), together with an FMA
   kernel (``benchmarks/fma_peak.c``, 12 AVX2 FMA chains per thread) that measures the peak
   the machine gives *in the same rounds*;
3. print one table per preset and a summary: median ms, GFLOP/s, share of the measured peak,
   and the ratios time(competitor) / time(preset) (> 1: the preset is faster).

Usage: ``PYTHONPATH=. python benchmarks/bench.py [--only NAME ...] [--rounds N] [--json FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np
import tvm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import recipes  # noqa: E402

from playground.build.targets import cpu_target  # noqa: E402
from playground.build.timing import measure  # noqa: E402
from playground.chain.reference import compare, make_inputs, reference_output  # noqa: E402
from playground.chain.spec import chain_flop  # noqa: E402
from playground.io.presets import load_preset  # noqa: E402
from playground.schedule.replay import scheduled  # noqa: E402

DEV = tvm.cpu()
CORES = int(os.environ["TVM_NUM_THREADS"])
#: Unscheduled chains slower than this are estimated, not run (their FLOP at the GFLOP/s the
#: unscheduled ResNet chain reached in the same run).
UNSCHEDULED_LIMIT_S = 10.0


@dataclass(frozen=True)
class Case:
    """A preset and what it is compared with."""

    preset: str
    unfused: str  # a preset name, or "recipe:<function>" in benchmarks/recipes.py
    unfused_label: str
    run_unscheduled: bool = True


CASES = [
    Case(
        "seed_conv_relu_fused",
        "recipe:seed_conv_relu_unfused",
        "relu as its own pass",
        run_unscheduled=False,
    ),
    Case(
        "seed_two_conv_fused",
        "recipe:seed_two_conv_unfused",
        "conv1+relu over the whole image, then conv2",
        run_unscheduled=False,
    ),
    Case("resnet_conv_relu_conv", "recipe:resnet_conv_relu_conv_unfused", "relu as its own pass"),
    Case(
        "resnet_block_bn_add",
        "recipe:resnet_block_bn_add_unfused",
        "bn/relu/add/relu as separate passes",
    ),
    Case(
        "depthwise_pointwise_fused",
        "depthwise_pointwise_unfused",
        "preset depthwise_pointwise_unfused",
    ),
    Case(
        "conv_bias_bn_relu_fused", "conv_bias_bn_relu_separate", "preset conv_bias_bn_relu_separate"
    ),
    Case("conv_relu_conv_halo", "resnet_conv_relu_conv", "preset resnet_conv_relu_conv"),
]

UNFUSED_RECIPES: dict[str, Callable[[], recipes.Recorder]] = {
    "seed_conv_relu_unfused": lambda: recipes.recipe_seed_conv_relu(fused=False),
    "seed_two_conv_unfused": lambda: recipes.recipe_seed_two_conv(fused=False),
    "resnet_conv_relu_conv_unfused": lambda: recipes.recipe_resnet_conv_relu_conv(fused=False),
    "resnet_block_bn_add_unfused": lambda: recipes.recipe_resnet_block_bn_add(fused=False),
}


@dataclass
class Competitor:
    """Something to time: ``sample(number)`` returns ms per call over ``number`` calls."""

    name: str
    sample: Callable[[int], float]
    number: int = 1
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def calibrate(self, sample_ms: float) -> None:
        per_call = self.sample(1)
        per_call = min(per_call, self.sample(1))
        self.number = max(1, round(sample_ms / max(per_call, 1e-3)))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples)


# ----------------------------------------------------------------------------- competitors


def tvm_competitor(name: str, chain: dict, steps, inputs, expected) -> Competitor:
    """Compile ``steps`` on ``chain``, check the result, and time it with playground.measure."""
    sch = scheduled(chain, tuple(steps))
    ex = tvm.compile(sch.mod, target=cpu_target())
    args = [tvm.runtime.tensor(a, DEV) for _, a in inputs]
    dtype = chain["input"]["dtype"]
    # Poisoned output: elements the kernel never writes stay NaN and fail the comparison.
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, dtype=dtype), DEV)
    ex["main"](*args, out)
    check = compare(out.numpy(), expected, dtype)
    if not check["correct"]:
        raise SystemExit(f"{name}: WRONG RESULT: {check['message']}")

    def sample(number: int) -> float:
        return measure(ex, [*args, out], DEV, number=number, repeat=1).median_ms

    return Competitor(name, sample, note=f"max abs err {check['max_abs_error']:.1e}")


def torch_forward(chain: dict, params: dict):
    """The chain in PyTorch (NCHW as is): conv2d plus the same elementwise ops."""
    import torch
    import torch.nn.functional as F

    def forward():
        tensors = {"data": params["data"]}
        x = params["data"]
        for layer in chain["layers"]:
            name, op = layer["name"], layer["op"]
            if op == "conv2d":
                pt, pl, pb, pr = layer["padding"]
                if (pt, pl) != (pb, pr):
                    x, pad = F.pad(x, (pl, pr, pt, pb)), 0
                else:
                    pad = (pt, pl)
                x = F.conv2d(
                    x,
                    params[name + "_weight"],
                    stride=layer["stride"],
                    padding=pad,
                    dilation=layer["dilation"],
                    groups=layer["groups"],
                )
            elif op == "bias_add":
                x = x + params[name + "_bias"].view(1, -1, 1, 1)
            elif op == "batch_norm":
                x = F.batch_norm(
                    x,
                    params[name + "_mean"],
                    params[name + "_var"],
                    params[name + "_gamma"],
                    params[name + "_beta"],
                    False,
                    0.0,
                    layer["eps"],
                )
            elif op == "relu":
                x = F.relu(x)
            elif op in ("relu6", "clip"):
                lo, hi = (0.0, 6.0) if op == "relu6" else (layer["min"], layer["max"])
                x = torch.clamp(x, lo, hi)
            elif op == "add":
                x = x + tensors[layer["other"]]
            tensors[name] = x
        return x

    return forward


def torch_competitor(chain: dict, inputs, expected) -> Competitor:
    import torch

    torch.set_num_threads(CORES)
    params = {k: torch.from_numpy(v) for k, v in inputs}
    forward = torch_forward(chain, params)
    with torch.no_grad():
        got = forward().numpy()
    check = compare(got, expected, chain["input"]["dtype"])
    if not check["correct"]:
        raise SystemExit(f"torch: WRONG RESULT: {check['message']}")

    def sample(number: int) -> float:
        with torch.no_grad():
            forward()  # warm, like time_evaluator's discarded call
            start = time.perf_counter()
            for _ in range(number):
                forward()
            return (time.perf_counter() - start) / number * 1e3

    return Competitor(
        f"PyTorch {torch.__version__} CPU ({CORES} threads)",
        sample,
        note=f"max abs err {check['max_abs_error']:.1e}",
    )


FMA_LIB = HERE / "fma_peak.so"  # built from fma_peak.c by run.sh
FMA_ITERATIONS = 400_000  # ~1.5 ms per call at peak on 2 cores


def peak_competitor() -> tuple[Competitor, float]:
    """The machine's FMA peak: 12 independent AVX2 FMA chains per thread (fma_peak.c).

    playground.build.peak.fma_kernel is not used: with its 6 accumulators, and even rebuilt with
    12, it reached about half of this kernel's rate here (see README.md).
    """
    import ctypes

    if not FMA_LIB.is_file():
        raise SystemExit(f"{FMA_LIB} is missing: build it with benchmarks/run.sh")
    lib = ctypes.CDLL(str(FMA_LIB))
    lib.fma_run.restype = ctypes.c_double
    lib.fma_run.argtypes = [ctypes.c_long, ctypes.c_int]
    flop = 2.0 * CORES * FMA_ITERATIONS * 12 * 8

    def sample(number: int) -> float:
        lib.fma_run(FMA_ITERATIONS, CORES)  # warm (thread start)
        start = time.perf_counter()
        for _ in range(number):
            lib.fma_run(FMA_ITERATIONS, CORES)
        return (time.perf_counter() - start) / number * 1e3

    return Competitor("FMA peak kernel (fma_peak.c)", sample), flop


# ----------------------------------------------------------------------------- one case


def run_case(case: Case, rounds: int, sample_ms: float, unscheduled_gflops: list[float]) -> dict:
    chain, steps, meta = load_preset(case.preset)
    flop = chain_flop(chain)
    inputs = make_inputs(chain, 0)
    t0 = time.perf_counter()
    expected = reference_output(chain, inputs)
    print(
        f"\n== {case.preset}: {meta.get('title', '')}  ({flop / 1e9:.3f} GFLOP, {len(steps)} "
        f"steps; reference {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    comps = {"preset": tvm_competitor(case.preset, chain, steps, inputs, expected)}
    if case.unfused.startswith("recipe:"):
        rec = UNFUSED_RECIPES[case.unfused.removeprefix("recipe:")]()
        unfused_steps = rec.steps
    else:
        unfused_steps = load_preset(case.unfused)[1]
    comps["unfused"] = tvm_competitor(case.unfused_label, chain, unfused_steps, inputs, expected)
    comps["torch"] = torch_competitor(chain, inputs, expected)
    estimate = ""
    if case.run_unscheduled:
        comps["unscheduled"] = tvm_competitor("unscheduled chain", chain, (), inputs, expected)
    peak, peak_flop = peak_competitor()
    comps["peak"] = peak
    for c in comps.values():
        c.calibrate(sample_ms)
    for r in range(rounds):
        for c in comps.values():
            c.samples.append(c.sample(c.number))
    if case.run_unscheduled:
        unscheduled_gflops.append(flop / comps["unscheduled"].median_ms / 1e6)
    elif unscheduled_gflops:
        est_s = flop / (statistics.median(unscheduled_gflops) * 1e9)
        estimate = (
            f"not run: would take ~{est_s:.0f} s per call (> {UNSCHEDULED_LIMIT_S:.0f} s) "
            f"at the {statistics.median(unscheduled_gflops):.1f} GFLOP/s the unscheduled "
            "ResNet chain reached"
        )
    else:
        estimate = f"not run (> {UNSCHEDULED_LIMIT_S:.0f} s per call)"
    peak_gflops = peak_flop / peak.median_ms / 1e6
    best_peak = peak_flop / min(peak.samples) / 1e6
    base = comps["preset"].median_ms
    rows = []
    for key, c in comps.items():
        if key == "peak":
            continue
        gf = flop / c.median_ms / 1e6
        rows.append(
            {
                "key": key,
                "name": c.name,
                "median_ms": c.median_ms,
                "gflops": gf,
                "share_of_peak": gf / best_peak,
                "number": c.number,
                "spread": (max(c.samples) - min(c.samples)) / c.median_ms,
                "speedup_of_preset": c.median_ms / base,
                "note": c.note,
            }
        )
    result = {
        "preset": case.preset,
        "title": meta.get("title", ""),
        "flop": flop,
        "steps": len(steps),
        "rows": rows,
        "rounds": rounds,
        "peak_gflops_median": peak_gflops,
        "peak_gflops_best": best_peak,
        "unscheduled": estimate,
        "unfused_preset": "" if case.unfused.startswith("recipe:") else case.unfused,
    }
    print_case(result)
    return result


def print_case(res: dict) -> None:
    print(
        f"   in-run FMA peak: best {res['peak_gflops_best']:.1f} GFLOP/s, median "
        f"{res['peak_gflops_median']:.1f} GFLOP/s ({res['rounds']} rounds)"
    )
    print(
        f"   {'competitor':52s} {'median ms':>10s} {'GFLOP/s':>8s} {'% peak':>7s} {'preset x':>9s}"
    )
    for row in res["rows"]:
        label = (
            ("preset " + res["preset"])
            if row["key"] == "preset"
            else f"{row['key']}: {row['name']}"
        )
        print(
            f"   {label[:52]:52s} {row['median_ms']:10.3f} {row['gflops']:8.1f} "
            f"{100 * row['share_of_peak']:6.1f}% {row['speedup_of_preset']:8.2f}x"
        )
    if res["unscheduled"]:
        print(f"   unscheduled: {res['unscheduled']}")


def summary(results: list[dict]) -> str:
    lines = [
        "| preset | GFLOP | median ms | GFLOP/s | % of peak (peak GFLOP/s) | vs PyTorch "
        "| vs unscheduled | vs unfused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        by = {r["key"]: r for r in res["rows"]}
        p = by["preset"]
        uns = (
            f"{by['unscheduled']['speedup_of_preset']:.1f}x"
            if "unscheduled" in by
            else "not run (>10 s)"
        )
        lines.append(
            f"| {res['preset']} | {res['flop'] / 1e9:.3f} | {p['median_ms']:.3f} | "
            f"{p['gflops']:.1f} | {100 * p['share_of_peak']:.0f}% "
            f"({res['peak_gflops_best']:.0f}) | "
            f"{by['torch']['speedup_of_preset']:.2f}x | {uns} | "
            f"{by['unfused']['speedup_of_preset']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="preset names to run (default: all)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    parser.add_argument("--sample-ms", type=float, default=40.0, help="target ms per sample")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, TVM_NUM_THREADS={CORES}, target {cpu_target()}, "
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
        f"{os.getloadavg()[2]:.2f}"
    )
    ratios = (
        "ratios are time(competitor) / time(preset): > 1 means the preset is faster; "
        "% peak is against the best FMA-kernel rate measured in the same rounds"
    )
    print(ratios)
    cases = [c for c in CASES if not args.only or c.preset in args.only]
    # The unscheduled ResNet chain gives the rate used to estimate unscheduled seed chains.
    cases.sort(key=lambda c: not c.run_unscheduled)
    results, uns = [], []
    for case in cases:
        results.append(run_case(case, args.rounds, args.sample_ms, uns))
    order = {c.preset: i for i, c in enumerate(CASES)}
    results.sort(key=lambda r: order[r["preset"]])
    load = os.getloadavg()
    print(
        f"\nsummary ({ratios}); load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print(summary(results))
    if args.json:
        args.json.write_text(
            json.dumps({"load_start": load_start, "load_end": load, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

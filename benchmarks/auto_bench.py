"""``auto`` against PyTorch, MetaSchedule and the unscheduled chain, on the chains of
``benchmarks/chains.py``; and the fuse-or-not verdict checked against measurement.

Run through ``benchmarks/run.sh auto`` (it sets up ``.venv-bench`` with PyTorch CPU). The method
was fixed before anything was measured:

* threads: ``TVM_NUM_THREADS`` = ``torch.set_num_threads`` = the machine's cores;
* per chain, in this order: MetaSchedule with 64 trials (the page's tuning job, timed wall
  clock); ``auto`` (:func:`playground.templates.search.search`) with a budget of
  ``min(60 s, MetaSchedule's time)``; the fuse-or-not verdict on the same search
  (:func:`playground.templates.verdict.fusion_verdict`);
* then every competitor is checked against the float64 reference (a wrong one is reported,
  never timed) and timed side by side in ``--rounds`` interleaved rounds (one sample each per
  round, calls calibrated to ~``--sample-ms``): auto's best, MetaSchedule's best, PyTorch
  (``F.conv2d`` and the same elementwise ops, NCHW as is, ``no_grad``), the unscheduled chain
  (estimated instead when it would take more than 10 s), and the best fused and unfused
  schedules (the verdict is checked against their ratio in these rounds);
* the FMA peak (the TVM kernel of :mod:`playground.build.peak`, sized from the machine's vector
  width) and memory bandwidth are measured at the start; a chain is compute-bound when its
  arithmetic intensity (FLOP / compulsory bytes: inputs, weights, output) is at or above the
  roofline's ridge point.

Usage::

    benchmarks/run.sh auto [--only NAME ...] [--rounds 7] [--json benchmarks/auto_results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from chains import CHAINS  # noqa: E402

from playground.build.machine import cores as machine_cores  # noqa: E402

CORES = machine_cores()
os.environ.setdefault("TVM_NUM_THREADS", str(CORES))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tvm  # noqa: E402

from playground.build.lowering import compile_module  # noqa: E402
from playground.build.machine import machine_facts  # noqa: E402
from playground.build.peak import measure_peak  # noqa: E402
from playground.build.timing import measure  # noqa: E402
from playground.chain.reference import compare, make_inputs, reference_output  # noqa: E402
from playground.chain.spec import chain_flop, normalize_chain, tensor_shapes  # noqa: E402
from playground.explore.tuning import TuneResult, tune  # noqa: E402
from playground.schedule.replay import scheduled  # noqa: E402
from playground.schedule.session import Session  # noqa: E402
from playground.templates.search import search  # noqa: E402
from playground.templates.verdict import NO_DIFFERENCE, fusion_verdict  # noqa: E402
from playground.worker.pool import WorkerPool  # noqa: E402

DEV = tvm.cpu()
UNSCHEDULED_LIMIT_S = 10.0


# ----------------------------------------------------------------------------- competitors

@dataclass
class Competitor:
    name: str
    run_once: object  # callable(number) -> ms per call
    samples: list[float] = field(default_factory=list)
    number: int = 1

    def calibrate(self, sample_ms: float) -> None:
        per_call = min(self.run_once(1), self.run_once(1))
        self.number = max(1, round(sample_ms / max(per_call, 1e-3)))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples)


def tvm_competitor(name: str, chain: dict, steps, inputs, expected) -> tuple[Competitor | None,
                                                                             str]:
    """A compiled schedule, checked (NaN-poisoned validation build) before it may be timed."""
    mod = scheduled(chain, tuple(steps)).mod
    check_ex = compile_module(mod, validation=True)
    args = [tvm.runtime.tensor(a, DEV) for _, a in inputs]
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, "float32"), DEV)
    check_ex["main"](*args, out)
    verdict = compare(out.numpy(), expected, "float32")
    if not verdict["correct"]:
        return None, verdict["message"]
    ex = compile_module(mod)
    call = [*args, out]

    def run_once(number: int) -> float:
        return measure(ex.mod, call, DEV, number=number, repeat=1, warmup=1).median_ms

    return Competitor(name, run_once), ""


def torch_forward(chain: dict, tensors: dict[str, torch.Tensor]):
    """The chain in PyTorch: F.conv2d, pooling and the same elementwise ops, NCHW as is."""
    def forward():
        values = {"data": tensors["data"]}
        x = values["data"]
        for layer in chain["layers"]:
            name, op = layer["name"], layer["op"]
            if op == "conv2d":
                pt, pl, pb, pr = layer["padding"]
                if (pt, pl) != (pb, pr):
                    x = F.pad(x, (pl, pr, pt, pb))
                    pad = 0
                else:
                    pad = (pt, pl)
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


def torch_competitor(chain: dict, inputs, expected) -> tuple[Competitor | None, str]:
    tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in inputs}
    forward = torch_forward(chain, tensors)
    with torch.no_grad():
        out = forward().numpy()
    verdict = compare(out, expected, "float32")
    if not verdict["correct"]:
        return None, verdict["message"]

    def run_once(number: int) -> float:
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(number):
                forward()
            return (time.perf_counter() - t0) / number * 1e3

    return Competitor("PyTorch", run_once), ""


# ----------------------------------------------------------------------------- per chain

def compulsory_bytes(chain: dict) -> int:
    """Inputs, weights and the output, once each (float32)."""
    shapes = tensor_shapes(chain)
    total = math.prod(chain["input"]["shape"]) + math.prod(shapes[chain["layers"][-1]["name"]])
    channels = chain["input"]["shape"][1]
    for layer in chain["layers"]:
        if layer["op"] == "conv2d":
            kh, kw = layer["kernel"]
            total += layer["channels"] * channels // layer["groups"] * kh * kw
        elif layer["op"] in ("bias_add", "batch_norm"):
            total += channels * (4 if layer["op"] == "batch_norm" else 1)
        channels = shapes[layer["name"]][1]
    return 4 * total


def bench_chain(name: str, raw: dict, pool: WorkerPool, facts, args) -> dict:
    chain = normalize_chain(raw)
    flop = chain_flop(chain)
    row: dict = {"chain": name, "gflop": flop / 1e9}
    print(f"\n== {name}: {flop / 1e9:.3f} GFLOP", flush=True)
    # MetaSchedule, 64 trials: the page's tuning job, wall clock
    t0 = time.monotonic()
    tuned = tune(pool, Session.new(chain), trials=args.trials)
    ms_s = time.monotonic() - t0
    row["metaschedule_s"] = round(ms_s, 1)
    ms_steps = TuneResult.from_value(tuned.value).steps if tuned.ok else None
    print(f"   MetaSchedule({args.trials}): {ms_s:.0f} s ({tuned.status})", flush=True)
    # auto, budget min(60 s, MetaSchedule's time); the verdict on the same search
    budget = min(args.budget_s, ms_s)
    t0 = time.monotonic()
    result = search(pool, chain, facts, budget_s=budget)
    row["auto_s"] = round(time.monotonic() - t0, 1)
    best = result.best()
    verdict = fusion_verdict(pool, chain, facts, budget_s=budget, result=result)
    row.update(candidates=result.measured, auto_label=best.label if best else None,
               verdict=verdict.verdict, verdict_ratio=verdict.ratio, reason=verdict.reason)
    print(f"   auto: {result.measured} candidates in {row['auto_s']} s; verdict "
          f"{verdict.verdict} ({verdict.reason})", flush=True)
    # competitors, checked, then timed side by side
    inputs = make_inputs(chain, 0)
    expected = reference_output(chain, inputs)
    comps: list[Competitor] = []
    notes = []
    for label, steps in (("auto", best.steps if best else None), ("MetaSchedule", ms_steps),
                         ("fused", verdict.fused.steps if verdict.fused else None),
                         ("unfused", verdict.unfused.steps if verdict.unfused else None)):
        if steps is None:
            notes.append(f"{label}: none")
            continue
        comp, why = tvm_competitor(label, chain, steps, inputs, expected)
        if comp is None:
            notes.append(f"{label}: WRONG ({why})")
        else:
            comps.append(comp)
    comp, why = torch_competitor(chain, inputs, expected)
    comps.append(comp) if comp else notes.append(f"PyTorch: WRONG ({why})")
    estimate = flop / 2e9  # the unscheduled chains ran at 1-3 GFLOP/s in earlier runs
    if estimate < UNSCHEDULED_LIMIT_S:
        comp, why = tvm_competitor("unscheduled", chain, (), inputs, expected)
        comps.append(comp) if comp else notes.append(f"unscheduled: WRONG ({why})")
    else:
        notes.append(f"unscheduled: not run (~{estimate:.0f} s per call estimated)")
    for c in comps:
        c.calibrate(args.sample_ms)
    for _ in range(args.rounds):
        for c in comps:
            c.samples.append(c.run_once(c.number))
    times = {c.name: c.median_ms for c in comps}
    row.update(times_ms=times, notes=notes, load=os.getloadavg()[0])
    if "auto" in times:
        a = times["auto"]
        row["auto_gflops"] = flop / a / 1e6
        for other in ("PyTorch", "MetaSchedule", "unscheduled"):
            if other in times:
                row[f"vs_{other}"] = times[other] / a
    if "fused" in times and "unfused" in times:
        measured = times["unfused"] / times["fused"]
        call = "fuse" if measured > NO_DIFFERENCE else "don't fuse" \
            if measured < 1 / NO_DIFFERENCE else "no difference"
        row.update(measured_ratio=measured, measured_verdict=call,
                   verdict_agrees=call == verdict.verdict)
    print("   " + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sample-ms", type=float, default=40.0)
    parser.add_argument("--json", type=Path, default=HERE / "auto_results.json")
    args = parser.parse_args()
    torch.set_num_threads(CORES)
    facts = machine_facts()
    print(f"machine: {facts.summary()}; load {os.getloadavg()}", flush=True)
    names = args.only or list(CHAINS)
    rows = []
    with WorkerPool(1, num_threads=CORES) as pool:
        peak = measure_peak(pool, cores=CORES, refresh=True)
        print(f"peak: {peak.gflops:.0f} GFLOP/s, {peak.bandwidth_gbs:.1f} GB/s, ridge "
              f"{peak.ridge:.1f} FLOP/B", flush=True)
        for name in names:
            row = bench_chain(name, CHAINS[name], pool, facts, args)
            intensity = row["gflop"] * 1e9 / compulsory_bytes(normalize_chain(CHAINS[name]))
            row.update(intensity=intensity, compute_bound=intensity >= peak.ridge)
            if "auto_gflops" in row:
                row["pct_peak"] = 100 * row["auto_gflops"] / peak.gflops
            rows.append(row)
            args.json.write_text(json.dumps({"machine": facts.to_dict(),
                                             "summary": facts.summary(),
                                             "peak": peak.to_dict(), "rows": rows}, indent=1))
    print(f"\nwrote {args.json}; load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

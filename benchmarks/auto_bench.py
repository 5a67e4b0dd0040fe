"""``auto`` against PyTorch, MetaSchedule and the unscheduled chain, on the chains of
``benchmarks/chains.py``; and the fuse-or-not verdict checked against measurement.

Run through ``benchmarks/run.sh auto`` (it sets up ``.venv-bench`` with PyTorch CPU). The method
was fixed before anything was measured:

* threads: ``TVM_NUM_THREADS`` = ``torch.set_num_threads`` = ONNX Runtime's intra-op threads
  = the machine's cores;
* per chain, in this order: MetaSchedule with 64 trials (the page's tuning job, timed wall
  clock); ``auto`` (:func:`playground.templates.search.search`) with a budget of
  ``min(60 s, MetaSchedule's time)``; the fuse-or-not verdict on the same search
  (:func:`playground.templates.verdict.fusion_verdict`);
* then every competitor is checked against the float64 reference (a wrong one is reported,
  never timed) and timed side by side in ``--rounds`` interleaved rounds (one sample each per
  round, calls calibrated to ~``--sample-ms``): auto's best, MetaSchedule's best (both built
  with ``--weights``, by default ``constant``: the weight re-layouts run once, before timing),
  PyTorch (``F.conv2d`` and the same elementwise ops, NCHW as is, ``no_grad``, the weights
  passed on every call, in a process of its own: ``torch_timer.py``), ONNX Runtime (the chain
  as an ONNX graph whose weights are initializers, pre-packed at session start; all graph
  optimizations, ``CORES`` intra-op threads; ``ort_timer.py``), the unscheduled chain
  (estimated instead when it would take more than 10 s), auto's best built without the
  tile-local lowering step (issue 20: the step must slow no chain down), and the best fused and
  unfused schedules (the verdict is checked against their ratio in these rounds: only an
  interval clear of the 5% band is "fuse" / "don't fuse"; the verdict itself decides only
  where its interval clears the band by its own width, so a decided call should hold here);
* every ratio ("vs ONNX Runtime", ...) is the median of the rounds' ratios with a bootstrap
  95% interval (:func:`playground.measure.stats.compare_rounds`): each round samples every
  competitor back to back, so the rounds pair; the samples themselves are kept in the JSON;
* the FMA peak (the TVM kernel of :mod:`playground.measure.peak`, sized from the machine's vector
  width) and memory bandwidth are measured at the start; a chain is compute-bound when its
  arithmetic intensity (FLOP / compulsory bytes: inputs, weights, output) is at or above the
  roofline's ridge point.

Usage::

    benchmarks/run.sh [--only NAME ...] [--rounds 7] [--weights constant|per-call]
        [--without PyTorch] [--json benchmarks/auto_results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from chains import CHAINS  # noqa: E402

from playground.measure.machine import cores as machine_cores  # noqa: E402

CORES = machine_cores()
os.environ.setdefault("TVM_NUM_THREADS", str(CORES))

from playground import service  # noqa: E402
from playground.chain.spec import chain_flop, normalize_chain, tensor_shapes  # noqa: E402
from playground.explore.tuning import TuneResult, tune  # noqa: E402
from playground.measure.machine import machine_facts  # noqa: E402
from playground.measure.peak import measure_peak  # noqa: E402
from playground.measure.stats import FASTER, SLOWER, compare_rounds, decide  # noqa: E402
from playground.schedule.session import Session  # noqa: E402
from playground.templates.search import finalize, search  # noqa: E402
from playground.templates.verdict import fusion_verdict  # noqa: E402
from playground.worker.pool import WorkerPool  # noqa: E402

UNSCHEDULED_LIMIT_S = 10.0
#: auto's best schedule built without the tile-local lowering step (``--no-tile-local``).
STEP_OFF = "auto, tile-local off"
#: Pause before each sample, so that the other process's spinning threads have gone to sleep.
SETTLE_S = 0.3


# ----------------------------------------------------------------------------- competitors

@dataclass
class Competitor:
    """Something timed one sample at a time; ``sample()`` returns ms per call."""

    name: str
    sample: object  # callable() -> ms per call
    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples)


def tvm_competitor(pool: WorkerPool, name: str, chain: dict, steps,
                   weights: str = "per-call",
                   tile_local: bool = True) -> tuple[Competitor | None, str]:
    """A schedule timed in the playground's worker (the ``run`` job: NaN-poisoned validation
    on two seeds first; the compiled kernels stay cached in the worker between samples), its
    weights re-laid out per call or once (``weights``), built with the tile-local lowering
    step unless ``tile_local`` is False."""
    session = Session(chain, tuple(steps), len(steps))
    first = service.run(pool, session, "cpu", measure=True, repeat=3, min_repeat_ms=40,
                        weights=weights, tile_local=tile_local)
    if not first.ok:
        return None, first.message or (first.value or {}).get("message", first.status)
    if not first.value.get("correct"):
        return None, first.value.get("message", "wrong result")

    def sample() -> float:
        time.sleep(SETTLE_S)
        result = service.run(pool, session, "cpu", measure=True, repeat=3, min_repeat_ms=40,
                             weights=weights, tile_local=tile_local)
        return result.value["median_ms"] if result.ok else math.nan

    return Competitor(name, sample), ""


#: The runtimes timed in a process of their own (``timer_protocol.py``): name -> script.
RUNTIMES = {"PyTorch": "torch_timer.py", "ONNX Runtime": "ort_timer.py"}


class TimerProcess:
    """A runtime in its own process (PyTorch: ``torch_timer.py``, ONNX Runtime:
    ``ort_timer.py``), so that its threads and TVM's thread pool never spin against each
    other."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(HERE / RUNTIMES[name])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(HERE.parent)})

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def competitor(self, chain: dict) -> tuple[Competitor | None, str]:
        reply = self.ask({"chain": chain, "threads": CORES})
        if not reply["correct"]:
            return None, reply["message"]
        per_call = min(self.ask({"time": 1})["ms"] for _ in range(2))
        number = max(1, round(40.0 / max(per_call, 1e-3)))

        def sample() -> float:
            time.sleep(SETTLE_S)
            return statistics.median(self.ask({"time": number})["ms"] for _ in range(3))

        return Competitor(self.name, sample), ""

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


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


def bench_chain(name: str, raw: dict, pool: WorkerPool, runtimes: list[TimerProcess], facts,
                args) -> dict:
    chain = normalize_chain(raw)
    flop = chain_flop(chain)
    row: dict = {"chain": name, "gflop": flop / 1e9, "weights": args.weights}
    print(f"\n== {name}: {flop / 1e9:.3f} GFLOP", flush=True)
    # MetaSchedule, 64 trials: the page's tuning job, wall clock
    ms_steps, ms_s = None, float("inf")
    if args.trials:  # --trials 0: no MetaSchedule (a quick look at auto against PyTorch)
        t0 = time.monotonic()
        tuned = tune(pool, Session.new(chain), trials=args.trials)
        ms_s = time.monotonic() - t0
        row["metaschedule_s"] = round(ms_s, 1)
        ms_steps = TuneResult.from_value(tuned.value).steps if tuned.ok else None
        print(f"   MetaSchedule({args.trials}): {ms_s:.0f} s ({tuned.status})", flush=True)
    # auto, budget min(60 s, MetaSchedule's time); the verdict on the same search
    budget = min(args.budget_s, ms_s)
    t0 = time.monotonic()
    result = search(pool, chain, facts, budget_s=budget, weights=args.weights)
    best = finalize(pool, result)  # the top 3 timed again side by side (what auto prints)
    row["auto_s"] = round(time.monotonic() - t0, 1)
    verdict = fusion_verdict(pool, chain, facts, budget_s=budget, result=result)
    row.update(candidates=result.measured, auto_label=best.label if best else None,
               verdict=verdict.verdict, verdict_ratio=verdict.ratio,
               verdict_low=verdict.interval.low if verdict.interval else None,
               verdict_high=verdict.interval.high if verdict.interval else None,
               reason=verdict.reason)
    print(f"   auto: {result.measured} candidates in {row['auto_s']} s; verdict "
          f"{verdict.verdict} ({verdict.reason})", flush=True)
    # competitors, checked, then timed side by side, one sample each per round
    comps: list[Competitor] = []
    notes = [f"MetaSchedule: {note}" for note in (tuned.value or {}).get("notes", [])
             if note] if args.trials and tuned.ok else []
    for label, steps in (("auto", best.steps if best else None), ("MetaSchedule", ms_steps),
                         ("fused", verdict.fused.steps if verdict.fused else None),
                         ("unfused", verdict.unfused.steps if verdict.unfused else None)):
        if steps is None:
            if label != "MetaSchedule" or args.trials:  # --trials 0: not asked for
                notes.append(f"{label}: none")
            continue
        comp, why = tvm_competitor(pool, label, chain, steps, args.weights)
        comps.append(comp) if comp else notes.append(f"{label}: WRONG or failed ({why})")
    if best is not None:  # issue 20: no chain may get slower with the tile-local step on
        comp, why = tvm_competitor(pool, STEP_OFF, chain, best.steps, args.weights,
                                   tile_local=False)
        comps.append(comp) if comp else notes.append(f"{STEP_OFF}: failed ({why})")
    for runtime in runtimes:
        comp, why = runtime.competitor(chain)
        comps.append(comp) if comp else notes.append(f"{runtime.name}: WRONG ({why})")
    estimate = flop / 2e9  # the unscheduled chains ran at 1-3 GFLOP/s in earlier runs
    if estimate < UNSCHEDULED_LIMIT_S:
        comp, why = tvm_competitor(pool, "unscheduled", chain, ())
        comps.append(comp) if comp else notes.append(f"unscheduled: failed ({why})")
    else:
        notes.append(f"unscheduled: not run (~{estimate:.0f} s per call estimated)")
    for _ in range(args.rounds):
        for c in comps:
            c.samples.append(c.sample())
    times = {c.name: c.median_ms for c in comps}
    samples = {c.name: c.samples for c in comps}
    row.update(times_ms=times, samples_ms=samples, notes=notes, load=os.getloadavg()[0])
    if "auto" in times:
        a = times["auto"]
        row["auto_gflops"] = flop / a / 1e6
        for other in ("PyTorch", "ONNX Runtime", "MetaSchedule", "unscheduled", STEP_OFF):
            if other in times:
                # paired by round (each round samples every competitor back to back): the
                # median of the rounds' ratios, with its bootstrap interval
                r = compare_rounds(samples[other], samples["auto"])
                row[f"vs_{other}"] = r.ratio
                row[f"vs_{other}_interval"] = [r.low, r.high]
    if "fused" in times and "unfused" in times:
        # re-measured: unfused / fused over these paired rounds, "fuse" / "don't fuse" when the
        # whole interval clears the 5% band (no margin: the verdict's call must hold here)
        r = compare_rounds(samples["unfused"], samples["fused"])
        call = {FASTER: "fuse", SLOWER: "don't fuse"}.get(decide(r), "no difference")
        said = verdict.verdict.split(" (")[0]
        opposite = {"fuse": "don't fuse", "don't fuse": "fuse"}.get(said)
        row.update(measured_ratio=r.ratio, measured_interval=[r.low, r.high],
                   measured_verdict=call,
                   # a decided verdict agrees when the re-measurement decides the same way;
                   # it contradicts it only when the re-measurement decides the other way
                   verdict_agrees=call == said, verdict_decided=said != "no difference",
                   verdict_contradicted=call == opposite)
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
    parser.add_argument("--weights", choices=("constant", "per-call"), default="constant",
                        help="how auto's and MetaSchedule's kernels treat the weights "
                             "(constant: re-laid out once, as ONNX Runtime pre-packs them)")
    parser.add_argument("--without", nargs="*", choices=tuple(RUNTIMES), default=[],
                        help="leave these runtimes out (e.g. where torch is not installed)")
    args = parser.parse_args()
    facts = machine_facts()
    print(f"machine: {facts.summary()}; load {os.getloadavg()}", flush=True)
    names = args.only or list(CHAINS)
    rows = []
    runtimes = [TimerProcess(name) for name in RUNTIMES if name not in args.without]
    with WorkerPool(1, num_threads=CORES) as pool:
        peak = measure_peak(pool, cores=CORES, refresh=True)
        print(f"peak: {peak.gflops:.0f} GFLOP/s, {peak.bandwidth_gbs:.1f} GB/s, ridge "
              f"{peak.ridge:.1f} FLOP/B", flush=True)
        for name in names:
            row = bench_chain(name, CHAINS[name], pool, runtimes, facts, args)
            intensity = row["gflop"] * 1e9 / compulsory_bytes(normalize_chain(CHAINS[name]))
            row.update(intensity=intensity, compute_bound=intensity >= peak.ridge)
            if "auto_gflops" in row:
                row["pct_peak"] = 100 * row["auto_gflops"] / peak.gflops
            rows.append(row)
            args.json.write_text(json.dumps({"machine": facts.to_dict(),
                                             "summary": facts.summary(),
                                             "peak": peak.to_dict(), "rows": rows}, indent=1))
    for runtime in runtimes:
        runtime.close()
    print(f"\nwrote {args.json}; load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tables of ``benchmarks/README.md`` from ``auto_results.json`` (what ``auto_bench.py``
wrote), so that no number in the README is typed by hand.

    PYTHONPATH=. .venv/bin/python benchmarks/report.py [benchmarks/auto_results.json]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def geomean(values: list[float]) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def fmt(v, spec: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def with_interval(r: dict, key: str) -> str:
    """``1.23x (1.18-1.30)``: a ratio of the paired rounds with its 95% interval."""
    value = r.get(key)
    if value is None:
        return "—"
    low_high = r.get(f"{key}_interval")
    return f"{value:.2f}x ({low_high[0]:.2f}-{low_high[1]:.2f})" if low_high else f"{value:.2f}x"


def main(path: Path) -> None:
    data = json.loads(path.read_text())
    rows = data["rows"]
    # Chains measured in several runs (auto_bench.py --only, merged): "% of peak" is against
    # the highest peak any run measured, so a run whose peak measured low flatters nothing.
    runs = data.get("runs") or [{"peak": data["peak"], "summary": data["summary"],
                                 "chains": [r["chain"] for r in rows]}]
    peak = max((run["peak"] for run in runs), key=lambda p: p["gflops"])
    for r in rows:
        if r.get("auto_gflops"):
            r["pct_peak"] = 100 * r["auto_gflops"] / peak["gflops"]
    ridge = peak["gflops"] / peak["bandwidth_gbs"]
    print(f"Machine: {data['summary']}; measured FMA peak {peak['gflops']:.0f} GFLOP/s, "
          f"bandwidth {peak['bandwidth_gbs']:.1f} GB/s (ridge {ridge:.1f} FLOP/B); "
          f"TVM_NUM_THREADS = torch threads = {peak['cores']}.")
    if len(runs) > 1:
        print(f"Measured in {len(runs)} runs on this machine (peaks "
              f"{', '.join(format(run['peak']['gflops'], '.0f') for run in runs)} GFLOP/s; "
              f"% of peak below is against the highest).")
    modes = sorted({r.get("weights", "per-call") for r in rows})
    print(f"auto and MetaSchedule timed with {' and '.join(modes)} weights (constant: the "
          "weight re-layouts run once before timing, as ONNX Runtime pre-packs its weights; "
          "PyTorch's functional call takes them as they are on every call).")
    print()
    print("| chain | GFLOP | auto ms | PyTorch ms | ONNX Runtime ms | MetaSchedule(64) ms | "
          "unscheduled ms | vs PyTorch | vs ONNX Runtime | vs MetaSchedule | vs unscheduled | "
          "% of peak | tile-local on / off | auto s (MS s) | verdict (measured) | "
          "auto's schedule |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r.get("times_ms", {})
        peak_note = f"{r['pct_peak']:.0f}%" if "pct_peak" in r else "—"
        if r.get("compute_bound"):
            peak_note += " (compute-bound)"
        # "no difference (within noise)" claims nothing, so it cannot disagree
        agree = "" if r.get("verdict_agrees", True) or not r.get("verdict_decided", True) \
            else " **disagrees**"
        measured = with_interval({"m": r.get("measured_ratio"),
                                  "m_interval": r.get("measured_interval")}, "m")
        verdict = f"{r['verdict']} ({r.get('measured_verdict', '—')}, {measured}){agree}"
        print(f"| {r['chain']} | {r['gflop']:.3f} | {fmt(t.get('auto'))} | "
              f"{fmt(t.get('PyTorch'))} | {fmt(t.get('ONNX Runtime'))} | "
              f"{fmt(t.get('MetaSchedule'))} | "
              f"{fmt(t.get('unscheduled'), '.1f')} | {with_interval(r, 'vs_PyTorch')} | "
              f"{with_interval(r, 'vs_ONNX Runtime')} | "
              f"{fmt(r.get('vs_MetaSchedule'), '.2f')}x | {fmt(r.get('vs_unscheduled'), '.0f')}x | "
              f"{peak_note} | {with_interval(r, 'vs_auto, tile-local off')} | "
              f"{r['auto_s']:.0f} ({fmt(r.get('metaschedule_s'), '.0f')}) | "
              f"{verdict} | {r.get('auto_label') or '—'} |")
    vs_ms = [r["vs_MetaSchedule"] for r in rows if r.get("vs_MetaSchedule")]
    bound = [r for r in rows if r.get("compute_bound") and "pct_peak" in r]
    agreed = [r for r in rows if "verdict_agrees" in r]
    print()
    for other in ("PyTorch", "ONNX Runtime"):
        vs = [r[f"vs_{other}"] for r in rows if r.get(f"vs_{other}")]
        if vs:
            spans = [r[f"vs_{other}_interval"] for r in rows if r.get(f"vs_{other}_interval")]
            sure = (f"; the whole interval above 1.0x on {sum(lo > 1 for lo, _ in spans)}, "
                    f"below on {sum(hi < 1 for _, hi in spans)}" if spans else "")
            print(f"- vs {other}: >= 1.0x on {sum(v >= 1 for v in vs)} of {len(vs)} chains "
                  f"({100 * sum(v >= 1 for v in vs) / len(vs):.0f}%), geometric mean "
                  f"{geomean(vs):.2f}x{sure}")
    if vs_ms:
        print(f"- vs MetaSchedule(64): >= 1.0x on {sum(v >= 1 for v in vs_ms)} of {len(vs_ms)} "
              f"chains ({100 * sum(v >= 1 for v in vs_ms) / len(vs_ms):.0f}%), geometric mean "
              f"{geomean(vs_ms):.2f}x; auto (search and the final re-timing of its top 3) "
              f"took longer than MetaSchedule on "
              f"{sum(r['auto_s'] > r.get('metaschedule_s', math.inf) for r in rows)} chains")
    print(f"- compute-bound chains at >= 70% of the measured peak: "
          f"{sum(r['pct_peak'] >= 70 for r in bound)} of {len(bound)} (median "
          f"{sorted(r['pct_peak'] for r in bound)[len(bound) // 2]:.0f}%)" if bound else "")
    step = [(r["chain"], r["vs_auto, tile-local off"], r.get("vs_auto, tile-local off_interval"))
            for r in rows if r.get("vs_auto, tile-local off")]
    if step:
        slower = [f"{c} ({v:.2f}x)" for c, v, span in step if span and span[1] < 1 / 1.05]
        print(f"- tile-local step on / off (auto's best both ways, paired rounds): geometric "
              f"mean {geomean([v for _, v, _ in step]):.2f}x over {len(step)} chains; slower "
              f"with the step on, outside the 5% band: {', '.join(slower) or 'none'}")
    print(f"- the verdict agrees with the measurement of both schedules on "
          f"{sum(r['verdict_agrees'] for r in agreed)} of {len(agreed)} chains")
    decided = [r for r in agreed if r.get("verdict_decided")]
    if decided:
        print(f"- decided verdicts (fuse / don't fuse, outside the noise) agreeing with the "
              f"measurement: {sum(r['verdict_agrees'] for r in decided)} of {len(decided)}; "
              f"contradicted by it (the re-measurement decides the other way): "
              f"{sum(r.get('verdict_contradicted', False) for r in decided)}")
    noted = [(r["chain"], note) for r in rows for note in r.get("notes", [])
             if note != "MetaSchedule: none"]  # runs of --trials 0 (older JSON said so)
    if noted:
        print("\nNotes of the run:\n")
        for chain, note in noted:
            print(f"- {chain}: {note}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "auto_results.json")

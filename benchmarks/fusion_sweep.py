"""Where fusing convolutions wins and where it loses: sweep the row tile of the fused presets.

    PYTHONPATH=. .venv/bin/python benchmarks/fusion_sweep.py [--cases NAME ...] [--csv DIR]

For each fused preset, the split factor of the output's rows (``split conv2.h factor[1]``, the
rows one tile of the consumer computes) is swept through :func:`playground.explore.sweep.run_sweep`:
every point is built, validated against the float64 reference, timed in the worker (median of
10), and analysed (redundant work, compacted footprint, bytes moved past L2). The unfused
schedule of the same chain (a preset, where one exists) is timed in the same run for the ratio.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playground import service
from playground.explore.sweep import run_sweep, sweep_parameters
from playground.explore.sweep_report import to_csv
from playground.io.presets import load_preset
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool

CASES = {
    # fused preset: (its unfused counterpart, tile rows to try)
    "conv_relu_conv_halo": ("resnet_conv_relu_conv", [2, 4, 7, 8, 14, 28, 56]),
    "depthwise_pointwise_fused": ("depthwise_pointwise_unfused", [1, 2, 4, 7, 8, 14, 28]),
    "seed_two_conv_fused": (None, [8, 16, 32, 107, 214]),
}
PARAM = "split conv2.h factor[1]"


def _session(name: str) -> Session:
    chain, steps, _ = load_preset(name)
    return Session.new(chain, steps)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--csv", type=Path, help="also write one CSV per case here")
    args = parser.parse_args(argv)
    with WorkerPool(1) as pool:
        for name in args.cases:
            unfused, values = CASES[name]
            session = _session(name)
            param = next(p for p in sweep_parameters(session) if p.label == PARAM)
            base = None
            if unfused:
                run = service.run(pool, _session(unfused), "cpu", measure=True)
                base = (run.value or {}).get("median_ms") if run.ok else None
            result = run_sweep(pool, session, param, values,
                               on_progress=lambda i, n, p: print(f"  {i}/{n}", end="\r",
                                                                 file=sys.stderr))
            shape = "x".join(map(str, session.chain["input"]["shape"]))
            print(f"\n## {name} (input {shape}); unfused ({unfused}): "
                  f"{'n/a' if base is None else f'{base:.3f} ms'}")
            print(f"{'tile rows':>9} {'status':>8} {'median ms':>10} {'vs unfused':>10} "
                  f"{'redundancy':>10} {'footprint KiB':>13}")
            for p in result.points:
                ratio = f"{base / p.median_ms:.2f}x" if base and p.median_ms else "-"
                ms = f"{p.median_ms:.3f}" if p.median_ms else "-"
                red = f"{p.redundancy:.3f}" if p.redundancy else "-"
                foot = f"{p.footprint_bytes / 1024:,.0f}" if p.footprint_bytes else "-"
                print(f"{p.value!s:>9} {p.status:>8} {ms:>10} {ratio:>10} {red:>10} {foot:>13}")
            if args.csv:
                args.csv.mkdir(parents=True, exist_ok=True)
                (args.csv / f"{name}.csv").write_text(to_csv(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

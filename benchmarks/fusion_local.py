"""Does fusing two 3x3 convolutions pay once the intermediates are really tile-local?

    PYTHONPATH=. .venv/bin/python benchmarks/fusion_local.py [--chains NAME ...] [--repeat 5]
        [--json FILE] [--tiles 8x8 14x14 7]

For each conv3x3 -> relu -> conv3x3 chain below (intermediates larger than a 1-2 MiB L2), three
template schedules (:mod:`playground.templates.plan`, each stage at its first-ranked register
tile from :func:`playground.templates.space.tile_candidates`) are built, validated against the
float64 reference on NaN-poisoned buffers and timed in the worker, each with and without the
tile-local lowering step (:mod:`playground.compile.tile_local`), side by side in one run:

* unfused: each conv a separate parallel pass over its whole output;
* fused at row tiles: the first row option of :func:`playground.templates.space.fusion_options`;
* fused at 2-D tiles: its first rows x cols option.

"Unfused" is the templates' first-ranked tiling, not a searched best (``python -m playground
fusion`` searches). Timings go through the measurement lock like every other timing; run it on
a quiet machine and report the load average with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from playground import service  # noqa: E402
from playground.chain.spec import chain_flop, normalize_chain  # noqa: E402
from playground.measure.machine import machine_facts  # noqa: E402
from playground.schedule.session import Session  # noqa: E402
from playground.templates.plan import Group, Plan, plan_steps  # noqa: E402
from playground.templates.space import fusion_options, tile_candidates  # noqa: E402
from playground.templates.stages import stages  # noqa: E402
from playground.worker.pool import WorkerPool  # noqa: E402


def two_convs(c: int, h: int, w: int | None = None, k: int | None = None) -> dict:
    conv = {"op": "conv2d", "kernel": 3, "padding": 1}
    return {"input": {"shape": [1, c, h, w or h]},
            "layers": [{**conv, "channels": k or c}, {"op": "relu"}, {**conv, "channels": c}]}


CHAINS = {
    "1x32x224x224": two_convs(32, 224),
    "1x64x112x112": two_convs(64, 112),
    "1x16x512x512": two_convs(16, 512),
    "1x32x256x256": two_convs(32, 256),
    "1x64x56x56 (intermediate fits L2)": two_convs(64, 56),
}


def schedules(chain: dict, facts, extra: tuple[tuple[int, int], ...] = ()) -> dict[str, Plan]:
    """The three plans of a chain: unfused, fused at row tiles, fused at 2-D tiles; and the
    fused group again at each ``extra`` (rows, cols) tile (cols None: a row tile)."""
    st = stages(chain)
    lanes = facts.lanes("float32")
    tiles = tuple((tile_candidates(s, facts) or [None])[0] if s.kind == "conv" else None
                  for s in st)
    plans = {"unfused": Plan(tiles, tuple(Group(i, i) for i in range(len(st))), lanes)}
    options = fusion_options(st, facts)
    for label, flat in (("fused rows", False), ("fused 2-D", True)):
        option = next((o for o in options if (o.group.cols is not None) == flat), None)
        if option is not None:
            g = option.group
            groups = (*(Group(i, i) for i in range(g.first)), g,
                      *(Group(i, i) for i in range(g.last + 1, len(st))))
            plans[f"{label} {g.tile_label}"] = Plan(tiles, groups, lanes)
            for rows, cols in extra:
                if (cols is not None) == flat:
                    tile = replace(g, rows=rows, cols=cols)
                    plans[f"{label} {tile.tile_label}"] = Plan(
                        tiles, tuple(tile if x is g else x for x in groups), lanes)
    return plans


def measure(pool, chain: dict, plan: Plan, tile_local: bool, repeat: int) -> dict:
    steps = plan_steps(chain, plan).steps
    result = service.run(pool, Session.new(chain, steps), "cpu", repeat=repeat,
                         min_repeat_ms=50.0, tile_local=tile_local)
    value = result.value or {}
    if result.status != "ok" or not value.get("correct"):
        return {"status": result.status, "message": result.message or value.get("message")}
    return {"status": "ok", "median_ms": value["median_ms"], "gflops": value["gflops"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", nargs="*", help="names of CHAINS (default: all)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiles", nargs="*", default=[], metavar="RxC",
                        help="also time the fused group at these tiles: RxC (2-D) or R (rows), "
                             "e.g. 8x8 14x14 7")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    facts = machine_facts()
    print(f"machine: {facts.summary()}, TVM_NUM_THREADS={facts.cores}; load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    extra = tuple((int(t.split("x")[0]), int(t.split("x")[1]) if "x" in t else None)
                  for t in args.tiles)
    with WorkerPool(1, num_threads=facts.cores) as pool:
        for name in args.chains or CHAINS:
            chain = normalize_chain(CHAINS[name])
            for label, plan in schedules(chain, facts, extra).items():
                for tile_local in (False, True):
                    t0 = time.monotonic()
                    got = measure(pool, chain, plan, tile_local, args.repeat)
                    row = {"chain": name, "schedule": label, "tile_local": tile_local,
                           "gflop": chain_flop(chain) / 1e9, "load": os.getloadavg()[0],
                           "wall_s": round(time.monotonic() - t0, 1), **got}
                    rows.append(row)
                    ms = f"{got['median_ms']:9.2f} ms" if got["status"] == "ok" else \
                        f"{got['status']}: {got.get('message')}"
                    print(f"{name:<36} {label:<24} tile-local {'on ' if tile_local else 'off'}"
                          f" {ms}  (load {row['load']:.1f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts.summary(), "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

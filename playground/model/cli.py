"""``python -m playground model MODEL.onnx``: a whole network's chains, searched and judged.

Prints, per distinct chain: its source nodes, the chain JSON, the multiplicity, ``auto_ms``,
``valid``, ``correct``, the verdict and its ratio; then the network's totals (the sum of the
best times x multiplicity, the same unfused, the ops left out). ``--json`` prints one object
(:meth:`~playground.model.scanner.ScanResult.to_json`); ``-o DIR`` writes each chain's best
schedule as a standalone script plus an index; ``--cut-only`` stops after the cutting (no
kernel is built). With ``PLAYGROUND_TRACKER`` set, timings go to the RPC farm. A scan is
resumable: run the same command again and the chains already stored are reused. Exits 1
when the model cannot be read or a chain has no correct schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N,C,H,W (e.g. 1,3,224,224)") from None
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not N,C,H,W (e.g. 1,3,224,224)")
    return dims


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="cut an ONNX model into chains; search and judge each")
    p.add_argument("file", help="an .onnx file, or an example's name (resnet18, mobilenet_v2, "
                                "yolo_tiny)")
    p.add_argument("--budget-s-per-chain", type=float, default=30.0,
                   help="search budget of each distinct chain (s)")
    p.add_argument("--max-convs", type=int, default=3,
                   help="most window layers (conv, pool) in one chain")
    p.add_argument("--input-shape", type=_shape, help="N,C,H,W, for a model with dynamic dims")
    p.add_argument("--json", action="store_true")
    p.add_argument("-o", "--output", help="write each chain's best schedule here, with an index")
    p.add_argument("--cut-only", action="store_true", help="list the chains; build nothing")
    p.add_argument("--no-resume", action="store_true",
                   help="search every chain again instead of reusing stored outcomes")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace):
    from pathlib import Path

    from playground.model.examples import EXAMPLES, example_bytes
    from playground.model.onnx_read import load_model

    if not Path(args.file).exists() and args.file in EXAMPLES:
        return load_model(example_bytes(args.file), args.input_shape, name=args.file)
    return load_model(args.file, args.input_shape)


def _print_row(i: int, row: dict) -> None:
    ratio = "-" if row.get("ratio") is None else f"{row['ratio']:.2f}x"
    ms = "-" if row.get("auto_ms") is None else f"{row['auto_ms']:.3f} ms"
    print(f"chain {i}  x{row['count']}  {row['describe']}")
    print(f"  nodes:   {', '.join(row['nodes'])}")
    if row["count"] > 1:
        print(f"  also:    {'; '.join(', '.join(o) for o in row['occurrences'][1:])}")
    print(f"  chain:   {json.dumps(row['chain'], separators=(',', ':'))}")
    if "verdict" in row:
        stored = "  [stored]" if row.get("status") == "reused" else ""
        print(f"  auto_ms: {ms}  valid: {row['valid']}  correct: {row['correct']}  "
              f"verdict: {row['verdict'] or '-'} ({ratio}){stored}")
        if row.get("reason"):
            print(f"  why:     {row['reason']}")


def run(args: argparse.Namespace) -> int:
    from playground.model.cut import cut_chains, left_out

    model = _load(args)
    chains = cut_chains(model, args.max_convs)
    if args.cut_only:
        out = {"model": model.name, "summary": model.summary(),
               "chains": [c.to_dict() for c in chains],
               "skipped_ops": left_out(model, chains), "model_flop": model.flop}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(model.summary())
            for i, c in enumerate(chains, 1):
                _print_row(i, c.to_dict())
            print(f"left out: {out['skipped_ops'] or 'nothing'}")
        return 0
    return _scan(args, model, chains)


def _scan(args: argparse.Namespace, model, chains) -> int:
    from playground import service
    from playground.model.scanner import export_schedules, scan
    from playground.store import problem
    from playground.worker.pool import WorkerPool

    def progress(event: dict) -> None:
        if args.json:
            return
        if event["event"] == "candidate":
            ms = "" if event["median_ms"] is None else f" {event['median_ms']:.3f} ms"
            print(f"  [{event['index'] + 1}/{event['of']}] {event['label']}: "
                  f"{event['status']}{ms}", file=sys.stderr)
        else:
            row = event["row"]
            print(f"[{event['index'] + 1}/{event['of']}] {row.status}: {row.chain.describe()}",
                  file=sys.stderr)

    if not args.json:
        print(model.summary(), file=sys.stderr)
    # With a measurement farm (PLAYGROUND_TRACKER), timings go to its RPC servers, as the
    # page's do; otherwise one local worker, as `auto` uses.
    farm = os.environ.get("PLAYGROUND_TRACKER", "").strip()
    with service.server_pools() if farm else WorkerPool(1) as pool:
        result = scan(pool, model, chains, budget_s_per_chain=args.budget_s_per_chain,
                      on_progress=progress, source="cli", resume=not args.no_resume)
    out = result.to_json()
    if problem():
        print(f"warning: scan not recorded, {problem()}", file=sys.stderr)
    if args.output:
        out["files"] = [str(p) for p in export_schedules(result, args.output)]
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for i, row in enumerate(out["chains"], 1):
            _print_row(i, row)
        print(f"\n{model.name} on {result.machine}")
        print(f"  total (best, x count):    {result.total_ms:.3f} ms"
              + (f"  ({result.missing} chains without a time)" if result.missing else ""))
        print(f"  total unfused:            {result.unfused_total_ms:.3f} ms")
        print(f"  conv + pool work:         {model.flop / 1e9:,.2f} GFLOP")
        print(f"  ops left out:             {out['skipped_ops'] or 'none'}")
        print(f"  wall time:                {result.wall_s:.0f} s")
    return 0 if all(r.correct for r in result.rows) and not result.cancelled else 1

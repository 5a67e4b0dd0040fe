"""Command line: ``python -m playground presets | run FILE | lower FILE | export FILE``.

``run`` loads a schedule file (an exported script or a preset name), validates it against the
numpy reference and measures it in a worker process; it exits 1 when the schedule is invalid
or the result is wrong. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from playground.errors import PlaygroundError


def _load(source: str):
    from playground.io.presets import PRESET_DIR, load_preset
    from playground.io.script_import import import_script

    path = Path(source)
    if path.is_file():
        return import_script(path.read_text())
    if (PRESET_DIR / f"{source}.py").is_file():
        return load_preset(source)
    raise PlaygroundError(f"{source}: no such file or preset")


def _cmd_presets(args: argparse.Namespace) -> int:
    from playground.io.presets import list_presets

    rows = list_presets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        status = f"ERROR: {r['error']}" if r["error"] else f"{r['steps']} steps"
        print(f"{r['name']:<28} {r['target']:<5} {status:<12} {r['title']}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from playground import service
    from playground.schedule.session import Session
    from playground.worker.pool import WorkerPool

    out: dict = {"file": args.file, "valid": False, "correct": False, "max_abs_error": None,
                 "max_rel_error": None, "median_ms": None, "gflops": None}
    try:
        chain, steps, meta = _load(args.file)
        target = args.target or meta.get("target", "cpu")
        out["target"] = target
        session = Session.new(chain, steps)
        out["valid"] = True
    except PlaygroundError as e:
        out["error"] = e.message
        return _report(out, args, 1)
    with WorkerPool(1) as pool:
        result = service.run(pool, session, target, measure=not args.no_measure,
                             repeat=args.repeat)
    value = result.value or {}
    out.update({k: value.get(k) for k in ("correct", "max_abs_error", "max_rel_error",
                                          "median_ms", "gflops", "message")})
    out["status"] = result.status
    out["valid"] = result.status not in ("schedule_error", "build_error")
    if result.status != "ok":
        out["error"] = result.message
    if value.get("timing"):
        out["timing"] = value["timing"]
    # Exit 0 only for a valid schedule whose result is right, or that could not run here
    # (CUDA without a GPU: correct is None, and the message says why).
    good = result.status == "ok" and value.get("correct") is not False
    return _report(out, args, 0 if good else 1)


def _report(out: dict, args: argparse.Namespace, code: int) -> int:
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for k, v in out.items():
            if k != "timing":
                print(f"{k:>14}: {v}")
    return code


def _cmd_lower(args: argparse.Namespace) -> int:
    from playground import service
    from playground.schedule.session import Session
    from playground.worker.pool import WorkerPool

    chain, steps, meta = _load(args.file)
    session = Session.new(chain, steps)
    with WorkerPool(1) as pool:
        result = service.lower(pool, session, args.target or meta.get("target", "cpu"))
    if result.status != "ok":
        print(f"error ({result.status}): {result.message}", file=sys.stderr)
        return 1
    print(result.value["text"])
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Re-export a script or preset with this version's runtime (e.g. to refresh presets)."""
    from playground.io.export import export_script

    chain, steps, meta = _load(args.file)
    text = export_script(chain, steps, target=meta.get("target", "cpu"),
                         title=meta.get("title", ""), description=meta.get("description", ""))
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("presets", help="list the preset schedules")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_presets)
    p = sub.add_parser("run", help="validate and measure a schedule file or preset")
    p.add_argument("file")
    p.add_argument("--target", choices=("cpu", "cuda"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-measure", action="store_true", help="validate only")
    p.add_argument("--repeat", type=int, default=10)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("lower", help="print the lowered TIR of a schedule file or preset")
    p.add_argument("file")
    p.add_argument("--target", choices=("cpu", "cuda"))
    p.set_defaults(func=_cmd_lower)
    p = sub.add_parser("export", help="re-export a schedule file with this version's runtime")
    p.add_argument("file")
    p.add_argument("-o", "--output")
    p.set_defaults(func=_cmd_export)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PlaygroundError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

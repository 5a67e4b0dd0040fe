"""Command line: ``python -m playground presets | run FILE | lower FILE | export FILE |
experiments list|show ID|dump``.

``run`` loads a schedule file (an exported script or a preset name), validates it against the
numpy reference and measures it in a worker process; it exits 1 when the schedule is invalid
or the result is wrong. ``--json`` prints one JSON object. ``--record`` also stores the run in
the experiment store (``$PLAYGROUND_DATA``), failed runs included (a file that does not load
never runs and is not recorded); when the store is unavailable the run goes on,
exits as it would without ``--record``, and one line on stderr says that it was not recorded.
``experiments`` lists, shows and dumps what the store holds.
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
        # Nothing ran (the file's steps are replayed as it loads), so nothing is recorded.
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
    _record(args, out, session.chain, session.active, target, status=result.status,
            value=result.value, error=result.message, detail=result.detail)
    # Exit 0 only for a valid schedule whose result is right, or that could not run here
    # (CUDA without a GPU: correct is None, and the message says why).
    good = result.status == "ok" and value.get("correct") is not False
    return _report(out, args, 0 if good else 1)


def _record(args: argparse.Namespace, out: dict, chain, steps, target: str, **fields) -> None:
    """With ``--record``, store the run and put its id in ``out["experiment"]``; when the store
    is unavailable, say so in one line on stderr and carry on."""
    if not args.record:
        return
    from playground.build.machine import host_fingerprint
    from playground.store import StoreError, get_store

    try:
        out["experiment"] = get_store().record_run(
            chain, steps, target, host_fingerprint(), label=Path(args.file).name,
            source="cli", **fields)
    except StoreError as e:
        print(f"warning: run not recorded, {e.message}", file=sys.stderr)


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


def _fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g} ms"


def _cmd_experiments_list(args: argparse.Namespace) -> int:
    from playground.store import get_store
    from playground.store.records import iso, to_csv

    rows = get_store().list_experiments(
        chain=args.chain, machine=args.machine, target=args.target, since=args.since,
        until=args.until, kind=args.kind, starred=True if args.starred else None,
        limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        print(to_csv(rows), end="")
    else:
        for r in rows:
            star = "*" if r["starred"] else " "
            kind = r["kind"] if not r["children"] else f"{r['kind']}({r['children']})"
            print(f"{r['id']:>6}{star} {iso(r['created'])}  {kind:<10} {r['status']:<14} "
                  f"{_fmt_ms(r['median_ms']):>12}  {r['target']:<5} {r['chain_name']}  "
                  f"{r['label']}")
        if not rows:
            print("no experiments (record some with: run FILE --record)", file=sys.stderr)
    return 0


def _cmd_experiments_show(args: argparse.Namespace) -> int:
    from playground.schedule.steps import Step, normalize_step
    from playground.store import get_store
    from playground.store.records import iso

    r = get_store().get(args.id)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    fields = [("experiment", f"#{r['id']} ({r['kind']}, {r['source'] or 'unknown source'})"),
              ("recorded", iso(r["created"])), ("label", r["label"]),
              ("chain", f"{r['chain_name']}  [{r['chain_key']}]"), ("target", r["target"]),
              ("machine", f"{r['machine_name']}  [{r['machine_key']}]"),
              ("status", r["status"]), ("correct", r["correct"]),
              ("median", _fmt_ms(r["median_ms"])), ("error", r["error"]), ("note", r["note"]),
              ("starred", "yes" if r["starred"] else "")]
    for name, value in fields:
        if value not in ("", None):
            print(f"{name:>10}: {value}")
    for i, raw in enumerate(r["steps"], 1):
        try:
            step = normalize_step(Step.from_dict(raw))  # arguments in the catalog's order
        except PlaygroundError:
            step = Step.from_dict(raw)
        print(f"{'step ' + str(i):>10}: {step.label()}")
    for c in r["children"]:
        print(f"{'#' + str(c['id']):>10}: {c['status']:<14} {_fmt_ms(c['median_ms']):>12}  "
              f"{c['label']}")
    return 0


def _cmd_experiments_dump(args: argparse.Namespace) -> int:
    from playground.store import get_store
    from playground.store.records import DUMP_FIELDS, to_csv

    rows = get_store().dump()
    if args.csv:
        print(to_csv(rows, DUMP_FIELDS), end="")
    else:
        print(json.dumps(rows, indent=2))
    return 0


def _experiments_parser(sub) -> None:
    p = sub.add_parser("experiments", help="list, show or dump the recorded experiments")
    cmds = p.add_subparsers(dest="experiments_command", required=True)
    q = cmds.add_parser("list", help="recorded runs and groups, newest first")
    for name in ("chain", "machine"):
        q.add_argument(f"--{name}", help=f"{name} key, or part of its name")
    q.add_argument("--target")
    q.add_argument("--kind", help="run, sweep, search, ...")
    q.add_argument("--since", help="YYYY-MM-DD")
    q.add_argument("--until", help="YYYY-MM-DD (that day included)")
    q.add_argument("--starred", action="store_true")
    q.add_argument("--limit", type=int)
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    q.set_defaults(func=_cmd_experiments_list)
    q = cmds.add_parser("show", help="one experiment: chain, steps, result, candidates")
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_experiments_show)
    q = cmds.add_parser("dump", help="every experiment in full (JSON, or CSV)")
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the default")
    fmt.add_argument("--csv", action="store_true")
    q.set_defaults(func=_cmd_experiments_dump)


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
    p.add_argument("--record", action="store_true",
                   help="also store the run in the experiment store ($PLAYGROUND_DATA)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("lower", help="print the lowered TIR of a schedule file or preset")
    p.add_argument("file")
    p.add_argument("--target", choices=("cpu", "cuda"))
    p.set_defaults(func=_cmd_lower)
    p = sub.add_parser("export", help="re-export a schedule file with this version's runtime")
    p.add_argument("file")
    p.add_argument("-o", "--output")
    p.set_defaults(func=_cmd_export)
    _experiments_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PlaygroundError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

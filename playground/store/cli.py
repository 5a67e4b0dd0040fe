"""``python -m playground experiments list|show ID|dump``: what the store holds, as text, JSON
or CSV. :mod:`playground.__main__` adds these commands with :func:`add_parser`; a store that
cannot be read raises :class:`~playground.store.db.StoreError`, which the command line prints
as one line."""

from __future__ import annotations

import argparse
import json
import sys

from playground.errors import PlaygroundError
from playground.schedule.steps import Step, normalize_step
from playground.store.api import get_store
from playground.store.records import DUMP_FIELDS, iso, to_csv


def _fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g} ms"


def cmd_list(args: argparse.Namespace) -> int:
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


def _step_label(raw: dict) -> str:
    try:
        return normalize_step(Step.from_dict(raw)).label()  # arguments in the catalog's order
    except PlaygroundError:
        return json.dumps(raw)


def _weights(r: dict) -> str:
    """The build mode a stored time was taken in (records made before the constant mode
    existed were per-call)."""
    if r["median_ms"] is None:
        return ""
    return f" ({(r.get('result') or {}).get('weights') or 'per-call'} weights)"


def cmd_show(args: argparse.Namespace) -> int:
    r = get_store().get(args.id)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    fields = [("experiment", f"#{r['id']} ({r['kind']}, {r['source'] or 'unknown source'})"),
              ("recorded", iso(r["created"])), ("label", r["label"]),
              ("chain", f"{r['chain_name']}  [{r['chain_key']}]"), ("target", r["target"]),
              ("machine", f"{r['machine_name']}  [{r['machine_key']}]"),
              ("status", r["status"]), ("correct", r["correct"]),
              ("median", _fmt_ms(r["median_ms"]) + _weights(r)), ("error", r["error"]),
              ("note", r["note"]),
              ("starred", "yes" if r["starred"] else "")]
    for name, value in fields:
        if value not in ("", None):
            print(f"{name:>10}: {value}")
    for i, raw in enumerate(r["steps"], 1):
        print(f"{'step ' + str(i):>10}: {_step_label(raw)}")
    for c in r["children"]:
        print(f"{'#' + str(c['id']):>10}: {c['status']:<14} {_fmt_ms(c['median_ms']):>12}  "
              f"{c['label']}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    rows = get_store().dump()
    if args.csv:
        print(to_csv(rows, DUMP_FIELDS), end="")
    else:
        print(json.dumps(rows, indent=2))
    return 0


def add_parser(sub) -> None:
    """Add ``experiments list|show|dump`` to the command line's subparsers ``sub``."""
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
    q.set_defaults(func=cmd_list)
    q = cmds.add_parser("show", help="one experiment: chain, steps, result, candidates")
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)
    q = cmds.add_parser("dump", help="every experiment in full (JSON, or CSV)")
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the default")
    fmt.add_argument("--csv", action="store_true")
    q.set_defaults(func=cmd_dump)

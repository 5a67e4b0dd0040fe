"""Command line: ``python -m playground presets [render] | run | lower | export | auto |
fusion | experiments | model``.

``presets`` lists the presets in ``schedules/``; ``presets render`` writes each preset's
script (``schedules/NAME.py``) anew from its JSON (``schedules/NAME.json``, the source of
truth), as after a change of the runtime the scripts embed (:mod:`playground.io.presets`).

``run`` loads a schedule file (an exported script or a preset name), validates it against the
numpy reference and measures it in a worker process; it exits 1 when the schedule is invalid
or the result is wrong. ``--json`` prints one JSON object. ``--record`` also stores the run in
the experiment store (``$PLAYGROUND_DATA``), failed runs included (a file that does not load
never runs and is not recorded); when the store is unavailable the run goes on, exits as it
would without ``--record``, and one line on stderr says that it was not recorded.
``experiments list|show ID|dump`` reads the store (:mod:`playground.store.cli`).

``auto CHAIN`` searches the schedule templates for the chain (a JSON chain, a JSON session, an
exported script or a preset) within ``--budget-s`` and prints the best schedule; with
``--target cuda`` it builds the CUDA fusion template's best-ranked plans instead (conv ->
elementwise ops -> conv in one kernel, the intermediate in shared memory per thread block:
:mod:`playground.templates.cuda`), compile-only where there is no GPU; ``fusion
CHAIN`` answers "should I fuse?" with the best fused and unfused schedules measured side by
side. ``model MODEL.onnx`` cuts a network into chains and scans them
(:mod:`playground.model.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from playground.errors import PlaygroundError
from playground.measure.sampling import METHOD
from playground.model.cli import add_parser as add_model_parser
from playground.store.cli import add_parser as add_experiments_parser


def _load(source: str):
    """(chain, steps, meta) from an exported script, a JSON session (as the page downloads
    it), a bare JSON chain ``{"input": ..., "layers": [...]}``, or a preset's name."""
    from playground.chain.spec import normalize_chain
    from playground.io.presets import PRESET_DIR, load_preset
    from playground.io.script_import import import_script

    path = Path(source)
    if path.is_file():
        text = path.read_text()
        if text.lstrip().startswith("{"):
            try:
                raw = json.loads(text)
            except ValueError:
                raw = None
            if isinstance(raw, dict) and "layers" in raw and "chain" not in raw:
                return normalize_chain(raw), (), {"format": "chain"}
        chain, steps, meta = import_script(text)
        for warning in meta.get("warnings", ()):
            print(f"warning: {warning}", file=sys.stderr)
        return chain, steps, meta
    if (PRESET_DIR / f"{source}.json").is_file():
        return load_preset(source)
    raise PlaygroundError(f"{source}: no such file or preset")


def _cmd_presets(args: argparse.Namespace) -> int:
    from playground.io.presets import list_presets, render_presets

    if args.action == "render":
        changed = render_presets()
        print(f"rendered {len(changed)} changed script(s)" + "".join(
            f"\n  schedules/{name}.py" for name in changed))
        return 0
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
        out["weights"] = weights = args.weights or meta.get("weights", "per-call")
        session = Session.new(chain, steps)
        out["valid"] = True
    except PlaygroundError as e:
        # Nothing ran (the file's steps are replayed as it loads), so nothing is recorded.
        out["error"] = e.message
        return _report(out, args, 1)
    with WorkerPool(1) as pool:
        result = service.run(pool, session, target, measure=not args.no_measure,
                             repeat=args.repeat, tile_local=not args.no_tile_local,
                             weights=weights)
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
    from playground.measure.machine import host_fingerprint
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
        result = service.lower(pool, session, args.target or meta.get("target", "cpu"),
                               tile_local=not args.no_tile_local,
                               weights=args.weights or meta.get("weights", "per-call"))
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
                         title=meta.get("title", ""), description=meta.get("description", ""),
                         weights=meta.get("weights", "per-call"))
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


def _search_setup(args: argparse.Namespace):
    from playground.measure.machine import machine_facts

    chain, _, meta = _load(args.file)
    target = getattr(args, "target", None) or meta.get("target", "cpu")
    if target != "cpu":
        raise PlaygroundError(f"--target {target}: the search and the verdict time on the "
                              "CPU (use --target cpu; for CUDA, `auto --target cuda` builds the "
                              "CUDA fusion template)")
    return chain, machine_facts()


def _cmd_auto_cuda(args: argparse.Namespace) -> int:
    """The CUDA fusion template's plans, built in a worker: threads and shared memory per
    block of each kernel, validated and timed only where a GPU is (the output says which)."""
    from playground.templates.cuda_check import check_cuda_plans
    from playground.worker.pool import WorkerPool

    chain, _, _ = _load(args.file)
    out: dict = {"file": args.file, "target": "cuda", "valid": False, "correct": None}

    def progress(cand) -> None:
        if not args.json:
            print(f"  {cand.label}: {cand.status}", file=sys.stderr)

    with WorkerPool(1) as pool:
        checked = check_cuda_plans(pool, chain, limit=args.candidates, on_progress=progress)
    out.update(timed=checked.timed, note=checked.note, seconds=round(checked.seconds, 2),
               candidates=[{"label": c.label, "status": c.status, "kernels": c.kernels,
                            "median_ms": c.median_ms, "message": c.message}
                           for c in checked.candidates])
    best = checked.best()
    if best is None:
        out["error"] = "no plan built: " + "; ".join(
            sorted({c.message for c in checked.candidates if c.message})[:3])
        return _report(out, args, 1)
    out.update(valid=True, correct=True if checked.timed else None, label=best.label,
               median_ms=best.median_ms, template="cuda_fusion", params=best.plan.to_dict(),
               kernels=best.kernels, steps=[s.to_dict() for s in best.steps])
    if args.output:
        from playground.io.export import export_script

        how = (f"fastest on the GPU: {best.median_ms:.3f} ms" if checked.timed else
               "not timed (no GPU): the template model's best-ranked plan")
        Path(args.output).write_text(export_script(
            checked.chain, best.steps, target="cuda", title=f"auto (cuda): {best.label}",
            description=f"Found by `python -m playground auto --target cuda`, {how}."))
        out["output"] = args.output
    return _report(out, args, 0)


def _cmd_auto(args: argparse.Namespace) -> int:
    """Search templates for the chain; print the best schedule (and write it with -o)."""
    from playground.templates.search import search_and_finalize
    from playground.worker.pool import WorkerPool

    if (args.target or _load(args.file)[2].get("target", "cpu")) == "cuda":
        return _cmd_auto_cuda(args)
    chain, facts = _search_setup(args)
    out: dict = {"file": args.file, "machine": facts.summary(), "weights": args.weights,
                 "valid": False, "correct": False}

    def progress(cand, result) -> None:
        if not args.json:
            print(f"  {cand.label}: {cand.status} "
                  f"{'' if cand.median_ms is None else f'{cand.median_ms:.3f} ms'}",
                  file=sys.stderr)

    with WorkerPool(1) as pool:
        result, best = search_and_finalize(pool, chain, facts, budget_s=args.budget_s,
                                           started=args.started, on_progress=progress,
                                           record="cli" if args.record else "",
                                           tile_local=not args.no_tile_local,
                                           weights=args.weights)
    out.update(candidates=result.measured, tried=len(result.candidates),
               search_s=round(result.search_s, 2))
    if args.record:
        from playground.store import problem

        if problem():
            print(f"warning: search not recorded, {problem()}", file=sys.stderr)
    if best is None:
        out["error"] = "no candidate validated: " + "; ".join(
            sorted({c.message for c in result.candidates if c.message})[:3])
        return _report(out, args, 1)
    out.update(valid=True, correct=best.status == "ok", max_abs_error=best.max_abs_error,
               median_ms=best.median_ms, gflops=best.gflops, template=best.plan.template,
               label=best.label, params=best.plan.to_dict(),
               fused_layers=best.plan.fused_layers(_stages(result.chain)),
               steps=[s.to_dict() for s in best.steps], rounds_ms=list(best.rounds_ms))
    if result.final is not None:  # the best against the runner-up, in paired rounds
        iv = result.final.interval
        out.update(runner_up=result.final.other, ratio=iv.ratio, ratio_low=iv.low,
                   ratio_high=iv.high, versus=result.final.call,
                   versus_text=iv.text("runner-up / best"), under_load=result.final.under_load)
    if args.output:
        from playground.io.export import export_script

        Path(args.output).write_text(export_script(
            result.chain, best.steps, title=f"auto: {best.label}", weights=args.weights,
            description=f"Found by `python -m playground auto` in {result.search_s:.0f} s on "
                        f"{facts.summary()}: {best.median_ms:.3f} ms ({args.weights} "
                        "weights)."))
        out["output"] = args.output
    return _report(out, args, 0)


def _stages(chain: dict):
    from playground.templates.stages import stages

    return stages(chain)


def _cmd_fusion(args: argparse.Namespace) -> int:
    """Fuse or not: the best fused and unfused schedules measured side by side."""
    from playground.templates.verdict import fusion_verdict
    from playground.worker.pool import WorkerPool

    chain, facts = _search_setup(args)
    with WorkerPool(1) as pool:
        verdict = fusion_verdict(pool, chain, facts, budget_s=args.budget_s,
                                 started=args.started, tile_local=not args.no_tile_local,
                                 weights=args.weights)
    out = {"file": args.file, "machine": facts.summary(), "weights": args.weights,
           **verdict.to_dict()}
    return _report(out, args, 0 if verdict.fused or verdict.unfused else 1)


def _no_tile_local(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-tile-local", action="store_true",
                   help="build without the playground's lowering steps, tile-local and "
                        "padding taps (TVM's default lowering keeps full-size "
                        "intermediates and border predicates, and multiplies the padding)")


def _weights_option(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--weights", choices=("per-call", "constant"), default=default,
                   help="constant: the weight re-layouts run once before timing, as in a "
                        "deployed model (default: " + (default or "the file's WEIGHTS, else "
                                                       "per-call") + ")")


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()  # a budget (auto, fusion) counts from the command
    parser = argparse.ArgumentParser(prog="python -m playground", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("presets", help="list the preset schedules, or render their scripts")
    p.add_argument("action", nargs="?", choices=("list", "render"), default="list",
                   help="render: write schedules/NAME.py anew from schedules/NAME.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_presets)
    p = sub.add_parser("run", help="validate and measure a schedule file or preset")
    p.add_argument("file")
    p.add_argument("--target", choices=("cpu", "cuda"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-measure", action="store_true", help="validate only")
    p.add_argument("--repeat", type=int, default=METHOD["repeat"],
                   help="timed samples (the median is reported)")
    p.add_argument("--record", action="store_true",
                   help="also store the run in the experiment store ($PLAYGROUND_DATA)")
    _no_tile_local(p)
    _weights_option(p, None)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("lower", help="print the lowered TIR of a schedule file or preset")
    p.add_argument("file")
    p.add_argument("--target", choices=("cpu", "cuda"))
    _no_tile_local(p)
    _weights_option(p, None)
    p.set_defaults(func=_cmd_lower)
    p = sub.add_parser("export", help="re-export a schedule file with this version's runtime")
    p.add_argument("file")
    p.add_argument("-o", "--output")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("auto", help="search schedule templates for a chain; print the best")
    p.add_argument("file", help="a JSON chain, a JSON session, an exported script or a preset")
    p.add_argument("--target", choices=("cpu", "cuda"),
                   help="cuda: the CUDA fusion template's plans, built (compile-only without "
                        "a GPU)")
    p.add_argument("--candidates", type=int, default=4,
                   help="--target cuda: how many of the template's best-ranked plans to build")
    p.add_argument("--budget-s", type=float, default=60.0, help="search time budget (s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("-o", "--output", help="write the best schedule as a script here")
    p.add_argument("--record", action="store_true",
                   help="keep the search and every candidate in the experiment store")
    _no_tile_local(p)
    _weights_option(p, "per-call")
    p.set_defaults(func=_cmd_auto)
    p = sub.add_parser("fusion", help="fuse or not: best fused vs best unfused, measured")
    p.add_argument("file", help="a JSON chain, a JSON session, an exported script or a preset")
    p.add_argument("--budget-s", type=float, default=60.0, help="search time budget (s)")
    p.add_argument("--json", action="store_true")
    _no_tile_local(p)
    _weights_option(p, "per-call")
    p.set_defaults(func=_cmd_fusion)
    add_experiments_parser(sub)
    add_model_parser(sub)
    args = parser.parse_args(argv)
    args.started = started
    try:
        return args.func(args)
    except PlaygroundError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The schedule fuzzer at scale: thousands of random (chain, steps) cases, counted.

    .venv/bin/python benchmarks/fuzz.py --cases 2000               # random chains
    .venv/bin/python benchmarks/fuzz.py --cases 500 --presets      # presets + random steps

Every case is drawn from a fixed seed (``--seed`` + case number), so any failure printed here
replays with ``--only SEED``. The test suite runs ~100 seeded cases of the same generator
(``tests/unit/schedule/test_fuzz_schedules.py``); this is the long run the issue asks for,
reported as: validated schedules (built, run, matched the reference), refusals (and refusals
whose message is not one plain line), and the failures: wrong results, accepted steps that
cannot build, exceptions other than ``PlaygroundError``, crashes and timeouts. ``--out`` writes
every failure as JSON for replay.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fuzzing import RandomDraw, build_case, validate_case  # noqa: E402

from playground.io.presets import list_presets, load_preset  # noqa: E402
from playground.measure.machine import machine_facts  # noqa: E402
from playground.worker.pool import WorkerPool  # noqa: E402


def preset_starts() -> list[tuple[str, dict, list]]:
    out = []
    for info in list_presets():
        if info.get("error") or info.get("target", "cpu") != "cpu":
            continue
        chain, steps, _ = load_preset(info["name"])
        out.append((info["name"], chain, list(steps)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--presets", action="store_true",
                        help="start from every CPU preset and add random steps")
    parser.add_argument("--only", type=int, help="replay one seed and print it")
    parser.add_argument("--out", type=Path, help="write failures as JSON here")
    args = parser.parse_args()
    print(f"machine: {machine_facts().summary()}", flush=True)
    starts = preset_starts() if args.presets else []
    counts: collections.Counter = collections.Counter()
    failures, bad = [], []
    seeds = [args.only] if args.only is not None else range(args.seed, args.seed + args.cases)
    t0 = time.monotonic()
    with WorkerPool(1) as pool:
        for n, seed in enumerate(seeds, 1):
            d = RandomDraw(seed)
            kwargs: dict = {"max_steps": args.max_steps}
            if starts:
                _, chain, steps = starts[seed % len(starts)]
                kwargs.update(chain=chain, start=steps)
            result = validate_case(pool, build_case(d, **kwargs))
            counts[result.outcome] += 1
            counts["steps tried"] += len(result.tried)
            counts["winograd accepted"] += sum(s.primitive == "winograd" for s in result.accepted)
            counts["refusals"] += len(result.refusals)
            counts["bad refusals"] += len(result.bad_refusals)
            bad.extend({"seed": seed, "message": m, "why": w} for m, w in result.bad_refusals)
            if result.outcome not in ("validated", "no_steps"):
                failures.append({"seed": seed, "outcome": result.outcome,
                                 "message": result.message or result.exception,
                                 "chain": result.chain,
                                 "steps": [s.to_dict() for s in result.accepted]})
                print(f"seed {seed}: {result.describe()}", flush=True)
            if args.only is not None:
                print(result.describe())
            if n % 100 == 0:
                print(f"{n} cases, {time.monotonic() - t0:.0f} s: {dict(counts)}", flush=True)
    print(f"\n{sum(counts[k] for k in ('validated', 'no_steps', 'wrong_result', 'cannot_build', 'exception', 'crash', 'timeout', 'oom'))} cases in {time.monotonic() - t0:.0f} s")  # noqa: E501
    for key in ("validated", "no_steps", "wrong_result", "cannot_build", "exception", "crash",
                "timeout", "oom", "steps tried", "winograd accepted", "refusals",
                "bad refusals"):
        print(f"  {key:17s} {counts[key]}")
    for b in bad[:20]:
        print(f"  bad refusal (seed {b['seed']}, {b['why']}): {b['message']}")
    if args.out:
        args.out.write_text(json.dumps({"failures": failures, "bad_refusals": bad}, indent=1))
    return 1 if failures or bad else 0


if __name__ == "__main__":
    sys.exit(main())

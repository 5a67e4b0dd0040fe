"""Job ``rounds``: two or more schedules of one chain timed in paired, alternating rounds.

A comparison of two kernels timed minutes apart measures the machine as much as the kernels:
another process that wakes up during one of them moves its time by 20% or more. This job times
them back to back, in one worker and under one hold of the measurement lock: round ``i`` times
kernel 0, then kernel 1, ... (each with the same method as the ``run`` job:
:func:`playground.measure.timing.measure`, its ``number`` calibrated once per kernel so that
every round is timed alike). The caller turns the rounds into ratios with an interval
(:func:`playground.measure.stats.compare_rounds`).

Every kernel is checked as the ``run`` job checks it before it is timed
(:mod:`playground.compile.check`: its NaN-poisoned build on two seeds, then its timing build
once): the schedules come from a search that validated them, and a kernel that computes
something else must not win a comparison.
"""

from __future__ import annotations

from playground.compile.targets import device
from playground.errors import BuildError
from playground.jobs.kernel import checked_timing, validate
from playground.measure.load import Load
from playground.measure.sampling import METHOD
from playground.worker import job_table
from playground.worker.registry import job

#: Defaults: seven rounds (one wild round of seven never moves the median) of three samples per
#: kernel, each as long as the method's (:data:`playground.measure.sampling.METHOD`).
ROUNDS, REPEAT, MIN_REPEAT_MS = 7, 3, METHOD["min_repeat_ms"]


@job(job_table.ROUNDS)
def rounds_job(payload: dict) -> dict:
    """Payload ``chain``, ``target`` (``"cpu"``), ``kernels`` (a list of step lists),
    ``rounds``, ``repeat``, ``min_repeat_ms``, ``tile_local`` (default true), ``weights``
    (``"per-call"`` or ``"constant"``, as in job ``run``).

    Returns ``rounds_ms`` (per kernel, each round's median in ms per call), ``timings`` (per
    kernel, each round's :meth:`~playground.measure.timing.Timing.to_dict`), ``number`` (per
    kernel, calls per sample), ``load`` (every round of every kernel as one interval,
    :meth:`~playground.measure.load.Load.combine`: a round alone is too short for the CPU
    counters) and ``under_load`` (that load's verdict).
    """
    from playground.measure.timing import measure

    chain, target = payload["chain"], payload.get("target", "cpu")
    kernels = payload["kernels"]
    if len(kernels) < 2:
        raise BuildError(f"rounds: {len(kernels)} kernel(s) given; a comparison needs two")
    rounds = max(1, int(payload.get("rounds", ROUNDS)))
    repeat = max(1, int(payload.get("repeat", REPEAT)))
    min_repeat_ms = float(payload.get("min_repeat_ms", MIN_REPEAT_MS))
    dev = device(target)
    prepared = []
    for i, steps in enumerate(kernels):
        one = {"chain": chain, "steps": steps, "target": target,
               "tile_local": payload.get("tile_local", True),
               "weights": payload.get("weights", "per-call")}
        found: dict = {}
        validate(one, found, dev)
        if found["correct"]:
            # Warm-up and calibration, once (the method's): every round then times the same
            # number of calls of a warm kernel, so the rounds skip the warm-up. With constant
            # weights "pack" runs once here; its buffers follow the output.
            found = checked_timing(one, dev, lambda ex, args: (ex, args, measure(
                ex.mod, args, dev, repeat=1, min_repeat_ms=min_repeat_ms).number))
        if found.get("timing") is None:
            raise BuildError(f"rounds: kernel {i} computes a wrong result "
                             f"(max abs error {found['max_abs_error']:.3g})")
        prepared.append(found["timing"])
    timings: list[list[dict]] = [[] for _ in kernels]
    for _ in range(rounds):
        for i, (ex, args, number) in enumerate(prepared):
            timings[i].append(measure(ex.mod, args, dev, number=number, repeat=repeat,
                                      warmup_ms=0.0).to_dict())
    load = Load.combine(Load.from_dict(t["load"]) for ts in timings for t in ts
                        if t.get("load"))
    return {"rounds_ms": [[t["median_ms"] for t in ts] for ts in timings],
            "timings": timings, "number": [n for _, _, n in prepared],
            "load": load.to_dict() if load else None,
            "under_load": bool(load and load.under_load)}

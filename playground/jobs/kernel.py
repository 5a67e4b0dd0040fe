"""The real worker jobs: lower, generate code, validate and measure a (chain, steps) pair.

They run inside the worker process only (see :mod:`playground.worker.registry`). Payloads carry the
normalized chain and the steps as JSON; the worker replays the steps itself, so no TVM object
ever crosses a process boundary. Compiled executables and reference outputs are cached in the
worker, so validating then timing the same schedule compiles once.
"""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict

import numpy as np
import tvm

from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import chain_flop, chain_to_json
from playground.compile.constant import pack_once, split_constant_weights
from playground.compile.lowering import compile_module, generated_code, lower
from playground.compile.targets import device, info
from playground.compile.tile_local import TILE_LOCAL_ATTR
from playground.errors import BuildError
from playground.explain import explain_build, plain
from playground.measure.sampling import METHOD
from playground.schedule.replay import scheduled
from playground.schedule.steps import steps_from_json, steps_to_json
from playground.worker.job_table import CODEGEN, LOWER, RUN
from playground.worker.registry import job

_EXECUTABLES: OrderedDict[str, object] = OrderedDict()
#: Compiled modules kept (a timing and a validation build per schedule): enough for a search's
#: last dozen candidates, so that re-timing its best side by side (job ``rounds``) does not
#: compile them again.
MAX_EXECUTABLES = 24
#: The packed buffers of each cached executable built with constant weights (same keys).
_PACKED: dict[str, list] = {}


def _unpack(payload: dict) -> tuple[dict, tuple, str]:
    chain = payload["chain"]
    steps = steps_from_json(json.dumps(payload.get("steps", [])))
    return chain, steps, payload.get("target", "cpu")


def _tile_local(payload: dict) -> bool:
    """Whether the build runs the tile-local step (payload ``tile_local``, on by default)."""
    return bool(payload.get("tile_local", True))


def _split(payload: dict) -> tuple[tvm.IRModule, list]:
    """The scheduled module and its packed buffers: with ``weights="constant"`` the weight
    re-layouts move to a ``pack`` function run once (:mod:`playground.compile.constant`)."""
    chain, steps, target = _unpack(payload)
    mod = scheduled(chain, steps).mod
    if _weights(payload) != "constant":
        return mod, []
    if target != "cpu":
        raise BuildError(f"constant weights are built for the CPU only, not {target} "
                         "(use weights per-call)", where="weights")
    return split_constant_weights(mod)


def _weights(payload: dict) -> str:
    return payload.get("weights") or "per-call"


def _module(payload: dict) -> tvm.IRModule:
    return _split(payload)[0]


def _key(payload: dict, validation: bool) -> str:
    chain, steps, target = _unpack(payload)
    return "|".join((chain_to_json(chain), steps_to_json(steps), target, str(validation),
                     _weights(payload), str(_tile_local(payload))))


def _executable(payload: dict, *, validation: bool = False):
    """Compile (or reuse) the scheduled module; returns (executable, compile seconds).

    ``validation`` builds poison every intermediate with NaN (for checking results); the
    others are the kernels that get timed.
    """
    key = _key(payload, validation)
    if key in _EXECUTABLES:
        _EXECUTABLES.move_to_end(key)
        return _EXECUTABLES[key], 0.0
    t0 = time.perf_counter()
    mod, packed = _split(payload)
    ex = compile_module(mod, _unpack(payload)[2], validation=validation,
                        tile_local=_tile_local(payload))
    elapsed = time.perf_counter() - t0
    _EXECUTABLES[key] = ex
    _PACKED[key] = packed
    while len(_EXECUTABLES) > MAX_EXECUTABLES:
        _PACKED.pop(_EXECUTABLES.popitem(last=False)[0], None)
    return ex, elapsed


def _packed(payload: dict, *, validation: bool = False) -> list:
    """``(name, shape, dtype)`` of the buffers ``pack`` fills (after :func:`_executable`)."""
    return _PACKED.get(_key(payload, validation), [])


@functools.lru_cache(maxsize=6)
def _reference(chain_json: str, seed: int):
    chain = json.loads(chain_json)
    inputs = make_inputs(chain, seed)
    return inputs, reference_output(chain, inputs)


@job(LOWER)
def lower_job(payload: dict) -> dict:
    """Lowered TIR (TVMScript before MakePackedAPI) of the scheduled module, and what the
    tile-local step decided per predicated block (``tile_local``: one line, "" when off)."""
    _, _, target = _unpack(payload)
    t0 = time.perf_counter()
    lowered = lower(_module(payload), target, tile_local=_tile_local(payload))
    decided = [str(f.attrs[TILE_LOCAL_ATTR]) for f in lowered.functions.values()
               if f.attrs is not None and TILE_LOCAL_ATTR in f.attrs]
    return {"text": lowered.script(), "seconds": time.perf_counter() - t0,
            "tile_local": "; ".join(decided)}


@job(CODEGEN)
def codegen_job(payload: dict) -> dict:
    """Generated code: ``asm`` / ``llvm`` for the CPU, ``cuda`` for the GPU."""
    _, _, target = _unpack(payload)
    ex, seconds = _executable(payload)
    return {"text": generated_code(ex, target, payload.get("kind", "asm")),
            "compile_s": seconds}


def _run_once(ex, inputs, expected, chain: dict, dev, packed=()):
    """Run the kernel once on a NaN-poisoned output and compare with the reference; with
    ``packed`` buffers (constant weights), ``pack`` runs first into NaN-filled ones, which
    come back after the output in the returned ``args`` tail: ``args, [out, *packed]``."""
    dtype = chain["input"]["dtype"]
    args = [tvm.runtime.tensor(a, dev) for _, a in inputs]
    poisoned = np.full(expected.shape, np.nan, dtype=dtype)
    out = tvm.runtime.tensor(poisoned, dev)
    try:
        bufs = pack_once(ex, args, list(packed), dev)
        ex["main"](*args, out, *bufs)
        dev.sync()
    except (RuntimeError, ValueError, TypeError) as e:  # the kernel refuses its arguments
        text = str(e)
        said = explain_build(text) or plain(text.strip().splitlines()[0] if text.strip()
                                            else type(e).__name__)
        raise BuildError(f"calling the kernel failed: {said}", detail=text) from None
    return args, [out, *bufs], compare(out.numpy(), expected, dtype)


#: Validation runs the kernel on inputs of these seeds (each against its own reference): a
#: kernel right by accident on one input is unlikely to be right on two.
VALIDATION_SEEDS = (0, 1)


def validate(payload: dict, result: dict, dev) -> None:
    """Run the NaN-poisoned build on every seed of :data:`VALIDATION_SEEDS` (offset by the
    payload's ``seed``) and merge the worst comparison into ``result``."""
    chain, _, _ = _unpack(payload)
    ex, compile_s = _executable(payload, validation=True)
    result["validation_compile_s"] = compile_s
    base = int(payload.get("seed", 0))
    t0, worst = time.perf_counter(), None
    for seed in VALIDATION_SEEDS:
        inputs, expected = _reference(chain_to_json(chain), base + seed)
        _, _, check = _run_once(ex, inputs, expected, chain, dev,
                                _packed(payload, validation=True))
        check["seed"] = base + seed
        if worst is None or not check["correct"] or (
                worst["correct"] and check["max_abs_error"] > worst["max_abs_error"]):
            worst = check
        if not check["correct"]:
            break
    result["reference_s"] = time.perf_counter() - t0
    result["validation_seeds"] = [base + s for s in VALIDATION_SEEDS]
    result.update(worst)


@job(RUN)
def run_job(payload: dict) -> dict:
    """Build, validate against the numpy reference, and (if ``measure``) time the kernel.

    Payload: ``chain``, ``steps``, ``target``, ``measure`` (bool), ``repeat``,
    ``min_repeat_ms``, ``seed``, ``tile_local`` (bool, default True: the tile-local step),
    ``weights`` (``"per-call"`` or ``"constant"``: the weight re-layouts run once before
    timing, and only the kernel is timed). Validation uses a build whose intermediates start
    as NaN and two input seeds (:func:`validate`); timing uses the normal build. The result's
    ``correct`` is False for a wrong output; timing is skipped then (a wrong kernel's speed
    means nothing).
    """
    chain, _, target = _unpack(payload)
    target_info = info(target)
    ex, compile_s = _executable(payload)
    result = {"target": target, "weights": _weights(payload),
              "packed": [name for name, _, _ in _packed(payload)],
              "valid": True, "compile_s": compile_s, "ran": False,
              "correct": None, "flop": chain_flop(chain), "timing": None, "gflops": None}
    if not target_info.can_run:
        # Built (so the schedule is valid) but cannot run here: say so, claim nothing.
        result["message"] = f"{target}: {target_info.reason}"
        return result
    result["ran"] = True
    dev = device(target)
    validate(payload, result, dev)
    if not result["correct"] or not payload.get("measure", True):
        return result
    from playground.measure.timing import measure

    inputs, expected = _reference(chain_to_json(chain), int(payload.get("seed", 0)))
    args, outs, check = _run_once(ex, inputs, expected, chain, dev, _packed(payload))
    if not check["correct"]:  # the timing build disagrees with the validation build
        result.update(check)
        result["message"] = "the timing build computes a different result than the " \
                            "validation build"
        return result
    # Wall-clock bounds of the timing itself: lets tests check that timings never overlap.
    result["timed_from"] = time.time()
    timing = measure(ex.mod, [*args, *outs], dev, func_name="main",
                     repeat=int(payload.get("repeat", METHOD["repeat"])),
                     min_repeat_ms=float(payload.get("min_repeat_ms", METHOD["min_repeat_ms"])))
    result["timed_until"] = time.time()
    result["timing"] = timing.to_dict()
    result["median_ms"] = timing.median_ms
    result["gflops"] = timing.gflops(result["flop"])
    return result

"""The real worker jobs: lower, generate code, validate and measure a (chain, steps) pair.

They run inside the worker process only (see :mod:`playground.worker.registry`). Payloads carry
the normalized chain and the steps as JSON; the worker replays the steps itself, so no TVM object
ever crosses a process boundary. Compiled executables and reference outputs are cached in the
worker, so validating then timing the same schedule compiles once. Results are checked and
timings taken by the project's one check (:mod:`playground.compile.check`) and one timing
function (:func:`playground.measure.timing.measure`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections import OrderedDict

import tvm

from playground.chain.spec import chain_flop, chain_to_json
from playground.compile.check import check, reference_for, time_checked
from playground.compile.constant import split_constant_weights
from playground.compile.gpu import kernel_resources
from playground.compile.lowering import compile_module, generated_code, lower
from playground.compile.pad_taps import PAD_TAPS_ATTR
from playground.compile.strided_loads import STRIDED_LOADS_ATTR
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
    return reference_for(json.loads(chain_json), seed)


@job(LOWER)
def lower_job(payload: dict) -> dict:
    """Lowered TIR (TVMScript before MakePackedAPI) of the scheduled module, and what the
    tile-local step decided per predicated block (``tile_local``: one line, "" when off),
    which reduction nests the padding-taps step split (``padding_taps``, likewise) and how
    many vector loads the strided-loads step rewrote (``strided_loads``, likewise).
    For ``cuda`` also what each kernel asks of the GPU (``kernels``: threads per block,
    blocks, static shared memory; :func:`playground.compile.gpu.kernel_resources`)."""
    _, _, target = _unpack(payload)
    t0 = time.perf_counter()
    lowered = lower(_module(payload), target, tile_local=_tile_local(payload))
    def said(attr: str) -> str:
        return "; ".join(str(f.attrs[attr]) for f in lowered.functions.values()
                         if f.attrs is not None and attr in f.attrs)

    out = {"text": lowered.script(), "seconds": time.perf_counter() - t0,
           "tile_local": said(TILE_LOCAL_ATTR), "padding_taps": said(PAD_TAPS_ATTR),
           "strided_loads": said(STRIDED_LOADS_ATTR)}
    if target == "cuda":
        out["kernels"] = kernel_resources(lowered)
    return out


@job(CODEGEN)
def codegen_job(payload: dict) -> dict:
    """Generated code: ``asm`` / ``llvm`` for the CPU, ``cuda`` for the GPU."""
    _, _, target = _unpack(payload)
    ex, seconds = _executable(payload)
    return {"text": generated_code(ex, target, payload.get("kind", "asm")),
            "compile_s": seconds}


def _reference_of(chain: dict, seed: int):
    """:func:`playground.compile.check.reference_for`, cached in the worker."""
    return _reference(chain_to_json(chain), seed)


@contextlib.contextmanager
def _kernel_call():
    """A kernel that refuses its arguments (or fails in TVM's runtime) as a BuildError."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError) as e:
        text = str(e)
        said = explain_build(text) or plain(text.strip().splitlines()[0] if text.strip()
                                            else type(e).__name__)
        raise BuildError(f"calling the kernel failed: {said}", detail=text) from None


def validate(payload: dict, result: dict, dev) -> None:
    """:func:`playground.compile.check.check` on the NaN-poisoned build (seeds offset by the
    payload's ``seed``); merges its comparison into ``result``."""
    chain, _, _ = _unpack(payload)
    ex, compile_s = _executable(payload, validation=True)
    result["validation_compile_s"] = compile_s
    t0 = time.perf_counter()
    with _kernel_call():
        result.update(check(ex, chain, dev, seed=int(payload.get("seed", 0)),
                            packed=_packed(payload, validation=True), reference=_reference_of))
    result["reference_s"] = time.perf_counter() - t0


def checked_timing(payload: dict, dev, time_kernel) -> dict:
    """:func:`playground.compile.check.time_checked` on the payload's timing build (compiled
    or reused): ``{"timing": time_kernel(executable, arguments)}``, or the comparison of a
    timing build that disagrees with the reference."""
    chain, _, _ = _unpack(payload)
    ex, _ = _executable(payload)
    with _kernel_call():
        return time_checked(ex, chain, dev, time_kernel, seed=int(payload.get("seed", 0)),
                            packed=_packed(payload), reference=_reference_of)


@job(RUN)
def run_job(payload: dict) -> dict:
    """Build, validate against the numpy reference, and (if ``measure``) time the kernel.

    Payload: ``chain``, ``steps``, ``target``, ``measure`` (bool), ``repeat``,
    ``min_repeat_ms``, ``seed``, ``tile_local`` (bool, default True: the tile-local step),
    ``weights`` (``"per-call"`` or ``"constant"``: the weight re-layouts run once before
    timing, and only the kernel is timed). Validation uses a build whose intermediates start
    as NaN and two input seeds (:func:`validate`); timing uses the normal build, checked once
    more before it is timed (:func:`checked_timing`). The result's ``correct`` is False for a
    wrong output; timing is skipped then (a wrong kernel's speed means nothing).
    """
    chain, _, target = _unpack(payload)
    target_info = info(target)
    _, compile_s = _executable(payload)  # built even where it cannot run: the schedule builds
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

    def timed(ex, args):
        # Wall-clock bounds of the timing itself: lets tests check that timings never overlap.
        result["timed_from"] = time.time()
        timing = measure(ex.mod, args, dev, func_name="main",
                         repeat=int(payload.get("repeat", METHOD["repeat"])),
                         min_repeat_ms=float(payload.get("min_repeat_ms",
                                                         METHOD["min_repeat_ms"])))
        result["timed_until"] = time.time()
        return timing

    result.update(checked_timing(payload, dev, timed))
    timing = result["timing"]
    if timing is not None:
        result.update(timing=timing.to_dict(), median_ms=timing.median_ms,
                      gflops=timing.gflops(result["flop"]))
    return result

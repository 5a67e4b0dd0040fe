"""Applying steps to a chain's TensorIR schedule, and reading blocks and loops back.

Schedules are derived from (chain, steps) and cached by them: applying step k+1 copies the
cached schedule after k steps instead of replaying from scratch. Cached schedules are never
mutated; :func:`scheduled` returns one that callers must treat as read-only.

Applying primitives is symbolic and fast (milliseconds); lowering, compiling and running are
not, and happen in the worker process (see :mod:`playground.worker.pool`).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from tvm import s_tir

from playground.chain import compute
from playground.chain.compute import chain_module
from playground.chain.spec import chain_to_json
from playground.errors import PlaygroundError, StepError
from playground.explain import explain_step, plain
from playground.schedule.ir import Block, Loop, block_names, blocks
from playground.schedule.kinds import On
from playground.schedule.postchecks import check_result
from playground.schedule.prechecks import check_step
from playground.schedule.steps import CATALOG, Step, normalize_step, steps_to_json

_CACHE: OrderedDict[tuple[str, str], s_tir.Schedule] = OrderedDict()
_CACHE_SIZE = 256
_LOCK = threading.RLock()


#: Blocks and loops as the UI's pickers read them (:func:`blocks`, :func:`block_names` and the
#: records are :mod:`playground.schedule.ir`'s, re-exported here beside replay).
BlockInfo = Block
LoopInfo = Loop


def fresh_schedule(chain: dict) -> s_tir.Schedule:
    """An unscheduled schedule of the chain (errors rendered in detail, for the expander)."""
    return s_tir.Schedule(chain_module(chain), error_render_level="detail")


def _one_line(text: str) -> str:
    """TVM's long error text reduced to its 'Error message:' line (or its last line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("Error message:"):
            return ln[len("Error message:"):].strip()
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln.split(": ", 1)[-1] if ln.startswith(("ScheduleError", "TVMError")) else ln
    return lines[-1] if lines else text


_MARK = re.compile(r"#\s*(s_tir\.SBlock#\d+|tirx\.For#\d+)\s*$")
_NAMED = re.compile(r'T\.sblock\("([^"]+)"\)|^\s*for (\w+) in')


def _name_objects(message: str, detail: str) -> str:
    """Replace TVM's 's_tir.SBlock#0' / 'tirx.For#1' in a message by the block or loop name.

    The detailed rendering marks each object with a comment line right above it.
    """
    names: dict[str, str] = {}
    lines = detail.splitlines()
    for i, line in enumerate(lines[:-1]):
        m = _MARK.search(line)
        if m:
            for nxt in lines[i + 1:i + 3]:
                n = _NAMED.search(nxt)
                if n:
                    names[m.group(1)] = (f"block {n.group(1)}" if n.group(1)
                                         else f"loop {n.group(2)}")
                    break
    for obj, name in names.items():
        message = message.replace(f"the block {obj}", name).replace(f"block {obj}", name)
        message = message.replace(f"loop {obj}", name).replace(obj, name)
    return message


def call_args(sch: s_tir.Schedule, step: Step, ctx: str) -> tuple[list, dict]:
    """The positional and keyword arguments of TVM's call for the (normalized) ``step`` on
    ``sch``: each argument's kind turns its value into what TVM takes
    (:meth:`Kind.resolve`), refusing an unknown block or loop by name."""
    prim = CATALOG[step.primitive]
    on = On(sch, tuple(block_names(sch)), ctx)
    handles = {a.name: a.kind.resolve(a, step.args, on) for a in prim.args}
    positional, keywords = [], {}
    for keyword, name in prim.call:
        if prim.arg(name).kind.spread:
            positional.extend(handles[name])
        elif keyword is None:
            positional.append(handles[name])
        else:
            keywords[keyword] = handles[name]
    return positional, keywords


def apply_step(sch: s_tir.Schedule, step: Step, index: int | None = None,
               target: str | None = None, chain: dict | None = None) -> Step:
    """Apply one step to ``sch`` in place; return the step with defaults filled in.

    The step is first checked against what TVM 0.27 would accept and miscompile
    (:mod:`playground.schedule.prechecks`); ``target`` (``"cpu"``/``"cuda"``, when known)
    lets GPU-only steps be refused for the CPU at once. A rewrite (``winograd``) rebuilds
    the program of ``chain`` (normalized), which it needs.

    Raises
    ------
    StepError
        Naming the step, the argument and the value, or TVM's reason in plain words (the full
        explanation in ``detail``). When TVM refuses it leaves the schedule unchanged; a step
        refused after TVM applied it leaves ``sch`` changed, so callers apply steps to a copy
        (as :func:`scheduled` and :class:`~playground.schedule.session.Session` do).
    """
    step = normalize_step(step, index)
    prim = CATALOG[step.primitive]
    ctx = f"step {index + 1} ({prim.name})" if index is not None else prim.name
    positional, keywords = call_args(sch, step, ctx)
    check_step(sch, step, ctx, target)
    if prim.rewrite:
        if chain is None:
            raise StepError(f"{ctx}: a rewrite of the chain's program needs the chain")
        try:
            # In place, as every step changes ``sch`` (exported scripts rebind it instead).
            sch.__move_handle_from__(getattr(compute, prim.name)(sch, chain, *positional,
                                                                 **keywords))
        except ValueError as e:
            raise StepError(f"{ctx}: {e}", where="block") from None
        check_result(sch, step, ctx)
        return step
    try:
        getattr(sch, prim.name)(*positional, **keywords)
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            AssertionError) as e:
        text = str(e)
        reason = _name_objects(_one_line(text), text).removeprefix("ScheduleError: ")
        said = explain_step(_name_objects(text, text), prim.explains, step.args)
        message = f"{ctx}: {said}" if said else f"{ctx}: TVM refused it: {plain(reason)}"
        raise StepError(message, detail=text, where="tvm") from None
    check_result(sch, step, ctx)
    return step


def scheduled(chain: dict, steps: tuple[Step, ...] | list[Step]) -> s_tir.Schedule:
    """The chain's schedule after ``steps`` (cached; treat the result as read-only).

    Raises
    ------
    StepError
        For the first step that does not apply, naming it by its position.
    """
    steps = tuple(steps)
    chain_key = chain_to_json(chain)
    with _LOCK:
        start, sch = 0, None
        for k in range(len(steps), -1, -1):
            hit = _CACHE.get((chain_key, steps_to_json(steps[:k])))
            if hit is not None:
                _CACHE.move_to_end((chain_key, steps_to_json(steps[:k])))
                start, sch = k, hit
                break
        if sch is None:
            sch = fresh_schedule(chain)
            _remember(chain_key, (), sch)
        for k in range(start, len(steps)):
            sch = sch.copy()
            apply_step(sch, steps[k], k, chain=chain)
            _remember(chain_key, steps[: k + 1], sch)
        return sch


def _remember(chain_key: str, steps: tuple[Step, ...], sch: s_tir.Schedule) -> None:
    _CACHE[(chain_key, steps_to_json(steps))] = sch
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)


def replay_prefix(chain: dict, steps: tuple[Step, ...]) -> tuple[int, PlaygroundError | None]:
    """How many leading steps apply to ``chain``, and the error of the first that does not."""
    for k in range(len(steps)):
        try:
            scheduled(chain, steps[: k + 1])
        except PlaygroundError as e:
            return k, e
    return len(steps), None


__all__ = [
    "BlockInfo",
    "LoopInfo",
    "apply_step",
    "block_names",
    "blocks",
    "call_args",
    "fresh_schedule",
    "replay_prefix",
    "scheduled",
]

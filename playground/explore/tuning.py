"""Auto-tuning baseline: MetaSchedule's best schedule for the chain, as playground steps.

The tuning itself runs in the worker (job ``"tune"``, :mod:`playground.jobs.metaschedule`), never
in
the server: :func:`tune` sends the chain and a trial budget and gets back the best schedule as
a list of :class:`~playground.schedule.steps.Step` that a
:class:`~playground.schedule.session.Session` imports
and the user keeps editing.

From a MetaSchedule trace to steps (:func:`trace_to_steps`)
-----------------------------------------------------------
``compile_tir`` returns the best schedule *with its postprocessing*: its trace holds the
sampled program (``sample_perfect_tile``, ``split``, ``reorder``, ``reverse_compute_at``,
``sample_compute_location`` ...), then ``enter_postproc`` and what the postprocessors did
(``RewriteParallelVectorizeUnroll`` turns the root's ``meta_schedule.parallel`` /
``vectorize`` / ``unroll_explicit`` hints into ``fuse`` + ``parallel`` / ``vectorize`` and
``pragma_auto_unroll_max_step`` annotations; ``RewriteReductionBlock`` adds
``decompose_reduction``). The conversion replays that trace one instruction at a time on a
fresh schedule of the chain, reading the name of every block and loop *at that moment*, and
emits one step per instruction that changes the program:

* ``sample_*`` emit nothing; their decisions become the concrete factors of the ``split``
  that uses them, and ``sample_compute_location`` the loop of the ``compute_at`` (decision
  -2 becomes ``compute_inline``, -1 "stay at the root" emits nothing).
* ``get_sblock``, ``get_loops``, ``get_child_blocks``, ``get_consumers``, ``get_producers``,
  ``enter_postproc`` only look things up.
* ``split``, ``fuse`` (also of a single loop, which only renames it ``<name>_fused``),
  ``reorder``, ``parallel``, ``vectorize``, ``unroll``, ``compute_at``, ``reverse_compute_at``,
  ``compute_inline``, ``reverse_compute_inline``, ``decompose_reduction``, ``cache_read``,
  ``cache_write`` map one to one; the loop is named as around a block under it.
* ``annotate`` with ``pragma_auto_unroll_max_step`` / ``pragma_unroll_explicit`` on a loop
  becomes an ``annotate`` step.
* **Dropped**: every ``meta_schedule.*`` annotation and ``unannotate``. The root's hints are
  removed by the postprocessor itself (``unannotate`` in the trace), so dropping both changes
  nothing; ``meta_schedule.tiling_structure`` (a block attribute recording the tiling rule,
  e.g. ``"SSRSRS"``) stays in the tuned IR but no pass reads it when compiling for the CPU.
  The job checks this: the tuned module with its ``meta_schedule.*`` annotations removed is
  structurally equal to the imported steps' module (``structurally_equal`` in the result).
* Any other instruction (``transform_layout`` from ``RewriteLayout``, ``tensorize``, ...) has
  no faithful step here: the conversion stops there and says so (``complete`` False).
"""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass, field
from typing import Any

from playground import pyparse
from playground.errors import PlaygroundError, StepError
from playground.schedule.loops import loop, loop_names
from playground.schedule.replay import block_names, scheduled
from playground.schedule.session import Session
from playground.schedule.steps import ANNOTATIONS, Step
from playground.worker.job_table import TUNE
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult

#: Seconds of fixed cost (builder/runner pools, search start-up) and per trial of the "tune"
#: job, measured on this project's 2-core machine (load ~3.5 from other jobs) with its fast
#: builder and population 64: 8 trials 14.7 s, 32 trials 43 s (conv+relu 1x8x16x16); 32 trials
#: 55 s, 64 trials 103 s (conv+relu+conv). For the UI's estimated progress bar.
FIXED_S = 6.0
PER_TRIAL_S = 1.4
MAX_TRIALS = 2000

_LOOKUPS = {"get_sblock", "get_loops", "get_child_blocks", "get_consumers", "get_producers",
            "get_loop", "enter_postproc", "sample_perfect_tile", "sample_categorical",
            "sample_partitioned_tile", "sample_compute_location"}
_LOOP_STEPS = {"parallel", "vectorize", "unroll"}


class TuningError(PlaygroundError):
    """A tuning request or a tuned trace the playground cannot use."""


@dataclass(frozen=True)
class Conversion:
    """The steps read from a trace, and what could not be carried over.

    Attributes
    ----------
    steps
        Playground steps that replay the schedule (up to the first unsupported instruction).
    dropped
        One line per instruction left out on purpose, with the reason.
    complete
        False when an instruction had no step equivalent and the conversion stopped there
        (``unsupported`` says which).
    """

    steps: tuple[Step, ...]
    dropped: tuple[str, ...] = ()
    complete: bool = True
    unsupported: str = ""


@dataclass(frozen=True)
class TuneResult:
    """What the ``"tune"`` job found.

    ``best_ms`` is the tuned steps' time as the ``"run"`` job takes it (checked on poisoned
    buffers and two seeds, then timed by :func:`playground.measure.timing.measure`; on the farm
    when there is one), so it compares with the user's schedule; ``None`` when no schedule
    MetaSchedule found passed that check (its notes say so).
    """

    steps: tuple[Step, ...]
    trials: int
    best_ms: float | None
    tune_s: float
    complete: bool
    structurally_equal: bool | None
    dropped: tuple[str, ...] = ()
    unsupported: str = ""
    trace: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    runner: str = "local"  # where candidates ran: "local" or a farm's host:port/key

    def session(self, chain: dict) -> Session:
        """A session on ``chain`` with the tuned steps applied (validated)."""
        return Session.new(chain, [s.to_dict() for s in self.steps])

    @staticmethod
    def from_value(value: dict) -> TuneResult:
        return TuneResult(
            steps=tuple(Step.from_dict(s) for s in value["steps"]),
            trials=int(value.get("trials", 0)), best_ms=value.get("best_ms"),
            tune_s=float(value.get("tune_s", 0.0)), complete=bool(value.get("complete")),
            structurally_equal=value.get("structurally_equal"),
            dropped=tuple(value.get("dropped", ())), unsupported=value.get("unsupported", ""),
            trace=value.get("trace", ""), notes=tuple(value.get("notes", ())),
            runner=value.get("runner", "local"))


# ----------------------------------------------------------------------------- estimates

def check_trials(trials: Any) -> int:
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise TuningError(f"tune: trials must be an integer from 1 to {MAX_TRIALS}, got "
                          f"{trials!r}", where="tune.trials")
    return trials


def estimate_seconds(trials: int, cores: int = 2) -> float:
    """Expected wall time of a tuning job of ``trials`` trials (for a progress bar).

    Scales the per-trial cost measured on 2 cores by ``2 / cores`` (building is parallel).
    """
    return FIXED_S + PER_TRIAL_S * trials * 2 / max(1, cores)


def job_timeout_s(trials: int, cores: int = 2) -> float:
    """The worker's limit for a tuning job: generous, since machines get loaded."""
    return 120.0 + 4 * estimate_seconds(trials, cores)


def tune(pool: WorkerPool, session: Session, trials: int = 32, *, target: str = "cpu",
         seed: int = 0, on_event=None, cancel: threading.Event | None = None,
         timeout_s: float | None = None) -> JobResult:
    """Tune ``session``'s chain with MetaSchedule in the worker (job ``"tune"``).

    The job holds the machine-wide measurement lock (its runner times kernels), unless
    ``pool`` carries a measurement farm off this machine (``pool.farm``): then the candidates
    run on the farm's servers. Its ``value`` reads with :meth:`TuneResult.from_value`; the
    session's own steps are ignored (MetaSchedule starts from the unscheduled chain).

    Raises
    ------
    TuningError
        At once for an invalid trial budget or a non-CPU target.
    """
    trials = check_trials(trials)
    if target != "cpu":
        raise TuningError(f"tune: only the cpu target is tuned here, got {target!r}",
                          where="tune.target")
    payload = {"chain": session.chain, "target": target, "trials": trials, "seed": seed}
    farm = getattr(pool, "farm", None)
    if farm is not None:
        payload["remote"] = farm.to_dict()
    return TUNE.call(pool, payload, timeout_s=timeout_s or job_timeout_s(trials),
                     exclusive=farm is None or farm.is_local, on_event=on_event, cancel=cancel)


# ----------------------------------------------------------------------------- conversion

def _owners(sch) -> list[str]:
    """Blocks in the order loops are named by: deepest nest first (the main computation
    rather than a pad computed under its tile), then program order."""
    names = block_names(sch)
    depth = {b: len(sch.get_loops(sch.get_sblock(b))) for b in names}
    return sorted(names, key=lambda b: -depth[b])


def _name_loop(sch, rv, exclude: str | None = None) -> tuple[str, str]:
    """(block, loop name) naming the loop ``rv`` by a block under it."""
    target = sch.get(rv)
    for block in _owners(sch):
        if block == exclude:
            continue
        rvs = sch.get_loops(sch.get_sblock(block))
        for name, other in zip(loop_names(sch, block), rvs, strict=True):
            if sch.get(other).same_as(target):
                return block, name
    raise TuningError(f"tuned trace: loop {target.loop_var.name} has no block under it")


def _common_owner(sch, rvs: list) -> tuple[str, list[str]]:
    """A block under all loops ``rvs``, and their names around it."""
    targets = [sch.get(rv) for rv in rvs]
    for block in _owners(sch):
        around = list(zip(loop_names(sch, block), sch.get_loops(sch.get_sblock(block)),
                          strict=True))
        names = []
        for t in targets:
            name = next((n for n, r in around if sch.get(r).same_as(t)), None)
            if name is None:
                break
            names.append(name)
        else:
            return block, names
    raise TuningError("tuned trace: no block lies under all loops of one fuse/reorder")


def _call(line: str) -> tuple[str, list, dict] | None:
    """(method, positional arg nodes, keyword arg nodes) of a ``... = sch.method(...)`` line."""
    tree = pyparse.parse(line.strip())
    if len(tree.body) != 1:
        return None
    node = tree.body[0]
    call = node.value if isinstance(node, ast.Assign | ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "sch"):
        return None
    return call.func.attr, list(call.args), {k.arg: k.value for k in call.keywords}


def _value(node: ast.AST, ns: dict) -> Any:
    return eval(compile(ast.Expression(node), "<trace>", "eval"), ns)


def _int(sch, v: Any) -> int:
    return v if isinstance(v, int) else int(sch.get(v))


def _step_for(sch, method: str, args: list, kw: dict, ns: dict,
              special: dict[str, str]) -> tuple[Step | None, str]:
    """The step for one instruction (before it is applied), or (None, why it is dropped)."""
    val = {k: _value(v, ns) for k, v in kw.items()}
    pos = [_value(a, ns) for a in args]
    if method == "split":
        block, name = _name_loop(sch, val["loop"])
        factors = [_int(sch, f) if f is not None else None for f in val["factors"]]
        return Step("split", {"block": block, "loop": name, "factors": factors}), ""
    if method in ("fuse", "reorder"):
        block, names = _common_owner(sch, pos)
        return Step(method, {"block": block, "loops": names}), ""
    if method in _LOOP_STEPS:
        block, name = _name_loop(sch, val["loop"])
        return Step(method, {"block": block, "loop": name}), ""
    if method in ("compute_at", "reverse_compute_at"):
        moved = sch.get(val["block"]).name_hint
        loop_src = ast.unparse(kw["loop"])
        if special.get(loop_src) == "root":
            return None, "stays at the root (sampled compute location -1)"
        if special.get(loop_src) == "inline":
            prim = "compute_inline" if method == "compute_at" else "reverse_compute_inline"
            return Step(prim, {"block": moved}), ""
        owner, name = _name_loop(sch, val["loop"], exclude=moved)
        return Step(method, {"block": moved, "target_block": owner, "target_loop": name,
                             "preserve_unit_loops": bool(val.get("preserve_unit_loops",
                                                                 False))}), ""
    if method in ("compute_inline", "reverse_compute_inline"):
        return Step(method, {"block": sch.get(val["block"]).name_hint}), ""
    if method == "decompose_reduction":
        block = sch.get(val["block"]).name_hint
        rvs = sch.get_loops(val["block"])
        target = sch.get(val["loop"])
        idx = next(i for i, r in enumerate(rvs) if sch.get(r).same_as(target))
        return Step(method, {"block": block, "loop": loop_names(sch, block)[idx]}), ""
    if method in ("cache_read", "cache_write"):
        if val.get("consumer_blocks"):
            raise _Unsupported(f"{method} with consumer_blocks")
        index_key = "read_buffer_index" if method == "cache_read" else "write_buffer_index"
        return Step(method, {"block": sch.get(val["block"]).name_hint,
                             index_key: int(val[index_key]),
                             "storage_scope": val["storage_scope"]}), ""
    if method == "annotate":
        key = val["ann_key"]
        target = val["block_or_loop"]
        is_loop = type(sch.get(target)).__name__ == "For"
        if is_loop and key in ANNOTATIONS:
            block, name = _name_loop(sch, target)
            value = _int(sch, val["ann_val"])
            return Step("annotate", {"block": block, "loop": name, "key": key,
                                     "value": min(value, ANNOTATIONS[key])}), ""
        if key == "meta_schedule.tiling_structure":
            return None, "records which tiling rule made the nest; not read when compiling"
        if key.startswith("meta_schedule."):
            return None, ("a hint to the postprocessors, removed by them; what they did "
                          "follows as ordinary steps")
        raise _Unsupported(f"annotate {key!r}")
    if method == "unannotate":
        return None, f"the postprocessor removing the hint {val['ann_key']!r}"
    raise _Unsupported(method)


class _Unsupported(Exception):
    pass


def trace_to_steps(chain: dict, trace_lines: list[str]) -> tuple[Conversion, Any]:
    """Convert a MetaSchedule trace (``sch.trace.as_python()``) into playground steps.

    Runs each line on a fresh schedule of ``chain`` (so call it only on traces TVM produced,
    in the worker: the lines are executed). Returns the conversion and that schedule (the
    tuned one, for comparisons).
    """
    from tvm import s_tir

    from playground.chain.compute import chain_module

    sch = s_tir.Schedule(chain_module(chain))
    ns: dict[str, Any] = {"sch": sch, "T": None}
    steps: list[Step] = []
    dropped: list[str] = []
    special: dict[str, str] = {}  # loop RVs from sample_compute_location: root / inline
    for raw in trace_lines:
        line = raw.strip()
        if not line or line.startswith(("#", "def ")):
            continue
        parsed = _call(line)
        if parsed is None:
            raise TuningError(f"tuned trace: cannot read line {line!r}")
        method, args, kw = parsed
        if method == "sample_compute_location":
            decision = _value(kw["decision"], ns)
            out = line.split("=", 1)[0].strip()
            if decision in (-1, -2):
                special[out] = "root" if decision == -1 else "inline"
        if method not in _LOOKUPS:
            try:
                step, why = _step_for(sch, method, args, kw, ns, special)
            except _Unsupported as e:
                return Conversion(tuple(steps), tuple(dropped), False,
                                  f"{e} (line: {line})"), sch
            if step is not None:
                steps.append(step)
            else:
                dropped.append(f"{line}  # {why}")
        try:
            exec(compile(line, "<trace>", "exec"), ns)
        except Exception as e:
            raise TuningError(f"tuned trace: replaying {line!r} failed: {e}") from None
    return Conversion(tuple(steps), tuple(dropped)), sch


def strip_hints(sch) -> None:
    """Remove every ``meta_schedule.*`` annotation from the blocks and loops of ``sch``."""
    for block in block_names(sch):
        brv = sch.get_sblock(block)
        for key in list(sch.get(brv).annotations.keys()):
            if str(key).startswith("meta_schedule."):
                sch.unannotate(brv, str(key))
        for name in loop_names(sch, block):
            lrv = loop(sch, block, name)
            for key in list(sch.get(lrv).annotations.keys()):
                if str(key).startswith("meta_schedule."):
                    sch.unannotate(lrv, str(key))


#: How :func:`verify`'s message starts when a step of the conversion is refused.
REFUSED = "the imported steps do not apply: "


def verify(chain: dict, conversion: Conversion, tuned) -> tuple[bool, str]:
    """Do the steps replay the tuned schedule? (structural equality, hints stripped)."""
    import tvm_ffi

    try:
        mine = scheduled(chain, conversion.steps)
    except StepError as e:
        return False, f"{REFUSED}{e.message}"
    reference = tuned.copy()
    strip_hints(reference)
    if tvm_ffi.structural_equal(mine.mod, reference.mod):
        return True, ""
    return False, "the imported steps give a different program than the tuned schedule"

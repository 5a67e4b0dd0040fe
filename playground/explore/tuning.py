"""Auto-tuning baseline: MetaSchedule's best schedule for the chain, as playground steps.

The tuning itself runs in the worker (job ``"tune"``, :mod:`playground.jobs.metaschedule`),
never in the server: :func:`tune` sends the chain and a trial budget and gets back the
best schedule as a list of :class:`~playground.schedule.steps.Step` that a
:class:`~playground.schedule.session.Session` imports and the user keeps editing.

From a MetaSchedule trace to steps (:func:`trace_to_steps`)
-----------------------------------------------------------
``compile_tir`` returns the best schedule *with its postprocessing*: its trace holds the
sampled program (``sample_perfect_tile``, ``split``, ``reorder``, ``reverse_compute_at``,
``sample_compute_location`` ...), then ``enter_postproc`` and what the postprocessors did
(``RewriteParallelVectorizeUnroll`` turns the root's ``meta_schedule.parallel`` /
``vectorize`` / ``unroll_explicit`` hints into ``fuse`` + ``parallel`` / ``vectorize`` and
``pragma_auto_unroll_max_step`` annotations; ``RewriteReductionBlock`` adds
``decompose_reduction``). The conversion replays that trace's instructions (``trace.insts``:
each a kind, inputs, attributes and outputs; nothing is executed but TVM's own instructions)
on a fresh schedule of the chain, and before each instruction is applied reads its inputs,
translated to that schedule, into one step when it changes the program:

* ``Sample*`` emit nothing; their decisions become the concrete factors of the ``split``
  that uses them, and ``SampleComputeLocation`` the loop of the ``compute_at`` (decision
  -2 becomes ``compute_inline``, -1 "stay at the root" emits nothing).
* ``GetSBlock``, ``GetLoops``, ``GetChildBlocks``, ``GetConsumers``, ``GetProducers``,
  ``EnterPostproc`` only look things up.
* An instruction of a catalog primitive with a trace form (``ReverseComputeAt`` is
  ``reverse_compute_at``; see ``Primitive.trace`` in :mod:`playground.schedule.steps`) maps
  one to one: the form says which input or attribute becomes which argument, and the
  argument's kind reads it (:meth:`~playground.schedule.kinds.Kind.from_trace`: a loop is
  named as around a block under it, a sampled factor by its decision). ``fuse`` of a single
  loop only renames it ``<name>_fused``; ``annotate`` with ``pragma_auto_unroll_max_step`` /
  ``pragma_unroll_explicit`` on a loop becomes an ``annotate`` step.
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

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from playground.errors import PlaygroundError, StepError
from playground.schedule import ir
from playground.schedule.kinds import On
from playground.schedule.loops import loop, loop_names
from playground.schedule.replay import block_names, scheduled
from playground.schedule.session import Session
from playground.schedule.steps import ANNOTATIONS, CATALOG, Primitive, Step
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

#: Instructions that only look things up or sample a decision that a later instruction uses.
_LOOKUPS = {"GetSBlock", "GetLoops", "GetChildBlocks", "GetConsumers", "GetProducers",
            "GetLoop", "EnterPostproc", "SamplePerfectTile", "SampleCategorical",
            "SamplePartitionedTile", "SampleComputeLocation"}


def _snake(kind: str) -> str:
    """An instruction kind's name as a primitive's: ``ReverseComputeAt`` ->
    ``reverse_compute_at``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


class _Unsupported(Exception):
    pass


def _text(inst) -> str:
    """An instruction in a line: its kind and its string attributes (``Annotate
    meta_schedule.parallel``), for the list of dropped instructions."""
    words = [str(a) for a in inst.attrs if isinstance(a, str)]
    return " ".join([inst.kind.name, *words])


def _args(prim: Primitive, inputs: list, attrs: list, on: On) -> dict:
    """The step's arguments from an instruction's (translated) inputs and attributes, each
    read by its argument's kind in the order of the primitive's :class:`TraceForm`."""
    args: dict = {}
    for names, values in ((prim.trace.inputs, list(inputs)), (prim.trace.attrs, list(attrs))):
        for k, name in enumerate(names):
            if name is None:
                continue
            value = values[k:] if name.startswith("*") else values[k]
            a = prim.arg(name.lstrip("*"))
            args[a.name] = a.kind.from_trace(a, value, args, on)
    return args


def _hint(kind: str, attrs: list) -> str:
    """Why an instruction that only handles MetaSchedule's hints is dropped ("" if not)."""
    key = str(attrs[0]) if kind in ("Annotate", "Unannotate") else ""
    if kind == "Unannotate":
        return f"the postprocessor removing the hint {key}"
    if key == "meta_schedule.tiling_structure":
        return "records which tiling rule made the nest; not read when compiling"
    if key.startswith("meta_schedule."):
        return "a hint to the postprocessors, removed by them; what they did follows as " \
               "ordinary steps"
    return ""


def _faithful(name: str, sch, inputs: list, attrs: list) -> Primitive:
    """The catalog's primitive ``name``, if its step does what the instruction did; else
    :class:`_Unsupported`."""
    prim = CATALOG.get(name)
    if prim is None or prim.trace is None:
        raise _Unsupported(f"{name} (no playground step does it)")
    if prim.name == "annotate" and (str(attrs[0]) not in ANNOTATIONS
                                    or not isinstance(sch.get(inputs[0]), ir.For)):
        raise _Unsupported(f"annotate {str(attrs[0])!r}")
    if prim.name in ("cache_read", "cache_write") and len(inputs) > 1 and len(inputs[1]):
        raise _Unsupported(f"{prim.name} with consumer_blocks")  # inputs[1]: the blocks
    return prim


def _step_for(sch, inst, inputs: list, attrs: list, special: dict) -> tuple[Step | None, str]:
    """The step for one instruction (before it is applied), or (None, why it is dropped).

    What is converted is the catalog's business (:class:`TraceForm`, :meth:`Kind.from_trace`);
    what tuning leaves out is decided here: MetaSchedule's hints, compute locations sampled
    as "stay at the root" (-1) or "inline" (-2), and what has no faithful step."""
    why = _hint(inst.kind.name, attrs)
    if why:
        return None, why
    prim = _faithful(_snake(inst.kind.name), sch, inputs, attrs)
    if prim.name in ("compute_at", "reverse_compute_at"):
        where = next((v for rv, v in special.items() if rv.same_as(inst.inputs[1])), None)
        if where == "root":
            return None, "stays at the root (sampled compute location -1)"
        if where == "inline":
            inline = "compute_inline" if prim.name == "compute_at" else "reverse_compute_inline"
            return Step(inline, {"block": sch.get(inputs[0]).name_hint}), ""
    args = _args(prim, inputs, attrs, On(sch, tuple(block_names(sch))))
    if prim.name == "annotate":  # MetaSchedule's unroll steps go beyond what a user may set
        args["value"] = min(args["value"], ANNOTATIONS[args["key"]])
    return Step(prim.name, args), ""


def trace_to_steps(chain: dict, trace) -> tuple[Conversion, Any]:
    """Convert a MetaSchedule trace (``sch.trace``) into playground steps.

    Replays the trace's instructions (``trace.insts``: kind, inputs, attributes) on a fresh
    schedule of ``chain``; before each is applied, its inputs (translated to that schedule)
    are read into a step. Nothing is executed but TVM's own instructions. Returns the
    conversion and that schedule (the tuned one, for comparisons).
    """
    from tvm import s_tir

    from playground.chain.compute import chain_module

    sch = s_tir.Schedule(chain_module(chain))
    steps: list[Step] = []
    dropped: list[str] = []
    special: dict = {}  # the trace's loop RVs from SampleComputeLocation: "root" / "inline"
    stopped: list[str] = []
    seen = [0]

    def convert(inst, inputs, attrs, decision):
        kind = inst.kind.name
        seen[0] += 1
        if kind == "SampleComputeLocation" and int(decision) in (-1, -2):
            special[inst.outputs[0]] = "root" if int(decision) == -1 else "inline"
        if kind in _LOOKUPS or stopped:
            return decision
        try:
            step, why = _step_for(sch, inst, list(inputs), list(attrs), special)
        except (_Unsupported, ValueError) as e:
            stopped.append(f"{e} (instruction {seen[0]} of the trace: {_text(inst)})")
            raise
        if step is not None:
            steps.append(step)
        else:
            dropped.append(f"{_text(inst)}  # {why}")
        return decision

    try:
        trace.apply_to_schedule(sch, remove_postproc=False, decision_provider=convert)
    except Exception as e:  # TVM wraps what the callback raised
        if not stopped:
            raise TuningError(f"tuned trace: replaying it failed: {e}") from None
        return Conversion(tuple(steps), tuple(dropped), False, stopped[0]), sch
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

"""The worker job ``"tune"``: MetaSchedule on the chain, best schedule returned as steps.

Runs in the worker only (a module of :mod:`playground.jobs`). Two things make
MetaSchedule usable on a 2-core machine here:

* ``import tvm.s_tir.tensor_intrin`` (done by ``TuneContext`` and by the default build function
  of ``LocalBuilder``) registers every tensor intrinsic of every target and costs ~24 s of
  CPU (15 s of it CUDA's). Float convolutions on the CPU use none of them, so while tuning the
  package is replaced by an empty one plus its x86 module (~1 s), and builds use
  :func:`_build_function`, which skips the import. With the default builder, each build batch
  started fresh processes that paid the 24 s again and hit the builder's 30 s timeout: every
  trial failed.
* The builder and runner are TVM ``PopenPoolExecutor`` children of the worker, in its process
  group, so a timeout or a cancel of the job kills them too.

With a measurement farm (payload ``remote``, see :mod:`playground.remote.farm`), candidates
are still built here but run on the tracker's servers (MetaSchedule's ``RPCRunner``, one
session per server at once).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator

from playground.chain.spec import normalize_chain
from playground.explore.tuning import (
    REFUSED,
    TuningError,
    check_trials,
    trace_to_steps,
    verify,
)
from playground.worker.job_table import NUMPY_TIME, TUNE
from playground.worker.registry import job

_INTRIN = "tvm.s_tir.tensor_intrin"
#: Candidates per round of the evolutionary search (MetaSchedule's default: 512).
POPULATION = 64


@contextlib.contextmanager
def light_tensor_intrinsics() -> Iterator[None]:
    """Make ``import tvm.s_tir.tensor_intrin`` cheap for the ``with`` block (x86 only)."""
    if _INTRIN in sys.modules:  # already paid for: nothing to do
        yield
        return
    spec = importlib.util.find_spec(_INTRIN)
    stub = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    sys.modules[_INTRIN] = stub
    try:
        importlib.import_module(_INTRIN + ".x86")
        yield
    finally:
        # A later ``import tvm.s_tir.tensor_intrin`` (a GPU job, say) runs the real package;
        # the submodules already run stay in sys.modules, so nothing registers twice.
        del sys.modules[_INTRIN]


def _build_function():
    """LocalBuilder's default build without ``import tvm.s_tir.tensor_intrin``.

    A closure, so that cloudpickle sends it by value to the builder's processes (which need
    not be able to import ``playground``).
    """

    def build(mod, target, _params):
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm_build(mod, target=target)

    return build


def _runner(remote: dict | None) -> tuple[object, str]:
    """MetaSchedule's runner and what it is: local, or an ``RPCRunner`` on the farm's tracker."""
    if not remote:
        return "local", "local"
    from tvm.s_tir import meta_schedule as ms

    from playground.remote.device import RemoteDevice, RemoteError, tracker_keys

    device = RemoteDevice.from_dict(remote)
    try:
        servers = tracker_keys(device.host, device.port).get(device.key, {}).get("servers", 0)
    except RemoteError:
        servers = 0  # the runner reports the unreachable tracker on every candidate
    config = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port,
                                 tracker_key=device.key,
                                 session_timeout_sec=device.session_timeout_s)
    return ms.runner.RPCRunner(rpc_config=config, max_workers=max(1, servers)), device.label


@job(TUNE)
def tune_job(payload: dict) -> dict:
    """Tune the chain with MetaSchedule; return the best schedule as playground steps.

    Payload: ``chain``, ``trials``, ``seed``, ``target`` ("cpu"), ``population``
    (evolutionary search, default :data:`POPULATION`), ``remote`` (a farm's
    :meth:`~playground.remote.device.RemoteDevice.to_dict`: run candidates there). Result:
    ``runner`` ("local" or the farm's label), ``steps``
    (list of step dicts), ``complete``, ``dropped``, ``unsupported``, ``structurally_equal``,
    ``verify_message``, ``best_ms`` (the chosen schedule checked and timed as the ``run`` job
    does it, on the farm when there is one: :func:`_run_steps`), ``timing``,
    ``metaschedule_ms`` (MetaSchedule's own measurement), ``trials`` (records in the
    database), ``tune_s``, ``trace`` (the tuned trace as Python).
    """
    from tvm.s_tir import meta_schedule as ms

    from playground.chain.compute import chain_module
    from playground.compile.targets import cpu_target

    if payload.get("target", "cpu") != "cpu":
        raise TuningError("tune: only the cpu target is tuned here", where="tune.target")
    chain = normalize_chain(payload["chain"])
    trials = check_trials(payload.get("trials", 32))
    seed = int(payload.get("seed", 0))
    population = max(16, min(512, int(payload.get("population", POPULATION))))
    cores = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    mod = chain_module(chain)
    target = cpu_target()
    runner, runner_label = _runner(payload.get("remote"))
    work_dir = tempfile.mkdtemp(prefix="playground-tune-")
    t0 = time.perf_counter()
    try:
        with light_tensor_intrinsics():
            builder = ms.builder.LocalBuilder(max_workers=cores, f_build=_build_function(),
                                              timeout_sec=60.0)
            # With the random cost model, evolving 512 candidates per round for 4 rounds only
            # shuffles them at random: a small population finds the same kind of schedules
            # and cuts the search (most of the time per round on 2 cores).
            strategy = ms.search_strategy.EvolutionarySearch(
                population_size=population, init_min_unmeasured=min(50, population // 2))
            db = ms.tune_tir(mod, target, work_dir=work_dir, max_trials_global=trials,
                             num_trials_per_iter=16, builder=builder,
                             runner=runner, cost_model="random", space=_space(ms),
                             strategy=strategy, seed=seed, num_tuning_cores=cores)
            tune_s = time.perf_counter() - t0
            records = len(db.get_all_tuning_records())
            chosen = _best_that_replays(db, mod, chain, run=lambda steps: _run_steps(
                chain, steps, payload.get("remote")))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    if chosen is None:
        raise TuningError(f"tune: none of the {records} trial(s) built and ran; see the "
                          "worker log", where="tune")
    trace, conversion, equal, why, metaschedule_ms, skipped, ran = chosen
    notes = [why] if why else []
    if not ran:
        notes.append("none of MetaSchedule's schedules passed the playground's check: this "
                     "one is shown unmeasured and must not be trusted")
    if skipped:
        notes.insert(0, f"MetaSchedule's {skipped[0]} faster schedule(s) skipped: "
                        f"{skipped[1]}")
    return {"steps": [s.to_dict() for s in conversion.steps], "complete": conversion.complete,
            "dropped": list(conversion.dropped), "unsupported": conversion.unsupported,
            "structurally_equal": equal, "verify_message": why,
            "best_ms": ran.get("median_ms"), "timing": ran.get("timing"),
            "metaschedule_ms": metaschedule_ms,
            "trials": records, "tune_s": tune_s, "trace": "\n".join(trace),
            "runner": runner_label, "skipped": skipped[0] if skipped else 0,
            "notes": notes}


def _space(ms):
    """MetaSchedule's CPU search space without its ``AddRFactor`` rule.

    ``rfactor`` (a reduction split into partial results: what MetaSchedule did to every pool
    window) is no playground primitive, so a trace using it converts only up to that
    instruction, and the imported steps were close to the unscheduled chain (a pooling chain's
    tuned baseline ran as slowly as no schedule at all). Without the rule, every schedule
    MetaSchedule finds replays as steps; a convolution's reduction was never rfactored on
    the CPU anyway (its output is parallel enough)."""
    rules = [r for r in ms.schedule_rule.ScheduleRule.create("llvm")
             if not isinstance(r, ms.schedule_rule.AddRFactor)]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="llvm",
                                             mutator_probs="llvm")


#: How many of MetaSchedule's fastest records are tried before giving up on a correct one.
TOP_K = 32


def _run_steps(chain: dict, steps, remote: dict | None) -> dict:
    """The project's one check and timing of a converted schedule: the ``run`` job's, or on a
    farm :func:`playground.remote.run.remote_run` (the same check, on its servers)."""
    if remote:
        from playground.remote.device import RemoteDevice
        from playground.remote.run import remote_run

        return remote_run(chain, steps, RemoteDevice.from_dict(remote))
    from playground.jobs.kernel import run_job

    return run_job({"chain": chain, "steps": [s.to_dict() for s in steps], "target": "cpu"})


def _best_that_replays(db, mod, chain: dict, run=None):
    """MetaSchedule's fastest schedule whose steps the playground accepts and that computes
    the right numbers.

    MetaSchedule checks no results, and some of its schedules are ones TVM 0.27 miscompiles
    (a convolution's padding moved under its producer's loops: the zero border is never
    written, ``docs/tvm-bugs.md``); the pre-checks refuse their steps. Those are skipped for
    the next fastest record, and so is a record whose steps ``run`` (steps -> the ``run``
    job's fields: :func:`_run_steps`) finds wrong, so the baseline is a schedule that
    computes the right numbers. Returns ``(trace, conversion, structurally_equal,
    verify_message, metaschedule_ms, skipped, ran)`` with ``skipped`` = ``(count, first
    reason)`` or ``()`` and ``ran`` what ``run`` returned (``{}`` without ``run``); None when
    no record ran.
    """
    from tvm import s_tir

    records = [r for r in db.get_top_k(db.commit_workload(mod), TOP_K)
               if r.run_secs and _mean_s(r) < 1e9]  # failed runs are recorded as 1e10 s
    first = None
    refused: list[str] = []
    for rec in records:
        sch = s_tir.Schedule(mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        trace = [str(line) for line in sch.trace.as_python()]
        conversion, tuned = trace_to_steps(chain, sch.trace)
        equal, why = verify(chain, conversion, tuned)
        found = (trace, conversion, equal, why, _mean_s(rec) * 1e3)
        first = first or found
        if why.startswith(REFUSED):
            refused.append("their steps are refused because TVM 0.27 miscompiles them "
                           f"({why[len(REFUSED):]})")
            continue
        ran = run(conversion.steps) if run is not None else {}
        if run is not None and not ran.get("correct"):
            refused.append(f"they compute a wrong result ({ran.get('message', '')})")
            continue
        return (*found, (len(refused), refused[0]) if refused else (), ran)
    if first is None:
        return None
    return (*first, (len(refused), refused[0]) if refused else (), {})


def _mean_s(record) -> float:
    return sum(float(s) for s in record.run_secs) / len(record.run_secs)


@job(NUMPY_TIME)
def numpy_time_job(payload: dict) -> dict:
    """Time the chain's numpy reference (:func:`playground.chain.reference.reference_output`).

    That reference computes in float64 (it is the correctness oracle, not a tuned numpy
    program); its convolutions are one BLAS matrix product per image and group, on as many
    threads as numpy's BLAS takes. Timed by the project's one timing function
    (:func:`playground.measure.timing.measure` on a
    :class:`~playground.measure.timing.PythonFunction`). Payload: ``chain``, ``repeat``
    (default 5), ``min_repeat_ms`` (default 50). Returns ``median_ms`` (per call), ``timing``
    (:meth:`~playground.measure.timing.Timing.to_dict`), ``dtype`` ("float64").
    """
    from playground.chain.reference import make_inputs, reference_output
    from playground.measure.timing import PythonFunction, measure

    chain = normalize_chain(payload["chain"])
    inputs = make_inputs(chain, int(payload.get("seed", 0)))
    timing = measure(PythonFunction(lambda: reference_output(chain, inputs)), [], None,
                     repeat=max(1, int(payload.get("repeat", 5))),
                     min_repeat_ms=float(payload.get("min_repeat_ms", 50.0)))
    return {"median_ms": timing.median_ms, "timing": timing.to_dict(), "dtype": "float64"}

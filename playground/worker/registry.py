"""The jobs a worker process can run, by name: their implementations, found in the child.

A job is a plain function ``payload dict -> result dict`` registered with :func:`job` on its
declaration (a :class:`playground.worker.job_table.Job`: name, pool, time limit, module).
The parent (:mod:`playground.worker.pool`) sends only the name and a JSON payload; the
worker process (:mod:`playground.worker.main`) looks the name up in :data:`JOBS`. Payloads and
results must be JSON-able: no TVM objects cross the process boundary, only text (TVMScript,
schedule steps) and numbers.

Adding a job
------------
Declare it in :mod:`playground.worker.job_table` (``MEASURE = Job("measure", LONG, 300.0,
"playground.jobs.kernel")``), then write it in that module of the package
:mod:`playground.jobs` (one module per capability) and decorate it with its declaration::

    from playground.worker.job_table import MEASURE
    from playground.worker.registry import job

    @job(MEASURE)
    def measure_job(payload: dict) -> dict:
        ...
        return {"median_ms": 1.2, "correct": True}

Callers run it with ``MEASURE.call(pool, payload)``. :func:`load_jobs` (called once in the
worker at start, after ``import tvm``) imports every module of that package, so the registry
fills itself in the worker only and the web server never imports job code. A module that fails
to import stops the worker loudly; a job module that registers no job, a declared job without
its implementation (or implemented in another module than declared) and an implementation
without a declaration are errors too. Raise
:class:`playground.errors.StepError` /
:class:`~playground.errors.BuildError` for user mistakes, return ``{"correct": False, ...}`` for a
kernel that runs but computes the wrong numbers; the pool classifies both.

Debug and fault jobs (``sleep``, ``segfault``, ``allocate``, ``raise``, ``exit``, ``spawn``,
``echo``) exist for tests and are registered only when the worker's environment has
``PLAYGROUND_FAULT_JOBS=1`` (``WorkerPool(fault_jobs=True)``), so that no user request can crash
a worker on purpose.
"""

from __future__ import annotations

import builtins
import ctypes
import importlib
import os
import pkgutil
import sys
import time
from collections.abc import Callable

from playground.worker.job_table import JOBS as DECLARED
from playground.worker.job_table import PING, Job

JobFunc = Callable[[dict], dict]

#: Registered jobs, by name. Filled by :func:`job` decorators.
JOBS: dict[str, JobFunc] = {}

#: The package whose every module holds jobs; :func:`load_jobs` imports all of them.
JOBS_PACKAGE = "playground.jobs"

FAULT_JOBS_ENV = "PLAYGROUND_FAULT_JOBS"
#: The test-only fault jobs (:func:`_register_fault_jobs`): registered by name, never declared.
FAULT_JOBS = ("sleep", "segfault", "allocate", "raise", "exit", "spawn", "echo")


def job(declared: Job | str) -> Callable[[JobFunc], JobFunc]:
    """Register the decorated function as the job ``declared``.

    Parameters
    ----------
    declared
        Its :class:`~playground.worker.job_table.Job` (callers call that); a bare name only
        for the test-only fault jobs below, which no caller outside the tests runs. The name
        must be unique.

    Returns
    -------
    Callable
        The decorator; it returns the function unchanged.
    """

    name = declared if isinstance(declared, str) else declared.name

    def register(func: JobFunc) -> JobFunc:
        if name in JOBS and JOBS[name] is not func:
            raise ValueError(f"job {name!r} is registered twice")
        JOBS[name] = func
        return func

    return register


def job_modules() -> list[str]:
    """Every module of :data:`JOBS_PACKAGE`, sorted (found on disk, never listed by hand)."""
    package = importlib.import_module(JOBS_PACKAGE)
    return sorted(f"{JOBS_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__))


def load_jobs() -> dict[str, JobFunc]:
    """Import every job module (and the fault jobs when enabled); return the registry.

    Raises
    ------
    RuntimeError
        When a job module registers no job: a module in the jobs package that adds nothing is
        a mistake (a job moved away, a decorator lost), not something to skip quietly. Import
        errors of a job module propagate, so a broken module stops the worker loudly.
    """
    for module in job_modules():
        before = set(JOBS)
        already = module in sys.modules
        importlib.import_module(module)
        if not already and set(JOBS) == before:
            raise RuntimeError(f"job module {module} registers no job: decorate its jobs with "
                               f"@job(<its Job>) or move the module out of {JOBS_PACKAGE}")
    check_declarations()
    if os.environ.get(FAULT_JOBS_ENV) == "1":
        _register_fault_jobs()
    return JOBS


def check_declarations() -> None:
    """Every declared job implemented in its declared module, and nothing else implemented.

    Raises
    ------
    RuntimeError
        Naming the jobs that are declared but missing (or implemented elsewhere) and those
        implemented without a declaration.
    """
    wrong = [f"{name} (declared in {spec.module}, implemented in "
             f"{getattr(JOBS.get(name), '__module__', 'none')})"
             for name, spec in DECLARED.items()
             if getattr(JOBS.get(name), "__module__", None) != spec.module]
    extra = sorted(set(JOBS) - set(DECLARED) - set(FAULT_JOBS))
    if wrong or extra:
        raise RuntimeError("jobs and their declarations in playground.worker.job_table "
                           f"disagree: {'; '.join(wrong) or 'none missing'}; undeclared: "
                           f"{', '.join(extra) or 'none'}")


@job(PING)
def ping(payload: dict) -> dict:
    """Answer cheaply: the worker's pid and TVM version (proves the worker is alive and warm)."""
    import tvm

    return {"pid": os.getpid(), "tvm": tvm.__version__}


def _register_fault_jobs() -> None:
    """Jobs that misbehave on purpose, for the worker's tests."""

    @job("sleep")
    def sleep(payload: dict) -> dict:
        time.sleep(float(payload.get("seconds", 1.0)))
        return {"slept": float(payload.get("seconds", 1.0))}

    @job("segfault")
    def segfault(payload: dict) -> dict:
        ctypes.string_at(0)
        return {}

    @job("allocate")
    def allocate(payload: dict) -> dict:
        size = int(payload.get("mb", 1)) << 20
        block = bytearray(size)
        for i in range(0, size, 4096):  # touch every page so it is really resident
            block[i] = 1
        return {"mb": size >> 20}

    @job("raise")
    def raise_error(payload: dict) -> dict:
        from playground import errors

        name = payload.get("error", "PlaygroundError")
        cls = getattr(errors, name, None) or getattr(builtins, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise ValueError(f"raise: unknown error type {name!r}")
        message = payload.get("message", f"{name} raised on purpose")
        if issubclass(cls, errors.PlaygroundError):
            raise cls(message, detail=payload.get("detail", ""), where=payload.get("where", ""))
        raise cls(message)

    @job("exit")
    def exit_now(payload: dict) -> dict:
        os._exit(int(payload.get("code", 3)))

    @job("spawn")
    def spawn(payload: dict) -> dict:
        # Real grandchildren, as MetaSchedule starts them: TVM popen_worker processes.
        from tvm.support.popen_pool import PopenPoolExecutor

        children = int(payload.get("children", 2))
        seconds = float(payload.get("seconds", 1.0))
        executor = PopenPoolExecutor(max_workers=children)
        try:
            for future in [executor.submit(time.sleep, seconds) for _ in range(children)]:
                future.result()
        finally:
            executor.shutdown()
        return {"children": children}

    @job("echo")
    def echo(payload: dict) -> dict:
        # Stray output at the Python and the C level must not reach the protocol pipe.
        print("echo: python stdout noise")
        sys.stdout.flush()
        os.write(1, b"echo: fd 1 noise\n")
        return dict(payload)

"""Every job the worker runs, declared once: its name, its pool, its time limit, its module.

This is the front door for jobs. A caller never names a job by a string; it calls the job's
:class:`Job` (``tests/project/test_layering.py`` refuses ``pool.run("<job>", ...)`` outside the
worker)::

    from playground.worker.job_table import RUN

    result = RUN.call(pool, payload, exclusive=True)   # long pool, RUN.timeout_s

:meth:`Job.call` picks the pool the job declares (on the server's
:class:`~playground.worker.pools.WorkerPools`; a single :class:`~playground.worker.pool.WorkerPool`
runs everything) and its time limit unless the caller passes one. The implementation is a
function of the module the job names, decorated with :func:`playground.worker.registry.job`
on this declaration; the worker checks at start that every job here has exactly that one
implementation (:func:`playground.worker.registry.load_jobs`). Names stay on the wire: the
parent sends a job's name, the child looks it up.

This module imports nothing heavy: the server and the explore/templates/model layers import it
without loading TVM or any job code (job code lives in :mod:`playground.jobs`, above them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The two pools of a server (:mod:`playground.worker.pools`): quick jobs (no kernel runs,
#: needed for the page to redraw) never wait behind long ones.
QUICK, LONG = "quick", "long"


@dataclass(frozen=True)
class Job:
    """A job of the worker.

    Attributes
    ----------
    name
        The name on the wire (what the child looks up).
    pool
        :data:`QUICK` or :data:`LONG`.
    timeout_s
        Its time limit in seconds unless the caller passes one.
    module
        The module that implements it (its function decorated ``@job(<this Job>)``).
    """

    name: str
    pool: str
    timeout_s: float
    module: str

    def call(self, pool: Any, payload: dict | None = None, *, timeout_s: float | None = None,
             **options: Any) -> Any:
        """Run the job on ``pool`` and return its :class:`~playground.worker.result.JobResult`.

        ``pool`` is a :class:`~playground.worker.pools.WorkerPools` (the job's own pool is
        chosen) or anything with ``run`` (a :class:`~playground.worker.pool.WorkerPool`, a
        test's fake). ``options`` go to ``run`` (``exclusive``, ``cancel``, ``on_event``,
        ``owner``, ``memory_limit_mb``).
        """
        route = getattr(pool, "pool_for", None)
        chosen = route(self.name) if route is not None else pool
        return chosen.run(self.name, payload, timeout_s=timeout_s or self.timeout_s, **options)


_KERNEL = "playground.jobs.kernel"
_FACTS = "playground.jobs.facts"
_TUNING = "playground.jobs.metaschedule"
_ONNX = "playground.jobs.onnx_upload"

PING = Job("ping", QUICK, 10.0, "playground.worker.registry")
LOWER = Job("lower", QUICK, 60.0, _KERNEL)
CODEGEN = Job("codegen", QUICK, 90.0, _KERNEL)
RUN = Job("run", LONG, 300.0, _KERNEL)
ROUNDS = Job("rounds", LONG, 600.0, "playground.jobs.paired")
REMOTE_RUN = Job("remote_run", LONG, 300.0, "playground.jobs.rpc")
ANALYZE = Job("analyze", QUICK, 120.0, _FACTS)
TILE_REGIONS = Job("tile_regions", QUICK, 180.0, _FACTS)
MACHINE_PEAK = Job("machine_peak", LONG, 600.0, _FACTS)
TUNE = Job("tune", LONG, 900.0, _TUNING)
NUMPY_TIME = Job("numpy_time", LONG, 120.0, _TUNING)
MODEL_READ = Job("model_read", LONG, 120.0, _ONNX)
MODEL_OPEN = Job("model_open", LONG, 120.0, _ONNX)

#: Every declared job, by name.
JOBS: dict[str, Job] = {j.name: j for j in (PING, LOWER, CODEGEN, RUN, ROUNDS, REMOTE_RUN,
                                            ANALYZE, TILE_REGIONS, MACHINE_PEAK, TUNE,
                                            NUMPY_TIME, MODEL_READ, MODEL_OPEN)}


def pool_of(name: str) -> str:
    """The pool of the job ``name``: its declared one; :data:`LONG` for an undeclared name
    (the worker's test-only fault jobs), so nothing runs on the quick pool by accident."""
    job = JOBS.get(name)
    return job.pool if job is not None else LONG

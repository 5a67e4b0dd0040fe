"""Two worker pools behind one ``run``: quick jobs never wait behind long ones.

A server shared by a team runs a user's IR view (lowering: a tenth of a second) next to
another user's sweep or tuning (minutes). In one pool the IR view waits for the sweep.
:class:`WorkerPools` keeps two :class:`~playground.worker.pool.WorkerPool` s and routes every
job to the pool its declaration names (:mod:`playground.worker.job_table`: lowering, code
generation, analysis, tile regions and ping are quick), so a name nobody declared (a fault job
of the tests) is long. It is duck-compatible with ``WorkerPool`` where callers use one (``run``,
``warm_up``, ``close``, ``pids``, context manager)::

    with WorkerPools.sized(cores=8) as pools:
        LOWER.call(pools, payload)                      # quick pool
        RUN.call(pools, payload, exclusive=True)        # long pool, fair queue by owner

Long jobs wait for a long worker in their owner's turn (:mod:`playground.worker.fair`), then
for the machine-wide measurement lock if they time something. Both pools share that lock.

Sizes
-----
:func:`pool_sizes` reads ``PLAYGROUND_QUICK_WORKERS`` and ``PLAYGROUND_LONG_WORKERS`` when
set; otherwise ``quick = clamp(cores, 2, 8)`` (lowering is one core's work and short: two
users apply steps at once without waiting) and ``long = clamp(cores // 2, 2, 8)`` (timings
queue on the lock anyway; a second long worker builds and validates while one times, and
lets the fair queue choose). With a measurement farm (timings on RPC servers, not here) long
workers mostly wait on the network: ``long = max(that, 4)``. Each worker costs ~250 MB
resident once TVM is imported.

Long workers run niced (``PLAYGROUND_LONG_NICE``, default :data:`LONG_NICE`; 0 turns it off):
a timing on every core would otherwise hold the web server and the quick workers off the CPU
for as long as it lasts. A timing that the page disturbs this way is flagged by the load it
records (:mod:`playground.measure.load`); with a measurement farm, timings leave the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from playground.errors import PlaygroundError
from playground.worker.job_table import QUICK, pool_of
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult

QUICK_ENV = "PLAYGROUND_QUICK_WORKERS"
LONG_ENV = "PLAYGROUND_LONG_WORKERS"
NICE_ENV = "PLAYGROUND_LONG_NICE"
#: How much lower the long workers' CPU priority is than the server's (``nice`` increment).
LONG_NICE = 10
#: Upper bound of a pool's size from the environment (each worker is a process with TVM).
MAX_WORKERS = 64


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _env_int(environ: Mapping[str, str], name: str, low: int, high: int,
             what: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise PlaygroundError(f"{name} must be {what} from {low} to {high}, got {raw!r}",
                              where=name)
    return int(raw)


def _env_size(environ: Mapping[str, str], name: str) -> int | None:
    return _env_int(environ, name, 1, MAX_WORKERS, "a number of workers")


def long_nice(environ: Mapping[str, str] | None = None) -> int:
    """The long workers' nice increment: ``PLAYGROUND_LONG_NICE`` (0..19) or :data:`LONG_NICE`.

    Raises
    ------
    PlaygroundError
        For a value that is not an integer from 0 to 19.
    """
    environ = os.environ if environ is None else environ
    value = _env_int(environ, NICE_ENV, 0, 19, "a nice increment")
    return LONG_NICE if value is None else value


def pool_sizes(cores: int, environ: Mapping[str, str] | None = None, *,
               farm: bool = False) -> tuple[int, int]:
    """``(quick, long)`` worker counts for a machine with ``cores`` cores.

    Parameters
    ----------
    cores
        Cores kernels may run on (:func:`playground.measure.machine.cores`).
    environ
        Where ``PLAYGROUND_QUICK_WORKERS`` / ``PLAYGROUND_LONG_WORKERS`` are read (default
        ``os.environ``); a value set there wins.
    farm
        Timings go to RPC servers (see the module docstring).

    Raises
    ------
    PlaygroundError
        For a variable that is not an integer from 1 to :data:`MAX_WORKERS` (``where`` names
        the variable).
    """
    environ = os.environ if environ is None else environ
    cores = max(1, int(cores))
    quick = _clamp(cores, 2, 8)
    long = _clamp(cores // 2, 2, 8)
    if farm:
        long = max(long, 4)
    return _env_size(environ, QUICK_ENV) or quick, _env_size(environ, LONG_ENV) or long


class WorkerPools:
    """A quick and a long :class:`WorkerPool`; :meth:`run` routes each job to its declared pool.

    Parameters
    ----------
    quick, long
        The two pools (this object closes them).
    farm
        Where timings go instead of this machine, if anywhere: a
        :class:`playground.remote.device.RemoteDevice` (kept here, used by
        :func:`playground.service.run`), or ``None``.
    """

    def __init__(self, quick: WorkerPool, long: WorkerPool, *, farm: Any = None) -> None:
        self.quick = quick
        self.long = long
        self.farm = farm

    @classmethod
    def sized(cls, cores: int, *, environ: Mapping[str, str] | None = None, farm: Any = None,
              **worker_options: Any) -> WorkerPools:
        """Pools sized by :func:`pool_sizes` for ``cores`` cores (and the environment).

        Quick workers run one thread (they compile, never time); long workers run ``cores``
        threads, as timings should, niced by :func:`long_nice`. ``worker_options`` go to both
        pools (``memory_limit_mb``, ``fault_jobs``, ``lock_dir``, ...).
        """
        quick_size, long_size = pool_sizes(cores, environ, farm=farm is not None)
        quick = WorkerPool(quick_size, num_threads=1, **worker_options)
        long = WorkerPool(long_size, num_threads=max(1, int(cores)),
                          nice=long_nice(environ), **worker_options)
        return cls(quick, long, farm=farm)

    def pool_for(self, job: str) -> WorkerPool:
        """The pool that runs the job named ``job`` (its declared one)."""
        return self.quick if pool_of(job) == QUICK else self.long

    def run(self, job: str, payload: dict | None = None, **options: Any) -> JobResult:
        """:meth:`WorkerPool.run` on the pool for ``job`` (same arguments, same result).
        Callers outside the worker call a job's :meth:`~playground.worker.job_table.Job.call`."""
        return self.pool_for(job).run(job, payload, **options)

    @property
    def measurement_lock(self):
        """The machine-wide measurement lock (the long pool's)."""
        return self.long.measurement_lock

    @property
    def pids(self) -> list[int]:
        """Pids of the live children of both pools."""
        return [*self.quick.pids, *self.long.pids]

    def waiting(self) -> dict[str, int]:
        """Long jobs waiting for a worker, per owner, in the order their turns come."""
        return self.long.waiting()

    @property
    def sizes(self) -> tuple[int, int]:
        """``(quick, long)`` worker counts."""
        return len(self.quick.workers), len(self.long.workers)

    def warm_up(self) -> None:
        """Start every worker of both pools now, quick ones first (the page needs them first).

        Raises
        ------
        PlaygroundError
            When a worker cannot start.
        """
        errors: list[PlaygroundError] = []
        for pool in (self.quick, self.long):
            try:
                pool.warm_up()
            except PlaygroundError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Close both pools (running jobs end as ``"cancelled"``)."""
        self.quick.close()
        self.long.close()

    def __enter__(self) -> WorkerPools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

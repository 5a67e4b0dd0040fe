"""What the UI and the command line ask of the worker: lower, generate code, validate, measure.

Each function takes a :class:`~playground.schedule.session.Session` (or chain + steps) and a
:class:`~playground.worker.pool.WorkerPool` (or the server's
:class:`~playground.worker.pools.WorkerPools`, made by :func:`server_pools`) and returns the
pool's :class:`~playground.worker.result.JobResult`. Payloads are plain JSON; compiling and
running happen in the worker, never in the caller's process. When the pools carry a
measurement farm (``PLAYGROUND_TRACKER``, see :mod:`playground.remote.farm`), :func:`run`
times on the farm's RPC servers instead of this machine.

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.compile`,
:mod:`playground.measure`,
:mod:`playground.worker`, :mod:`playground.remote`, :mod:`playground.errors`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from playground.errors import PlaygroundError
from playground.measure.sampling import METHOD
from playground.schedule.session import Session
from playground.worker.job_table import CODEGEN, LOWER, REMOTE_RUN, ROUNDS, RUN
from playground.worker.pool import WorkerPool
from playground.worker.pools import WorkerPools
from playground.worker.result import JobResult

#: Build modes of the weights (see :func:`run`): re-laid out on every call, or once.
WEIGHT_MODES = ("per-call", "constant")


def server_pools(environ: Mapping[str, str] | None = None, **worker_options) -> WorkerPools:
    """The worker pools of a server: sized from this machine's cores and the environment.

    ``PLAYGROUND_QUICK_WORKERS`` / ``PLAYGROUND_LONG_WORKERS`` set the sizes (see
    :func:`playground.worker.pools.pool_sizes`), ``PLAYGROUND_TRACKER`` the measurement farm.
    ``worker_options`` go to every worker (``memory_limit_mb``, ``lock_dir``, ...).

    Raises
    ------
    PlaygroundError
        For a malformed variable (``where`` names it).
    """
    from playground.measure.machine import cores
    from playground.remote.farm import farm_from_env

    return WorkerPools.sized(cores(), environ=environ, farm=farm_from_env(environ),
                             **worker_options)


def payload(session: Session, target: str = "cpu", **extra: object) -> dict:
    """The JSON payload of a job on the session's active steps."""
    return {"chain": session.chain, "steps": [s.to_dict() for s in session.active],
            "target": target, **extra}


def lower(pool: WorkerPool, session: Session, target: str = "cpu", *,
          tile_local: bool = True, weights: str = "per-call") -> JobResult:
    """Lowered TIR text (``value["text"]``) of the session's schedule; ``tile_local=False``
    lowers without the tile-local step (:mod:`playground.compile.tile_local`); with constant
    ``weights``: the ``pack`` function and the kernel ``main``."""
    return LOWER.call(pool, payload(session, target, tile_local=tile_local, weights=weights))


def codegen(pool: WorkerPool, session: Session, target: str = "cpu",
            kind: str = "asm", *, tile_local: bool = True) -> JobResult:
    """Generated code (``value["text"]``): ``asm`` or ``llvm`` on the CPU, ``cuda`` for GPUs."""
    return CODEGEN.call(pool, payload(session, target, kind=kind, tile_local=tile_local))


def run(pool: WorkerPool, session: Session, target: str = "cpu", *, measure: bool = True,
        repeat: int = METHOD["repeat"], min_repeat_ms: float = METHOD["min_repeat_ms"],
        on_event=None, cancel: threading.Event | None = None,
        timeout_s: float | None = None, tile_local: bool = True,
        weights: str = "per-call") -> JobResult:
    """Validate against the numpy reference and, if ``measure``, time the kernel (built with
    the tile-local step unless ``tile_local`` is False; with constant ``weights`` the weight
    re-layouts run once before timing).

    ``weights="constant"`` builds the weight re-layouts as a ``pack`` function run once
    before timing (:mod:`playground.compile.constant`); the value's ``weights`` says which mode
    a time was taken in. Constant weights are measured on this machine only.

    Timing jobs hold the machine-wide measurement lock (``exclusive``), so two timings never
    share the CPU; ``on_event`` receives the queue position while waiting. When ``pool``
    carries a measurement farm (``pool.farm``, a :class:`~playground.remote.device.RemoteDevice`)
    for ``target``, a timing runs there (job ``remote_run``: its value also names the
    ``server``); validation alone stays here.
    """
    if weights not in WEIGHT_MODES:
        raise PlaygroundError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got "
                              f"{weights!r}", where="weights")
    farm = getattr(pool, "farm", None)
    if measure and farm is not None and farm.target == target and weights == "per-call":
        return _remote_job(pool, session, farm, measure=True, repeat=repeat,
                           min_repeat_ms=min_repeat_ms, on_event=on_event, cancel=cancel,
                           job_timeout_s=timeout_s)
    return RUN.call(pool, payload(session, target, measure=measure, repeat=repeat,
                                  min_repeat_ms=min_repeat_ms, tile_local=tile_local,
                                  weights=weights),
                    timeout_s=timeout_s, exclusive=measure, on_event=on_event, cancel=cancel)


def rounds(pool: WorkerPool, chain: dict, kernels: list, target: str = "cpu", *,
           rounds: int = 7, repeat: int = 3, min_repeat_ms: float = METHOD["min_repeat_ms"],
           cancel: threading.Event | None = None, timeout_s: float | None = None,
           tile_local: bool = True, weights: str = "per-call") -> JobResult:
    """Time two or more schedules of ``chain`` (``kernels``: step tuples) in paired,
    alternating rounds, under one hold of the measurement lock (job ``rounds``), built with
    the tile-local step unless ``tile_local`` is False, with ``weights`` as in :func:`run`.

    ``value["rounds_ms"][k][i]`` is kernel ``k``'s median in round ``i``; turn them into a
    ratio with an interval with :func:`playground.measure.stats.compare_rounds`. Always on this
    machine (a farm's servers are not held for a whole comparison).
    """
    job = {"chain": chain, "target": target, "rounds": rounds, "repeat": repeat,
           "min_repeat_ms": min_repeat_ms, "tile_local": tile_local,
           "weights": weights,
           "kernels": [[s.to_dict() for s in steps] for steps in kernels]}
    return ROUNDS.call(pool, job, timeout_s=timeout_s, exclusive=True, cancel=cancel)


def remote_run(pool: WorkerPool, session: Session, tracker_host: str, tracker_port: int,
               key: str, *, via_tracker: bool = True, timeout_s: float = 10.0,
               target: str = "cpu", measure: bool = True, repeat: int = METHOD["repeat"],
               min_repeat_ms: float = METHOD["min_repeat_ms"], on_event=None,
               cancel: threading.Event | None = None,
               job_timeout_s: float | None = None) -> JobResult:
    """Validate and, if ``measure``, time the kernel on a TVM RPC server (job ``remote_run``).

    The worker builds the module, asks the tracker at ``tracker_host:tracker_port`` for a free
    server with ``key`` (waiting up to ``timeout_s``), runs and times it there, and retries once
    on another server if the first one dies. ``value`` holds the ``run`` job's fields plus
    ``remote``, ``server``, ``attempts`` and ``lost``; a failure comes back as status
    ``"error"`` with a message starting ``RemoteError:``. Timings on this machine's loopback
    hold the measurement lock like local ones (they share the CPU).

    Raises
    ------
    playground.remote.device.RemoteError
        At once, without a job, for an invalid host, port, key or timeout (``where`` names the
        field, e.g. ``"remote.port"``).
    """
    from playground.remote.device import RemoteDevice

    remote = RemoteDevice(tracker_host, tracker_port, key, via_tracker=via_tracker,
                          timeout_s=timeout_s, target=target)
    return _remote_job(pool, session, remote, measure=measure, repeat=repeat,
                       min_repeat_ms=min_repeat_ms, on_event=on_event, cancel=cancel,
                       job_timeout_s=job_timeout_s)


def _remote_job(pool: WorkerPool, session: Session, remote, *, measure: bool, repeat: int,
                min_repeat_ms: float, on_event, cancel: threading.Event | None,
                job_timeout_s: float | None) -> JobResult:
    """The ``remote_run`` job on ``remote``; timings on loopback take the measurement lock."""
    job_payload = payload(session, remote.target, remote=remote.to_dict(), measure=measure,
                          repeat=repeat, min_repeat_ms=min_repeat_ms)
    # Waiting for a server (twice, with the retry) comes on top of the run itself.
    limit = job_timeout_s or REMOTE_RUN.timeout_s + 2 * remote.timeout_s
    return REMOTE_RUN.call(pool, job_payload, timeout_s=limit,
                           exclusive=measure and remote.is_local, on_event=on_event,
                           cancel=cancel)

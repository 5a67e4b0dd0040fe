"""Sweep points measured several at once, when their timings leave this machine.

On this machine timings queue one at a time for the measurement lock, so measuring several
points at once gains nothing. On a measurement farm of other machines
(:mod:`playground.remote.farm`) each point runs on an RPC server of its own: a sweep there
measures :func:`parallel_points` points at once, one per long worker of the pools.
:func:`playground.explore.sweep.run_sweep` decides and calls :func:`run_parallel`.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any


def parallel_points(pool: Any, count: int) -> int:
    """How many of ``count`` points to measure at once: 1, unless the pool's timings go to a
    farm of other machines (``pool.farm`` not on loopback), then one per long worker."""
    farm = getattr(pool, "farm", None)
    long = getattr(pool, "long", None)
    if farm is None or farm.is_local or long is None:
        return 1
    return max(1, min(count, len(long.workers)))


def run_parallel(point: Callable[[Any], tuple[Any, bool]], values: Sequence[Any], width: int, *,
                 analyze: bool, on_progress: Callable | None = None,
                 cancel: threading.Event | None = None) -> tuple[list, str, bool]:
    """Measure ``point(value)`` for every value, ``width`` at once.

    Parameters
    ----------
    point
        ``value -> (SweepPoint, analyze job present)``; it runs in a copy of the caller's
        context, so its jobs keep the caller's owner in the pools' fair queue.
    values
        The values, in the order the points are returned.
    width
        Points in flight at once.
    analyze
        Whether the points were asked to be analyzed.
    on_progress
        Called with ``(done, total, point)`` as each point finishes (in finishing order).
    cancel
        Once set, points not yet done end as cancelled and are left out.

    Returns
    -------
    tuple
        ``(points in value order, "done" or "cancelled", analysis present)``.
    """
    done: dict[int, Any] = {}
    present = [analyze]
    with ThreadPoolExecutor(width, thread_name_prefix="sweep-point") as executor:
        futures = {executor.submit(contextvars.copy_context().run, point, value): i
                   for i, value in enumerate(values)}
        for future in as_completed(futures):
            result, had = future.result()
            present.append(had)
            if result.status == "cancelled":
                continue
            done[futures[future]] = result
            if on_progress is not None:
                on_progress(len(done), len(values), result)
    cancelled = cancel is not None and cancel.is_set() and len(done) < len(values)
    return [done[i] for i in sorted(done)], "cancelled" if cancelled else "done", all(present)

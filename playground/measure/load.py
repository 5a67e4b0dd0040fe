"""The machine's load while a kernel was timed: :class:`Load`, taken by :class:`LoadProbe`.

A time means little without the load it was measured under: four users at once measured 30-81
ms for kernels that take 19-24 ms alone. Every :class:`~playground.measure.timing.Timing` made
on this machine (or on an RPC server on this machine) therefore carries a :class:`Load`: the
1-minute load average, and the CPU that *other* processes used during the samples, read from
the kernel's counters (``/proc/stat`` and the measuring processes' CPU times, via psutil)::

    with LoadProbe() as probe:       # the measuring process: this one
        run_the_samples()
    probe.load.others_cores          # e.g. 0.62: other processes kept 0.62 cores busy

Under load
----------
A kernel timed on ``threads`` threads of a machine with ``cores`` cores leaves ``cores -
threads`` cores free; other processes hurt the timing only beyond those. A time is measured
*under load* when other processes used, on average over the samples, more than
:data:`UNDER_LOAD_CORES` (a quarter of a core) beyond the free cores::

    contention = others_cores - max(0, cores - threads)      under load: contention > 0.25

A quarter of a core taken from a kernel that runs on every core slows it by an eighth on two
cores and, because a parallel loop waits for its slowest thread, by more than its share on
many. The load average is recorded and shown but not used: it lags by a minute and counts the
measurement's own threads.

Resolution
----------
The counters tick :data:`TICK_S` apart (10 ms): each of ``/proc/stat``'s per-core counters and
each measuring thread's can be a tick off at either end of the interval. Over the 30 ms of a
paired round that is a third of a core of "others" that never ran (seen on a quiet machine:
every verdict called unreliable). So a load is under load only when the contention also
exceeds :data:`RESOLUTION_TICKS` ticks of CPU time over the interval; shorter intervals are
judged together (:meth:`Load.combine`: the rounds of a comparison as one interval).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

#: Other processes' CPU beyond the cores the kernel left free, in cores, above which a time
#: counts as measured under load.
UNDER_LOAD_CORES = 0.25
#: The kernel's CPU-time counters' step (``USER_HZ``), in seconds.
TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
#: Contention below this many ticks of CPU time over an interval is within the counters' error.
RESOLUTION_TICKS = 4
#: Fields of ``/proc/stat`` that count as busy (``guest`` is already inside ``user``; ``steal``
#: is time the hypervisor gave to someone else: taken from us too).
_BUSY = ("user", "nice", "system", "irq", "softirq", "steal")


@dataclass(frozen=True)
class Load:
    """The machine's load during one measurement; every ``*_cores`` is CPU-seconds per second.

    Attributes
    ----------
    cores
        Logical CPUs of the machine (``/proc/stat``'s).
    threads
        Threads the timed kernel ran on.
    seconds
        Length of the measured interval.
    busy_cores
        CPU used by every process over the interval (2.0: two cores fully busy).
    own_cores
        CPU used by the measuring processes (the worker, or the RPC server and its children).
    others_cores
        ``busy_cores - own_cores`` (never negative): what the rest of the machine used.
    loadavg_1m
        The 1-minute load average at the end of the interval.
    where
        ``"local"`` or the ``host:port`` of the RPC server that ran the kernel on this machine.
    """

    cores: int
    threads: int
    seconds: float
    busy_cores: float
    own_cores: float
    others_cores: float
    loadavg_1m: float
    where: str = "local"

    @property
    def contention_cores(self) -> float:
        """Other processes' CPU beyond the cores the kernel left free (see the module)."""
        return self.others_cores - max(0, self.cores - self.threads)

    @property
    def under_load(self) -> bool:
        """True when the time was measured under load: the contention is above
        :data:`UNDER_LOAD_CORES` and, over the interval, above what the counters can tell
        from zero (see the module docstring)."""
        return (self.contention_cores > UNDER_LOAD_CORES
                and self.contention_cores * self.seconds > RESOLUTION_TICKS * TICK_S)

    @classmethod
    def combine(cls, loads: Iterable[Load]) -> Load | None:
        """Several intervals as one (each core count weighted by its interval's length): the
        rounds of a comparison, each too short for the counters alone. None without loads."""
        loads = [x for x in loads if x is not None]
        if not loads:
            return None
        seconds = sum(x.seconds for x in loads)
        span = max(seconds, 1e-9)

        def mean(name: str) -> float:
            return sum(getattr(x, name) * x.seconds for x in loads) / span

        last = loads[-1]
        return cls(cores=last.cores, threads=max(x.threads for x in loads), seconds=seconds,
                   busy_cores=mean("busy_cores"), own_cores=mean("own_cores"),
                   others_cores=mean("others_cores"), loadavg_1m=last.loadavg_1m,
                   where=last.where)

    def summary(self) -> str:
        """One line for the page: ``other processes 0.62 of 2 cores, load average 1.40``."""
        flag = " — measured under load" if self.under_load else ""
        return (f"other processes {self.others_cores:.2f} of {self.cores} cores (kernel on "
                f"{self.threads}), load average {self.loadavg_1m:.2f}{flag}")

    def to_dict(self) -> dict:
        """Plain JSON-able fields plus ``under_load`` (ignored by :meth:`from_dict`)."""
        return {**asdict(self), "under_load": self.under_load}

    @classmethod
    def from_dict(cls, data: dict) -> Load:
        """Inverse of :meth:`to_dict`; keys it does not know (newer records) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _busy_seconds() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in _BUSY)


def _cpu_seconds(pids: Iterable[int], descendants: bool) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of each process (and its descendants), with
    those of its children that ended and were reaped: a build's compiler or linker, a job's
    short-lived subprocess would otherwise drop out of "own" and show up as "others"."""
    import psutil

    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *(root.children(recursive=True) if descendants else ())]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            seconds[proc.pid] = (t.user + t.system + getattr(t, "children_user", 0.0)
                                 + getattr(t, "children_system", 0.0))
    return seconds


def server_pids(port: int) -> list[int]:
    """Pids of the processes listening on TCP ``port`` here (an RPC server on loopback)."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return []
    return sorted({c.pid for c in conns if c.pid and c.status == psutil.CONN_LISTEN
                   and c.laddr and c.laddr.port == port})


def threads_of(pid: int) -> int | None:
    """``TVM_NUM_THREADS`` in the environment of process ``pid`` (``None``: unknown)."""
    import psutil

    try:
        value = psutil.Process(pid).environ().get("TVM_NUM_THREADS", "")
    except psutil.Error:
        return None
    return int(value) if value.isdigit() and int(value) > 0 else None


class LoadProbe:
    """Measures the machine's load between ``__enter__`` and ``__exit__``; read :attr:`load`.

    Parameters
    ----------
    pids
        The measuring processes; default this process (its threads: TVM's thread pool, BLAS).
    descendants
        Count the descendants of ``pids`` as measuring too (an RPC server runs each session
        in a child process). Off by default: this process's children (a test's, a worker's
        guardian) are other processes.
    threads
        Threads the kernel runs on; default :func:`playground.measure.machine.cores` (the
        worker's ``TVM_NUM_THREADS``).
    where
        What :attr:`Load.where` says.
    """

    def __init__(self, pids: Iterable[int] | None = None, *, descendants: bool = False,
                 threads: int | None = None, where: str = "local") -> None:
        import psutil

        from playground.measure.machine import cores

        self.pids = list(pids) if pids is not None else [os.getpid()]
        self.descendants = descendants
        self.cores = psutil.cpu_count() or 1
        self.threads = int(threads) if threads else cores()
        self.where = where
        self.load: Load | None = None

    def __enter__(self) -> LoadProbe:
        self._own = _cpu_seconds(self.pids, self.descendants)
        self._busy = _busy_seconds()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        import psutil

        seconds = time.monotonic() - self._t0
        busy = _busy_seconds() - self._busy
        after = _cpu_seconds(self.pids, self.descendants)
        # A process started during the interval counts from zero; one that ended is lost.
        own = sum(t - self._own.get(pid, 0.0) for pid, t in after.items())
        span = max(seconds, 1e-9)
        busy_cores = max(0.0, busy / span)
        own_cores = min(busy_cores, max(0.0, own / span))
        self.load = Load(cores=self.cores, threads=self.threads, seconds=seconds,
                         busy_cores=busy_cores, own_cores=own_cores,
                         others_cores=busy_cores - own_cores,
                         loadavg_1m=float(psutil.getloadavg()[0]), where=self.where)

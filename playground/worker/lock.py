"""The machine-wide measurement lock: two timings never share the CPU.

:class:`MeasurementLock` is a FIFO lock over files in a directory shared by every process of
this user on this machine (several servers, the command line, benchmarks). Waiters are told
their queue position through ``on_event`` callbacks; :func:`emit` delivers such events without
ever letting a failing UI callback break a job.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from playground.errors import PlaygroundError

log = logging.getLogger(__name__)


#: How often waiting loops look again for a lock, a free worker or a cancel, in seconds.
POLL_S = 0.05
EventCallback = Callable[[dict], None]
_WAKE = threading.Condition()  # wakes this process's waiters when one of its holders releases
_TICKETS = itertools.count()


def emit(on_event: EventCallback | None, event: dict) -> None:
    """Call ``on_event(event)``; a failing UI callback is logged, never breaks a job."""
    if on_event is not None:
        try:
            on_event(event)
        except Exception:
            log.exception("on_event callback failed for %r", event)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_lock_dir() -> Path:
    """The lock directory shared by this user's processes on this machine."""
    return Path(tempfile.gettempdir()) / f"playground-measure-{os.getuid()}"


class MeasurementTicket:
    """A held measurement lock; :meth:`release` it (or use :func:`measurement_lock`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self._path, self._fd = path, fd

    def release(self) -> None:
        """Give the lock to the next ticket; calling it twice does nothing."""
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._path.unlink(missing_ok=True)
        with _WAKE:
            _WAKE.notify_all()


class MeasurementLock:
    """A first-come-first-served lock across threads *and* processes, so timings never overlap.

    Every waiter drops a ticket file ``<time_ns>-<pid>-<n>.ticket`` in ``directory``; the
    position of a waiter is the number of live tickets before its own (the holder included),
    which a UI shows as "2 jobs ahead". Only the first ticket may take the ``fcntl.flock`` on
    ``directory/lock``, which is the actual mutual exclusion and is released by the kernel if
    the holder dies. Tickets of dead processes are removed by whoever looks next.

    Parameters
    ----------
    directory
        Where tickets and the lock file live; default :func:`default_lock_dir`.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_lock_dir()
        self.directory.mkdir(parents=True, exist_ok=True)

    def tickets(self) -> list[str]:
        """Live tickets in queue order (the holder first), dropping those of dead processes."""
        live = []
        for path in self.directory.glob("*.ticket"):
            try:
                pid = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if _pid_alive(pid):
                live.append(path.name)
            else:
                path.unlink(missing_ok=True)
        return sorted(live)

    def queue_length(self) -> int:
        """How many jobs hold or wait for the lock now, machine-wide."""
        return len(self.tickets())

    def acquire(self, *, on_event: EventCallback | None = None,
                cancel: threading.Event | None = None) -> MeasurementTicket | None:
        """Wait for the lock; ``None`` when ``cancel`` was set first.

        ``on_event`` gets ``{"event": "queued", "position": n}`` at once and whenever ``n``
        (the number of jobs ahead) changes.
        """
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_TICKETS):08d}.ticket"
        path = self.directory / name
        path.touch()
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        last = None
        try:
            while True:
                tickets = self.tickets()
                position = tickets.index(name) if name in tickets else len(tickets)
                if position != last:
                    emit(on_event, {"event": "queued", "position": position})
                    last = position
                if position == 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return MeasurementTicket(path, fd)
                    except BlockingIOError:
                        pass
                if cancel is not None and cancel.is_set():
                    break
                with _WAKE:
                    _WAKE.wait(POLL_S)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        path.unlink(missing_ok=True)
        with _WAKE:
            _WAKE.notify_all()
        return None


@contextlib.contextmanager
def measurement_lock(directory: str | Path | None = None, *,
                     on_event: EventCallback | None = None,
                     cancel: threading.Event | None = None) -> Iterator[MeasurementTicket]:
    """Hold the machine-wide measurement lock for the ``with`` block.

    ``on_event`` gets "queued" events (see :meth:`MeasurementLock.acquire`), then
    ``{"event": "started"}`` once held and ``{"event": "done"}`` after the block.

    Raises
    ------
    PlaygroundError
        When ``cancel`` is set before the lock is acquired.
    """
    ticket = MeasurementLock(directory).acquire(on_event=on_event, cancel=cancel)
    if ticket is None:
        raise PlaygroundError("measurement_lock: cancelled while waiting for the lock")
    emit(on_event, {"event": "started"})
    try:
        yield ticket
    finally:
        ticket.release()
        emit(on_event, {"event": "done"})

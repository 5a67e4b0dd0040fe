"""What happened to one job: :class:`JobResult`, for every outcome, never an exception.

The pool (:mod:`playground.worker.pool`) classifies each job's end as one of :data:`STATUSES`;
callers show ``message`` (one line) and keep ``detail`` for an expander.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


STATUSES = ("ok", "schedule_error", "build_error", "wrong_result", "crash", "timeout", "oom",
            "error", "cancelled")


@dataclass(frozen=True)
class JobResult:
    """What happened to one job.

    Attributes
    ----------
    status
        One of :data:`STATUSES`.
    value
        The job's JSON result (kept for ``"wrong_result"``); ``None`` when it did not return.
    message
        One line for the user: what went wrong (empty when ``"ok"``).
    detail
        Long text for an expander: TVM's full message, a traceback or the worker's stderr tail.
    elapsed_s
        Seconds from sending the job to its outcome (worker start-up and queueing excluded).
    worker_pid
        The child that ran the job, or ``None`` when it never reached one.
    where
        The failing field, from :class:`~playground.errors.PlaygroundError` (may be empty).
    """

    status: str
    value: dict | None = None
    message: str = ""
    detail: str = ""
    elapsed_s: float = 0.0
    worker_pid: int | None = None
    where: str = ""

    @property
    def ok(self) -> bool:
        """True when the job ran and returned a value that is not marked incorrect."""
        return self.status == "ok"

    def to_dict(self) -> dict:
        """The result as plain JSON-able data."""
        return asdict(self)


def one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."

"""The server-wide measurement farm: every timing of a shared server on a TVM RPC tracker's servers.

A team's server times every user's kernels. On the web server's own CPU those timings queue
one at a time behind the measurement lock and share the machine with everything else the
server does (lowering for other users, building). With ``PLAYGROUND_TRACKER=host:port:key``
set, the server sends them to the tracker's servers with that key instead, as many at once as
there are free servers (and long workers to drive them: ``PLAYGROUND_LONG_WORKERS``)::

    PLAYGROUND_TRACKER=10.0.0.5:9190:x86-farm ./run.sh

:func:`farm_from_env` reads the variable into a :class:`~playground.remote.device.RemoteDevice`;
:class:`playground.worker.pools.WorkerPools` carries it as ``farm``, and
:func:`playground.service.run` (every run, sweep point and search candidate) and
:func:`playground.explore.tuning.tune` (MetaSchedule's runner) send their timings there.
Kernels are still compiled on the web server's workers, for the web server's CPU target: the
farm's servers should be the same kind of machine.

On loopback (a tracker on ``127.x`` or ``localhost``) the servers share this machine's cores:
their timings still take the machine-wide measurement lock and queue one at a time, as local
ones do. Only servers on other machines measure in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from playground.remote.device import RemoteDevice, RemoteError

TRACKER_ENV = "PLAYGROUND_TRACKER"
#: Seconds a timing may wait for a free server of the farm (they are shared by every user).
FARM_WAIT_S = 300.0


def parse_tracker(text: str, *, timeout_s: float = FARM_WAIT_S) -> RemoteDevice:
    """The farm of ``host:port:key``, checked field by field.

    Raises
    ------
    RemoteError
        For anything but three fields, or a bad host, port or key (the message names
        :data:`TRACKER_ENV` and the field).
    """
    parts = text.strip().split(":")
    if len(parts) != 3 or not all(parts):
        raise RemoteError(f"{TRACKER_ENV} must be host:port:key (e.g. 127.0.0.1:9190:local), "
                          f"got {text!r}", where=TRACKER_ENV)
    host, port, key = parts
    try:
        return RemoteDevice(host, port, key, timeout_s=timeout_s)
    except RemoteError as e:
        raise RemoteError(f"{TRACKER_ENV}: {e.message}", where=TRACKER_ENV) from None


def farm_from_env(environ: Mapping[str, str] | None = None) -> RemoteDevice | None:
    """The farm named by ``PLAYGROUND_TRACKER``, or ``None`` when it is unset or empty.

    Raises
    ------
    RemoteError
        When the variable is set but malformed (see :func:`parse_tracker`).
    """
    text = (os.environ if environ is None else environ).get(TRACKER_ENV, "").strip()
    return parse_tracker(text) if text else None

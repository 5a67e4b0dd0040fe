"""The worker job ``remote_run``: build here, validate and time on a TVM RPC server.

Payload: ``chain`` (normalized), ``steps`` (JSON list), ``remote``
(:meth:`playground.remote.device.RemoteDevice.to_dict`), ``measure``, ``repeat``, ``min_repeat_ms``,
``seed``. The device is checked again here: the worker trusts no payload.
"""

from __future__ import annotations

import json

from playground.measure.sampling import METHOD
from playground.remote.device import RemoteDevice
from playground.remote.run import remote_run
from playground.schedule.steps import steps_from_json
from playground.worker.job_table import REMOTE_RUN
from playground.worker.registry import job


@job(REMOTE_RUN)
def remote_run_job(payload: dict) -> dict:
    """:func:`playground.remote.run.remote_run` on the payload; the result of ``run`` plus
    ``remote``, ``server``, ``attempts``, ``lost`` and ``upload_s``."""
    steps = steps_from_json(json.dumps(payload.get("steps", [])))
    remote = RemoteDevice.from_dict(payload.get("remote"))
    return remote_run(payload["chain"], steps, remote,
                      measure=bool(payload.get("measure", True)),
                      repeat=int(payload.get("repeat", METHOD["repeat"])),
                      min_repeat_ms=float(payload.get("min_repeat_ms", METHOD["min_repeat_ms"])),
                      seed=int(payload.get("seed", 0)))

"""Schedule Playground: explore TensorIR loop schedules of convolution chains.

The way of the data, one subpackage per stage::

    chain/      a chain as plain data -> its TensorIR function and its numpy reference
    schedule/   + a list of plain steps -> a scheduled program (replay, session, views)
    build/      -> lowered TIR, machine code, timings; the machine's facts
    worker/     where building and running happen: isolated worker processes and their jobs
    explore/    what a schedule costs: analysis, halos, sweeps, tuning, comparisons
    templates/  schedules made for any chain and machine, and the search over them
    store/      the experiment store: runs, searches and sessions that last
    io/         sessions in and out: exported scripts, presets, URL state
    remote/     measuring on a TVM RPC device

The small public API below is re-exported lazily (:pep:`562`): ``import playground`` imports
nothing else, so that ``python -m playground.worker.main`` caps its memory before TVM loads::

    from playground import Session, Step, normalize_chain, WorkerPool, service
    session = Session.new(normalize_chain({"input": {"shape": [1, 3, 32, 32]},
                                           "layers": [{"op": "conv2d", "channels": 8}]}))
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> (module, attribute); attribute None means the module itself.
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "PlaygroundError": ("playground.errors", "PlaygroundError"),
    "normalize_chain": ("playground.chain.spec", "normalize_chain"),
    "Step": ("playground.schedule.steps", "Step"),
    "CATALOG": ("playground.schedule.steps", "CATALOG"),
    "Session": ("playground.schedule.session", "Session"),
    "scheduled": ("playground.schedule.replay", "scheduled"),
    "WorkerPool": ("playground.worker.pool", "WorkerPool"),
    "JobResult": ("playground.worker.pool", "JobResult"),
    "service": ("playground.service", None),
    "export_script": ("playground.io.export", "export_script"),
    "import_script": ("playground.io.script_import", "import_script"),
    "list_presets": ("playground.io.presets", "list_presets"),
    "load_preset": ("playground.io.presets", "load_preset"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'playground' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""What runs call to be recorded: :func:`record_run`, :func:`record_group`; and the store of
this process's data directory (:func:`get_store`).

Recording never breaks a run: when the database is unavailable these return ``None`` (a
:class:`RunGroup` whose ``id`` is None), log one warning, and leave the reason in
:func:`problem` for the page or the command line to say that history is not being saved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.store.db import Store, StoreError, data_dir

log = logging.getLogger(__name__)

_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def get_store(directory: str | Path | None = None) -> Store:
    """The :class:`Store` of ``directory`` (default: ``$PLAYGROUND_DATA`` or the user's data
    directory, read now), one per directory and process. Opening happens on first use."""
    path = Path(directory) if directory is not None else data_dir()
    with _stores_lock:
        if path not in _stores:
            _stores[path] = Store(path)
        return _stores[path]


def problem(store: Store | None = None) -> str | None:
    """Why history is not being saved (the last failure of the store), or None."""
    return (store or get_store()).problem


def _quietly(store: Store, what: str, call, *args, **kwargs) -> Any:
    """``call(*args, **kwargs)``, or None (logged once per problem) when the store fails."""
    before = store.problem
    try:
        return call(*args, **kwargs)
    except StoreError as e:
        if e.message != before:
            log.warning("%s not recorded: %s", what, e.message)
        return None


def record_run(chain: Mapping, steps: Sequence, target: str, machine: Mapping, *,
               status: str, value: Mapping | None = None, error: str = "", detail: str = "",
               label: str = "", source: str = "", parent: int | None = None,
               store: Store | None = None) -> int | None:
    """Record one run, failed or not; returns its id, or None when history is not being saved.

    Parameters
    ----------
    chain
        The chain (normalized or raw; a chain that does not normalize is stored as given).
    steps
        The active steps: ``Step`` objects or their dicts.
    target
        ``"cpu"``, ``"cuda"``, ...
    machine
        The machine's fingerprint, ``playground.measure.machine.fingerprint()``; for a remote
        device ``{"remote": "host:port/key", ...}``.
    status
        The job's outcome: ``"ok"``, ``"wrong_result"``, ``"build_error"``, ``"crash"``, ...
    value
        The job's whole result (``JobResult.value``): ``correct``, ``median_ms``, ``gflops``,
        the timing record under ``timing``; stored whole as JSON.
    error, detail
        The one-line message and the long text of a failure.
    label
        What the run is, for lists: the last step's label, the file name, a sweep's value.
    source
        Who recorded it: ``"page"``, ``"cli"``, ``"sweep"``, ``"search"``.
    parent
        The group this run belongs to (prefer :meth:`RunGroup.add`).
    store
        Another store than :func:`get_store`'s (tests, benchmarks).
    """
    store = store or get_store()
    return _quietly(store, "run", store.record_run, chain, steps, target, machine,
                    status=status, value=value, error=error, detail=detail, label=label,
                    source=source, parent=parent)


@dataclass
class RunGroup:
    """A sweep's or search's record; its candidates are added as children.

    ``id`` is None when the group could not be recorded; :meth:`add` and :meth:`finish` then
    do nothing, so callers never need to check.
    """

    id: int | None
    chain: Mapping
    target: str
    machine: Mapping
    source: str
    store: Store

    def add(self, steps: Sequence, *, status: str, value: Mapping | None = None,
            error: str = "", detail: str = "", label: str = "") -> int | None:
        """Record one candidate (arguments as :func:`record_run`); returns its id or None."""
        if self.id is None:
            return None
        return record_run(self.chain, steps, self.target, self.machine, status=status,
                          value=value, error=error, detail=detail, label=label,
                          source=self.source, parent=self.id, store=self.store)

    def finish(self, status: str = "done") -> None:
        """Close the group (``"done"``, ``"cancelled"``, ``"error"``): it takes its fastest
        validated candidate's time and steps, so restoring the group restores the winner."""
        if self.id is not None:
            _quietly(self.store, "group", self.store.finish_group, self.id, status)


def record_group(kind: str, chain: Mapping, target: str, machine: Mapping, *,
                 label: str = "", source: str = "", info: Mapping | None = None,
                 steps: Sequence = (), store: Store | None = None) -> RunGroup:
    """Start a group of runs (``kind`` ``"sweep"``, ``"search"``, ...) and return it.

    Parameters
    ----------
    kind
        What the group is; lists and filters show it.
    chain, target, machine
        As :func:`record_run`; every candidate shares them.
    label
        E.g. the swept parameter, ``"split conv2.h factor[1]"``.
    info
        Plain JSON describing the group (parameter, values, options), kept as its result.
    steps
        The steps the group started from (replaced by the winner's on :meth:`RunGroup.finish`).

    Example
    -------
    >>> group = record_group("sweep", chain, "cpu", fingerprint(), label="tile")  # doctest: +SKIP
    >>> for steps, result in candidates:                                           # doctest: +SKIP
    ...     group.add(steps, status=result.status, value=result.value, label="8")
    >>> group.finish("done")                                                        # doctest: +SKIP
    """
    store = store or get_store()
    group_id = _quietly(store, kind, store.record_run, chain, steps, target, machine,
                        status="running", value=dict(info or {}), label=label, source=source,
                        kind=kind, is_group=True)
    return RunGroup(group_id, chain, target, machine, source, store)

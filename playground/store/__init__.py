"""The experiment store: every run, sweep and search, saved sessions and short links, in SQLite.

Owns the database. :mod:`.db` is the one module that opens it and speaks SQL (WAL mode,
created on first use in ``$PLAYGROUND_DATA``, else ``$XDG_DATA_HOME/schedule-playground``,
else ``~/.local/share/schedule-playground``); :mod:`.schema` holds its forward-only
migrations; :mod:`.records` the plain keys, names, dates and CSV; :mod:`.api` what runs call;
:mod:`.cli` the ``python -m playground experiments list|show|dump`` commands.
Nothing here reads the machine or runs a kernel: callers pass the machine's fingerprint
(``playground.measure.machine.fingerprint()``) and the job's result.

The API
-------
Recording (never raises for an unavailable database: returns None and leaves the reason in
:func:`problem`)::

    from playground import store
    run_id = store.record_run(chain, steps, "cpu", fingerprint, status=result.status,
                              value=result.value, error=result.message, label="3: split ...",
                              source="page")
    group = store.record_group("sweep", chain, "cpu", fingerprint, label="tile", source="sweep")
    group.add(steps, status=r.status, value=r.value, error=r.message, label="8")
    group.finish("done")         # the group takes its fastest validated candidate
    store.problem()              # None, or "history is not being saved: <why>"

Reading and curating, on ``s = store.get_store()`` (raise :class:`StoreError`, whose
``where`` is ``"store"`` when the database is unavailable)::

    s.list_experiments(chain=, machine=, target=, since=, until=, kind=, starred=, parent=)
    s.get(id)                    # chain, steps, machine, result decoded; children of a group
    s.star(id), s.annotate(id, note), s.delete(id), s.dump(), s.facets()
    s.leaderboard(chain_key, machine_key, target)    # fastest validated, one per schedule
    s.save_session(name, session, note), s.list_sessions(), s.load_session(name)
    link_id = s.share(session)   # >= 128 random bits;  s.load_shared(link_id)

Records are plain dicts; a session is a ``Session`` or its ``to_dict()``, and comes back as
the dict (the caller replays it with ``Session.from_dict``).

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.errors`.
"""

from playground.store.api import RunGroup, get_store, problem, record_group, record_run
from playground.store.db import Store, StoreError, data_dir

__all__ = ["RunGroup", "Store", "StoreError", "data_dir", "get_store", "problem", "record_group",
           "record_run"]

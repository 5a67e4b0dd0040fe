"""The one module that owns the database: connecting, migrating, and every SQL statement.

A :class:`Store` is one SQLite file, ``experiments.sqlite3`` in a data directory, in WAL
mode (readers never wait for the writer; a writer killed mid-write leaves the last committed
state). Each process opens one connection per store (reopened after a fork) and uses it under
a lock; processes coordinate through SQLite's own locks, waiting up to
:data:`BUSY_TIMEOUT_S`. Every write is one ``BEGIN IMMEDIATE`` transaction; a run is written
with a client-made ``uid`` under a UNIQUE constraint, so a retried write never duplicates it.

Whatever goes wrong underneath (a directory that cannot be created, a file that is not a
database, a full disk, a schema from a newer version) is raised as :class:`StoreError`, whose
message says that history is not being saved and why; ``Store.problem`` keeps the last such
message until an operation succeeds again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playground.errors import PlaygroundError
from playground.store import records as rec
from playground.store.schema import LATEST, MIGRATIONS, VERSIONS_TABLE

DB_NAME = "experiments.sqlite3"
BUSY_TIMEOUT_S = 10.0
#: Writes still refused after the busy timeout are tried this many times in all.
WRITE_ATTEMPTS = 3
#: Random bytes of a short-link id (``secrets.token_urlsafe``): 144 bits, 24 characters.
SHARE_BYTES = 18
SHARE_ID_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
#: The largest session (JSON characters) saved by name or behind a short link.
MAX_SESSION_CHARS = 1 << 20

_SUMMARY_SQL = (
    "SELECT id, parent_id, kind, created, source, chain_key, chain_name, target, machine_key, "
    "machine_name, status, correct, median_ms, gflops, n_steps, label, starred, note, error, "
    "CASE WHEN is_group THEN (SELECT COUNT(*) FROM experiments c WHERE c.parent_id = e.id) "
    "ELSE 0 END AS children FROM experiments e")
_JSON_COLUMNS = ("chain", "steps", "machine", "result")


class StoreError(PlaygroundError):
    """The store cannot do what was asked; ``where`` says what about.

    ``"store"``: the database is unavailable and history is not being saved (the message says
    why); ``"experiment"``, ``"session"``, ``"link"``: no such record, saved session or short
    link (or a malformed id); ``"store.date"``: a filter's date is not a date.
    """


def data_dir() -> Path:
    """``$PLAYGROUND_DATA``, else ``$XDG_DATA_HOME/schedule-playground``, else
    ``~/.local/share/schedule-playground``."""
    env = os.environ.get("PLAYGROUND_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME", "").strip() or Path.home() / ".local" / "share"
    return Path(base) / "schedule-playground"


def _bool(x: Any) -> int | None:
    return None if x is None else int(bool(x))


class Store:
    """The experiment store in ``directory`` (default :func:`data_dir`), created on first use.

    Parameters
    ----------
    directory
        Where ``experiments.sqlite3`` lives; created (with parents) by the first operation.
    max_pages
        Cap the database at this many pages (SQLite's ``max_page_count``): a quota. Writes
        beyond it fail as on a full disk.
    """

    def __init__(self, directory: str | Path | None = None, *, max_pages: int | None = None
                 ) -> None:
        self.directory = Path(directory) if directory is not None else data_dir()
        self.path = self.directory / DB_NAME
        self.max_pages = max_pages
        #: Why history is not being saved (the last failure), or None while all is well. A
        #: failed write is forgotten only when a write succeeds, not when a read does.
        self.problem: str | None = None
        self._write_failed = False
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited through fork is never used
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a crash
            conn.execute("PRAGMA foreign_keys=ON")
            if self.max_pages:
                conn.execute(f"PRAGMA max_page_count={int(self.max_pages)}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(VERSIONS_TABLE)
        for version in sorted(MIGRATIONS):
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_versions")}
            if applied and max(applied) > LATEST:
                raise StoreError(f"history is not being saved: {self.path} has schema version "
                                 f"{max(applied)}, newer than this version's {LATEST}",
                                 where="store")
            if version in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have applied it while this one waited for the lock.
                if conn.execute("SELECT 1 FROM schema_versions WHERE version = ?",
                                (version,)).fetchone() is None:
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_versions VALUES (?, ?)",
                                 (version, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close this process's connection (the next operation opens it again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextmanager
    def _use(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; with ``write``, inside one transaction."""
        with self._lock:
            try:
                conn = self._connect()
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    if write:
                        conn.execute("COMMIT")
                except BaseException:
                    if write and conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except StoreError as e:
                if e.where == "store":
                    self._fail(e.message, write)
                raise
            except (sqlite3.Error, OSError) as e:
                self._fail(f"history is not being saved: {self.path}: {_reason(e)}", write)
                raise StoreError(self.problem, where="store") from None
            if write or not self._write_failed:  # reading says nothing about a full disk
                self.problem, self._write_failed = None, False

    def _fail(self, message: str, write: bool = False) -> None:
        self.problem, self._write_failed = message, write
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def check(self) -> None:
        """Open (create, migrate) the database; raises :class:`StoreError` if unusable."""
        with self._use() as conn:
            conn.execute("SELECT id FROM experiments LIMIT 1").fetchone()

    def schema_version(self) -> int:
        with self._use() as conn:
            return conn.execute("SELECT MAX(version) FROM schema_versions").fetchone()[0]

    # -- experiments ----------------------------------------------------------------------------
    def _insert(self, row: dict) -> int:
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self._use(write=True) as conn:
                    conn.execute(f"INSERT OR IGNORE INTO experiments ({columns}) "
                                 f"VALUES ({marks})", row)
                    return conn.execute("SELECT id FROM experiments WHERE uid = ?",
                                        (row["uid"],)).fetchone()[0]
            except StoreError:
                if attempt + 1 == WRITE_ATTEMPTS or "locked" not in (self.problem or ""):
                    raise
        raise AssertionError("unreachable")

    def record_run(self, chain: Mapping, steps: Sequence, target: str, machine: Mapping, *,
                   status: str, value: Mapping | None = None, error: str = "",
                   detail: str = "", label: str = "", source: str = "", kind: str = "run",
                   parent: int | None = None, created: float | None = None,
                   is_group: bool = False) -> int:
        """Store one run (see :func:`playground.store.record_run`); returns its id."""
        chain = rec.canonical_chain(chain)
        steps = rec.steps_list(steps)
        value = dict(value or {})
        correct = value.get("correct")
        row = {
            "uid": secrets.token_hex(16), "parent_id": parent, "kind": rec.clip(kind, "kind"),
            "is_group": int(is_group), "created": time.time() if created is None else created,
            "source": rec.clip(source, "source"), "chain_key": rec.chain_key(chain),
            "chain_name": rec.chain_name(chain), "chain": rec.to_json(chain),
            "steps": rec.to_json(steps), "n_steps": len(steps),
            "target": rec.clip(target, "target"), "machine_key": rec.machine_key(machine),
            "machine_name": rec.machine_name(machine), "machine": rec.to_json(dict(machine)),
            "status": rec.clip(status, "kind"), "correct": _bool(correct),
            "median_ms": rec.finite(value.get("median_ms")) if correct else None,
            "gflops": rec.finite(value.get("gflops")) if correct else None,
            "result": rec.to_json(value), "error": rec.clip(error, "error"),
            "detail": rec.clip(detail, "detail"), "label": rec.clip(label, "label")}
        return self._insert(row)

    def finish_group(self, group_id: int, status: str = "done") -> None:
        """Close a group: its status, and its best child's time, steps and correctness."""
        with self._use(write=True) as conn:
            best = conn.execute(
                "SELECT steps, n_steps, median_ms, gflops FROM experiments WHERE parent_id = ? "
                "AND correct = 1 AND median_ms IS NOT NULL ORDER BY median_ms LIMIT 1",
                (group_id,)).fetchone()
            any_ok = conn.execute("SELECT MAX(correct) FROM experiments WHERE parent_id = ?",
                                  (group_id,)).fetchone()[0]
            conn.execute("UPDATE experiments SET status = ?, correct = ? WHERE id = ?",
                         (rec.clip(status, "kind"), any_ok, group_id))
            if best is not None:
                conn.execute("UPDATE experiments SET steps = ?, n_steps = ?, median_ms = ?, "
                             "gflops = ? WHERE id = ?", (*best, group_id))

    def list_experiments(self, *, chain: str | None = None, machine: str | None = None,
                         target: str | None = None, since: Any = None, until: Any = None,
                         kind: str | None = None, starred: bool | None = None,
                         parent: int | None = None, everything: bool = False,
                         limit: int | None = None, newest_first: bool = True,
                         timing: bool = False) -> list[dict]:
        """Summaries of experiments (no chain, steps or result), newest first.

        Parameters
        ----------
        chain, machine
            A key (exact) or part of the name (ASCII letters in any case; ``56x56`` matches
            the ``56×56`` of a chain's name).
        target
            ``"cpu"``, ``"cuda"``, ...
        since, until
            Unix seconds, ``datetime``/``date`` or ISO text; a bare date includes its day.
        kind
            ``"run"``, ``"sweep"``, ``"search"``, ...
        starred
            Only starred (True) or unstarred (False) ones.
        parent
            List the children of this group instead of the top level.
        everything
            Top-level records and children alike (dump, benchmarks).
        timing
            Add ``p10_ms``, ``p90_ms`` and ``under_load`` (1, 0 or None: measured under load,
            see :mod:`playground.measure.load`) from the timing record (for charts).
        """
        where, args = [], []
        for column, value, digits in (("chain", chain, 16), ("machine", machine, 12)):
            if value and re.fullmatch(f"[0-9a-f]{{{digits}}}", value):  # a key: indexed
                where.append(f"{column}_key = ?")
                args.append(value)
            elif value:  # "56x56" finds the "56×56" of chain names
                typed = re.sub(r"(?<=\d)x(?=\d)", "×", value)
                where.append(f"{column}_name LIKE ? ESCAPE '\\'")
                args.append("%" + re.sub(r"([%_\\])", r"\\\1", typed) + "%")
        for clause, value in (("target = ?", target), ("kind = ?", kind),
                              ("starred = ?", _bool(starred)),
                              ("created >= ?", _when(since)),
                              ("created <= ?", _when(until, end_of_day=True))):
            if value is not None and value != "":
                where.append(clause)
                args.append(value)
        if parent is not None:
            where.append("parent_id = ?")
            args.append(parent)
        elif not everything:
            where.append("parent_id IS NULL")
        sql = _SUMMARY_SQL if not timing else _SUMMARY_SQL.replace(" FROM experiments e", (
            ", json_extract(result, '$.timing.p10_ms') AS p10_ms, "
            "json_extract(result, '$.timing.p90_ms') AS p90_ms, "
            "json_extract(result, '$.timing.load.under_load') AS under_load "
            "FROM experiments e"))
        sql += " WHERE " + " AND ".join(where) if where else ""
        sql += f" ORDER BY created {'DESC' if newest_first else 'ASC'}, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._use() as conn:
            return _rows(conn.execute(sql, args))

    def get(self, experiment_id: int) -> dict:
        """One experiment in full (chain, steps, machine and result decoded), with
        ``children`` (summaries) for a group."""
        with self._use() as conn:
            row = _rows(conn.execute("SELECT * FROM experiments WHERE id = ?",
                                     (_int_id(experiment_id),)))
        if not row:
            raise StoreError(f"no experiment #{experiment_id}", where="experiment")
        out = _decode(row[0])
        out["children"] = self.list_experiments(parent=out["id"]) if out["is_group"] else []
        return out

    def dump(self) -> list[dict]:
        """Every experiment in full, oldest first (groups before their children)."""
        with self._use() as conn:
            return [_decode(r) for r in _rows(conn.execute(
                "SELECT * FROM experiments ORDER BY created, id"))]

    def count(self) -> int:
        with self._use() as conn:
            return conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]

    def _update(self, experiment_id: int, sql: str, args: tuple) -> None:
        with self._use(write=True) as conn:
            cur = conn.execute(sql, (*args, _int_id(experiment_id)))
            if cur.rowcount == 0:
                raise StoreError(f"no experiment #{experiment_id}", where="experiment")

    def star(self, experiment_id: int, starred: bool = True) -> None:
        self._update(experiment_id, "UPDATE experiments SET starred = ? WHERE id = ?",
                     (int(starred),))

    def annotate(self, experiment_id: int, note: str) -> None:
        """Set the experiment's note (plain text; "" clears it)."""
        self._update(experiment_id, "UPDATE experiments SET note = ? WHERE id = ?",
                     (rec.clip(note, "note"),))

    def delete(self, experiment_id: int) -> None:
        """Delete an experiment (a group with its children)."""
        self._update(experiment_id, "DELETE FROM experiments WHERE id = ?", ())

    def facets(self) -> dict[str, list[dict]]:
        """What the filters offer: ``chains`` and ``machines`` (``key``, ``name``, ``count``)
        and ``targets`` (``key``, ``count``), most used first, over top-level records."""
        out = {}
        with self._use() as conn:
            for facet, cols in (("chains", "chain_key, chain_name"),
                                ("machines", "machine_key, machine_name"), ("targets", "target")):
                rows = conn.execute(f"SELECT {cols}, COUNT(*) FROM experiments WHERE parent_id "
                                    f"IS NULL GROUP BY {cols} ORDER BY COUNT(*) DESC").fetchall()
                out[facet] = [{"key": r[0], "name": r[1] if len(r) == 3 else r[0],
                               "count": r[-1]} for r in rows]
        return out

    def leaderboard(self, chain_key: str, machine_key: str | None = None,
                    target: str | None = None, limit: int = 10) -> list[dict]:
        """The fastest validated schedules of a chain: one row per distinct step list (its
        best run; ``slowest_ms`` its slowest, the spread of re-runs), fastest first; per
        machine when ``machine_key`` is given."""
        where = ["chain_key = ?", "correct = 1", "is_group = 0", "median_ms IS NOT NULL"]
        args: list[Any] = [chain_key]
        for clause, value in (("machine_key = ?", machine_key), ("target = ?", target)):
            if value:
                where.append(clause)
                args.append(value)
        sql = (f"SELECT id, created, label, target, machine_key, machine_name, steps, n_steps, "
               f"MIN(median_ms) AS median_ms, MAX(median_ms) AS slowest_ms, gflops, source, "
               f"COUNT(*) AS runs "
               f"FROM experiments WHERE {' AND '.join(where)} "
               f"GROUP BY machine_key, target, steps ORDER BY median_ms LIMIT {int(limit)}")
        with self._use() as conn:
            rows = _rows(conn.execute(sql, args))
        for r in rows:
            r["steps"] = json.loads(r["steps"])
        return rows

    # -- sessions saved by name ---------------------------------------------------------------
    def save_session(self, name: str, session: Any, note: str = "", target: str = "") -> int:
        """Save (or replace) the session called ``name``; returns its id."""
        name = (name or "").strip()
        if not name:
            raise StoreError("give the session a name", where="session")
        body = _session_json(session)
        now = time.time()
        with self._use(write=True) as conn:
            conn.execute("INSERT INTO sessions (name, note, created, updated, target, session) "
                         "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                         "note = excluded.note, updated = excluded.updated, "
                         "target = excluded.target, session = excluded.session",
                         (rec.clip(name, "name"), rec.clip(note, "note"), now, now,
                          rec.clip(target, "target"), body))
            return conn.execute("SELECT id FROM sessions WHERE name = ?",
                                (rec.clip(name, "name"),)).fetchone()[0]

    def list_sessions(self) -> list[dict]:
        """Saved sessions (``id``, ``name``, ``note``, ``created``, ``updated``, ``target``),
        most recently saved first."""
        with self._use() as conn:
            return _rows(conn.execute("SELECT id, name, note, created, updated, target FROM "
                                      "sessions ORDER BY updated DESC"))

    def load_session(self, name: str) -> dict:
        """The saved session ``name``: its row with ``session`` decoded."""
        with self._use() as conn:
            rows = _rows(conn.execute("SELECT * FROM sessions WHERE name = ?", (name,)))
        if not rows:
            raise StoreError(f"no saved session is called {name!r}", where="session")
        rows[0]["session"] = json.loads(rows[0]["session"])
        return rows[0]

    def delete_session(self, name: str) -> None:
        with self._use(write=True) as conn:
            if conn.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount == 0:
                raise StoreError(f"no saved session is called {name!r}", where="session")

    # -- short links ----------------------------------------------------------------------------
    def share(self, session: Any, target: str = "") -> str:
        """Store the session behind a new unguessable id (144 random bits) and return it."""
        body = _session_json(session)
        share_id = secrets.token_urlsafe(SHARE_BYTES)
        with self._use(write=True) as conn:
            conn.execute("INSERT INTO shares (id, created, target, session) VALUES (?, ?, ?, ?)",
                         (share_id, time.time(), rec.clip(target, "target"), body))
        return share_id

    def load_shared(self, share_id: Any) -> dict:
        """``{"session", "target", "created"}`` behind a short link's id."""
        # The id is never echoed: messages are shown on the page, the id came from a URL.
        if not isinstance(share_id, str) or not SHARE_ID_RE.fullmatch(share_id.strip()):
            raise StoreError("the link's id is not a short-link id (22 to 64 letters, digits, "
                             "- or _)", where="link")
        with self._use() as conn:
            row = conn.execute("SELECT session, target, created FROM shares WHERE id = ?",
                               (share_id.strip(),)).fetchone()
        if row is None:
            raise StoreError("no shared session has this link's id (mistyped, or made on "
                             "another server)", where="link")
        return {"session": json.loads(row[0]), "target": row[1], "created": row[2]}


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename:
        text = f"{e.strerror or text} ({e.filename})"
    return text


def _when(value: Any, *, end_of_day: bool = False) -> float | None:
    try:
        return rec.timestamp(value, end_of_day=end_of_day)
    except PlaygroundError as e:
        raise StoreError(e.message, where=e.where) from None


def _int_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StoreError(f"{value!r} is not an experiment id", where="experiment") from None


def _rows(cursor: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def _decode(row: dict) -> dict:
    for column in _JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def _session_json(session: Any) -> str:
    try:
        body = rec.to_json(rec.session_dict(session))
    except PlaygroundError as e:
        raise StoreError(e.message, where="session") from None
    if len(body) > MAX_SESSION_CHARS:
        raise StoreError(f"the session is too large to store ({len(body):,} characters, the "
                         f"limit is {MAX_SESSION_CHARS:,})", where="session")
    return body

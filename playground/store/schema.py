"""The store's schema, as forward-only migrations: version -> the SQL that brings a database
of the version before up to it.

:mod:`playground.store.db` applies them in order, each in its own transaction, and writes
the version into ``schema_versions``; a database that lists a version newer than
:data:`LATEST` was written by a newer playground and is left alone. A migration is never edited
once released: change the schema by appending one.

Version 1 holds runs; version 2 adds what people do with them (star, note) and the two other
tables (saved sessions, short links); version 3 adds the indexes the page's filters and the
leaderboard read through.
"""

from __future__ import annotations

#: The table of applied versions, created before any migration runs.
VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_versions (
    version INTEGER PRIMARY KEY,
    applied REAL NOT NULL
)"""

#: version -> statements. Times are Unix seconds (REAL); JSON columns hold text.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("""
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,                   -- made by the client: a retried write is one row
    parent_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,                         -- run, or a group's kind: sweep, search, ...
    is_group INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    source TEXT NOT NULL DEFAULT '',            -- page, cli, sweep, search, ...
    chain_key TEXT NOT NULL,
    chain_name TEXT NOT NULL,
    chain TEXT NOT NULL,                        -- normalized chain, JSON
    steps TEXT NOT NULL,                        -- active steps, JSON list
    n_steps INTEGER NOT NULL,
    target TEXT NOT NULL,
    machine_key TEXT NOT NULL,
    machine_name TEXT NOT NULL,
    machine TEXT NOT NULL,                      -- fingerprint, JSON
    status TEXT NOT NULL,
    correct INTEGER,                            -- 1, 0, NULL (did not run)
    median_ms REAL,
    gflops REAL,
    result TEXT NOT NULL,                       -- the job's whole value, timing record included
    error TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT ''
)""",),
    2: (
        "ALTER TABLE experiments ADD COLUMN starred INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE experiments ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL                       -- {"chain", "steps", "cursor"}, JSON
)""",
        """
CREATE TABLE shares (
    id TEXT PRIMARY KEY,                        -- secrets.token_urlsafe: >= 128 random bits
    created REAL NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL
)""",
    ),
    3: (
        "CREATE INDEX experiments_created ON experiments (created)",
        "CREATE INDEX experiments_parent ON experiments (parent_id)",
        "CREATE INDEX experiments_chain ON experiments (chain_key, created)",
        "CREATE INDEX experiments_board ON experiments "
        "(chain_key, machine_key, target, median_ms) WHERE correct = 1 AND is_group = 0",
    ),
}

LATEST = max(MIGRATIONS)

"""The experiment store: every run, sweep and search, and saved sessions, in SQLite.

One module owns the database; the rest of the library talks to it through its small API.

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.errors`.
"""

"""Worker processes: where user schedules are compiled and run, never in the server.

Owns the pool of warm child processes with timeouts and memory caps (:mod:`.pool`), a
server's quick and long pools behind one ``run`` (:mod:`.pools`), the fair queue that lets
users take turns for workers (:mod:`.fair`), the machine-wide measurement lock (:mod:`.lock`),
the child's main loop and its guardian (:mod:`.main`), the front door for jobs (:mod:`.job_table`:
every job declared once, with its pool and time limit, and called through its ``Job``) and the
registry the child finds their implementations in (:mod:`.registry`). The jobs themselves live
in :mod:`playground.jobs`, above every layer they use; the worker loads them by name.

May import: :mod:`playground.errors` only.
"""

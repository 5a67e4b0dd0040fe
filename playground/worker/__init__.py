"""Worker processes: where user schedules are compiled and run, never in the server.

Owns the pool of warm child processes with timeouts and memory caps (:mod:`.pool`), a
server's quick and long pools behind one ``run`` (:mod:`.pools`), the fair queue that lets
users take turns for workers (:mod:`.fair`), the machine-wide measurement lock (:mod:`.lock`),
the child's main loop and its guardian (:mod:`.main`), the job registry (:mod:`.registry`) and
the jobs themselves, one module per capability (:mod:`.jobs`).

May import: :mod:`playground.errors` only, except :mod:`playground.worker.jobs`, which runs in
the child and may import the whole library (but never streamlit).
"""

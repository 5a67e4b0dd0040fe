"""Timing kernels, and the machine they run on.

Owns all kernel timing (:mod:`.timing`) with its one sampling method (:mod:`.sampling`), the
interval of a comparison (:mod:`.stats`), the machine's load during a measurement
(:mod:`.load`) and the machine's facts: cores, vector width, caches (:mod:`.machine`) and
its measured peak (:mod:`.peak`, measured by a worker job it calls through the job's
declaration in :mod:`playground.worker.job_table`). Nothing here compiles a schedule; it times
what :mod:`playground.compile` built.

May import: :mod:`playground.errors`, :mod:`playground.worker`.
"""

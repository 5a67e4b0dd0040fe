"""The worker's jobs, one module per capability; every module here is loaded by the worker.

:func:`playground.worker.registry.load_jobs` imports every module of this package (found on
disk), so a new job needs only a module here with ``@job("name")`` functions. These modules
run in the worker process only and may import the whole library.
"""

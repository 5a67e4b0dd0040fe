"""The worker's jobs, one module per capability; every module here is loaded by the worker.

Each job is declared once in :mod:`playground.worker.job_table` (name, pool, time limit and
the module here that implements it) and implemented here by a function decorated
``@job(<its Job>)`` (:func:`playground.worker.registry.job`).
:func:`playground.worker.registry.load_jobs` imports every module of this package (found on
disk) in the worker process only, and checks each declaration has its implementation. Callers
never import this package: they call a job's :meth:`~playground.worker.job_table.Job.call`.

Modules: :mod:`.kernel` (lower, generate code, validate and time a schedule), :mod:`.paired`
(kernels timed in paired rounds), :mod:`.facts` (analysis, tile regions, the machine's peaks),
:mod:`.metaschedule` (MetaSchedule tuning, the numpy reference's time), :mod:`.rpc` (validate
and time on a TVM RPC server), :mod:`.onnx_upload` (read and cut an ONNX model).

May import: the whole library (it sits above every other subpackage), never streamlit.
"""

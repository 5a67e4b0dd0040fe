"""Exploring what a schedule costs: analysis, halos, sweeps, tuning and comparisons.

Owns the schedule analysis read from scheduled and lowered TIR (:mod:`.analysis`, with the
iteration-space model in :mod:`.iteration_space` and the traffic model in :mod:`.traffic`),
tile and halo regions (:mod:`.halo`), parameter sweeps (:mod:`.sweep`; points measured in
parallel on a measurement farm in :mod:`.sweep_parallel`; Pareto front, CSV and figures in
:mod:`.sweep_report`), the MetaSchedule baseline as steps (:mod:`.tuning`) and the
comparison table (:mod:`.compare`).

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.compile`,
:mod:`playground.measure`,
:mod:`playground.worker`, :mod:`playground.io`, :mod:`playground.service`,
:mod:`playground.store` (sweeps record their points), :mod:`playground.errors`,
:mod:`playground.pyparse`.
"""

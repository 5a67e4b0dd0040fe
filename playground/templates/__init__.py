"""Schedule templates for any chain on any machine, the search over them, and the verdict.

A template takes any chain the builder accepts and the machine's facts and emits ordinary
playground steps (editable, undoable, exportable), never an opaque kernel. :mod:`.stages` cuts
a chain into window layers with their epilogues; :mod:`.conv` tiles convolutions (vectorized
along output channels, columns or the batch) and pools in registers and folds epilogues into
the write-back; :mod:`.plan` turns a plan (tiles per stage, fused groups at row tiles) into
steps through a :class:`~.recorder.Recorder`; :mod:`.space` ranks the choices from the
machine's vector width, registers and caches; :mod:`.search` measures them within a budget;
:mod:`.verdict` answers "fuse or not" with both schedules timed side by side. For CUDA,
:mod:`.cuda` fuses conv -> elementwise ops -> conv into one kernel with the intermediate in
shared memory per thread block (tiles within 48 KiB and 1024 threads), and
:mod:`.cuda_check` builds its plans in the worker (compile-only without a GPU).

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.compile`,
:mod:`playground.measure`,
:mod:`playground.explore`, :mod:`playground.worker`, :mod:`playground.service`,
:mod:`playground.store` (a search is recorded as one group), :mod:`playground.errors`.
"""

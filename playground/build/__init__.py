"""From a scheduled chain to machine code, and the machine it runs on.

Owns compilation targets (:mod:`.targets`), the lowered TIR and generated code
(:mod:`.lowering`) with the playground's own tile-local lowering step (:mod:`.tile_local`),
constant-weight builds that pack the weights once (:mod:`.constant`), the CUDA checks TVM
skips and their CPU emulation (:mod:`.gpu`), all kernel timing (:mod:`.timing`), the interval
of a comparison (:mod:`.stats`) and the machine's facts: cores, vector width, caches, peak
(:mod:`.machine`). Functions that compile run in the worker process only.

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.errors`.
"""

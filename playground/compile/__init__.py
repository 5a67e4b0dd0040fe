"""From a scheduled chain to machine code.

Owns compilation targets (:mod:`.targets`), the lowered TIR and generated code
(:mod:`.lowering`) with the playground's own tile-local lowering step (:mod:`.tile_local`),
NaN-poisoned validation builds (:mod:`.poison`), constant-weight builds that pack the weights
once (:mod:`.constant`), and the CUDA checks TVM skips with their CPU emulation
(:mod:`.gpu`). Functions that compile run in the worker process only.

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.errors`.
"""

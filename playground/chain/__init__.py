"""Chains: what the user builds, as plain data, and the two programs derived from it.

Owns the chain's normalized JSON form and its checks (:mod:`.spec`), the TensorIR function
built from it (:mod:`.compute`) and the float64 numpy reference every kernel is checked
against (:mod:`.reference`), and the editor's fields applied one by one (:mod:`.edits`).
``compute`` and ``reference`` import only tvm / numpy: exported scripts embed their source
verbatim.

May import: :mod:`playground.errors`. Nothing else of the library.
"""

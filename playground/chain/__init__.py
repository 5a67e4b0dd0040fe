"""Chains: what the user builds, as plain data, and the two programs derived from it.

Owns the op table, one record per layer op with every per-op fact (:mod:`.ops`), the chain's
normalized JSON form and its checks (:mod:`.spec`), the TensorIR function built from it
(:mod:`.compute`) and the float64 numpy reference every kernel is checked against
(:mod:`.reference`), and the editor's fields applied one by one (:mod:`.edits`).
``ops``, ``compute`` and ``reference`` import only tvm / numpy (and each other): exported
scripts embed their source verbatim.

May import: :mod:`playground.errors`. Nothing else of the library.
"""

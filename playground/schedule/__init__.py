"""Schedules: a chain plus a list of plain steps, replayed on TensorIR.

Owns the primitive catalog and the step format (:mod:`.steps`), the kinds of primitive
arguments (:mod:`.kinds`), loops named by their loop variable (:mod:`.loops`), the one reader
of TIR that every other package uses to look inside a function (:mod:`.ir`: statements,
blocks, loops, guards), cached replay of steps on a fresh ``s_tir.Schedule``
(:mod:`.replay`), the immutable undo/redo :class:`~.session.Session`, and the text views of a
schedule (:mod:`.views`). Applying steps is symbolic and fast; nothing here compiles or runs a
kernel.

May import: :mod:`playground.chain`, :mod:`playground.errors`, :mod:`playground.pyparse`.
"""

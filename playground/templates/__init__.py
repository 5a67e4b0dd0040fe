"""Schedule templates and the search over them.

A template takes any chain the builder accepts and the machine's facts and emits ordinary
playground steps (editable, undoable, exportable), never an opaque kernel; the search measures
template choices and parameters and returns the best as steps.

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.build`,
:mod:`playground.explore`, :mod:`playground.worker`, :mod:`playground.service`,
:mod:`playground.errors`.
"""

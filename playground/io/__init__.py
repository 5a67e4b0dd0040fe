"""Sessions in and out: standalone scripts, presets, pasted JSON and URL state.

Owns the export of a session as a script that needs only tvm and numpy (:mod:`.export`), the
reading back of scripts without executing them (:mod:`.script_import`, its safety scan in
:mod:`.script_scan`), shareable URL state (:mod:`.url_state`) and the presets in
``schedules/`` (:mod:`.presets`).

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.compile`,
:mod:`playground.measure` (the
export embeds :mod:`playground.compile.poison`), :mod:`playground.errors`,
:mod:`playground.pyparse`.
"""

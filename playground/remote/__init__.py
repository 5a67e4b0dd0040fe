"""Remote devices through TVM RPC: build here, validate and time on a tracker's server.

Owns the device description and the tracker protocol (:mod:`.device`), the remote run itself
(:mod:`.run`) and a real tracker with servers on loopback for tests and demos
(:mod:`.cluster`).

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.compile`,
:mod:`playground.measure`,
:mod:`playground.errors`.
"""

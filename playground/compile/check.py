"""The one check of a kernel's result: NaN-poisoned output, two input seeds, float64 reference.

Every place that calls a kernel correct goes through :func:`check`, and every kernel that is
timed first passes :func:`time_checked`: the local ``run`` and ``rounds`` jobs, the remote and
farm path (:mod:`playground.remote.run`, which uploads the same two builds), the tuning job
and exported scripts, which embed this module verbatim (:mod:`playground.io.export`). So a
search on a measurement farm refuses exactly what a search on this machine refuses.

1. :func:`check` runs the *validation build* (on the CPU every intermediate allocation is
   NaN-filled where allocated, :mod:`playground.compile.poison`) on the inputs of two seeds,
   each into a NaN-filled output and against its own reference: a kernel that reads memory it
   never wrote, or leaves an output element unwritten, shows NaN the same way every time, and
   a kernel right by accident on one input is unlikely to be right on two.
2. :func:`time_checked` runs the *timing build* (not poisoned: the fills cost time) once on
   the first seed's input, compares it too, and only then hands it to the caller's timing
   function (:func:`playground.measure.timing.measure`, or in a script the embedded
   :func:`playground.measure.sampling.take_samples`): a timing build that disagrees with the
   validation build is not timed.

The module imports only tvm, numpy and the names an exported script embeds as well
(:mod:`playground.chain.reference`, :mod:`playground.compile.constant`). ``ex`` is anything
with ``ex["main"]`` (and ``ex["pack"]`` with constant weights): a ``tvm.compile`` executable or
a module loaded on an RPC server.
"""

import numpy as np
import tvm

from playground.chain.reference import compare, make_inputs, reference_output
from playground.compile.constant import pack_once

#: The kernel is checked on the inputs of these seeds (offset by the caller's seed).
VALIDATION_SEEDS = (0, 1)


def reference_for(chain, seed):
    """``(inputs, expected)``: the chain's inputs of ``seed`` and its float64 reference output."""
    inputs = make_inputs(chain, seed)
    return inputs, reference_output(chain, inputs)


def run_poisoned(ex, inputs, expected, dtype, dev, packed=()):
    """Call ``ex["main"]`` once on ``inputs`` into a NaN-filled output and compare it.

    With ``packed`` buffers (constant weights: ``(name, shape, dtype)``), ``pack`` first runs
    into NaN-filled ones. Returns ``(arguments, comparison)``: the arguments in ``main``'s
    order (inputs, output, packed buffers), ready to be timed, and :func:`compare`'s dict.
    """
    tensors = [tvm.runtime.tensor(a, dev) for _, a in inputs]
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, dtype=dtype), dev)
    bufs = pack_once(ex, tensors, list(packed), dev)
    ex["main"](*tensors, out, *bufs)
    dev.sync()
    return [*tensors, out, *bufs], compare(out.numpy(), expected, dtype)


def check(ex, chain, dev, *, seed=0, packed=(), reference=reference_for):
    """Run the validation build ``ex`` on every seed of :data:`VALIDATION_SEEDS` (offset by
    ``seed``); returns the worst comparison (the first wrong one, else the largest error) with
    ``seed`` (the input it came from) and ``validation_seeds``.

    ``reference(chain, seed)`` gives ``(inputs, expected)`` (a caller may cache it).
    """
    worst = None
    for offset in VALIDATION_SEEDS:
        inputs, expected = reference(chain, seed + offset)
        _, found = run_poisoned(ex, inputs, expected, chain["input"]["dtype"], dev, packed)
        found["seed"] = seed + offset
        if worst is None or not found["correct"] or (
                worst["correct"] and found["max_abs_error"] > worst["max_abs_error"]):
            worst = found
        if not found["correct"]:
            break
    worst["validation_seeds"] = [seed + offset for offset in VALIDATION_SEEDS]
    return worst


def time_checked(ex, chain, dev, time_kernel, *, seed=0, packed=(), reference=reference_for):
    """Run the timing build ``ex`` once on ``seed``'s input; if it agrees with the reference,
    time it: ``{"timing": time_kernel(ex, arguments)}``. Otherwise the comparison (``correct``
    False) with a message saying the timing build disagrees, and no timing."""
    inputs, expected = reference(chain, seed)
    args, agreed = run_poisoned(ex, inputs, expected, chain["input"]["dtype"], dev, packed)
    if not agreed["correct"]:
        agreed["message"] = ("the timing build computes a different result than the validation "
                             f"build ({agreed['message']})")
        return agreed
    return {"timing": time_kernel(ex, args)}

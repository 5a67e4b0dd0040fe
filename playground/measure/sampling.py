"""How a kernel is timed: warm-up, calibration and samples (:func:`take_samples`), and the
parameters every timing of the project uses (:data:`METHOD`).

This module imports nothing but :mod:`math`: exported scripts embed it verbatim
(:mod:`playground.io.export`), so a script run on its own times its kernel with the very code
and parameters of the ``run`` job, and ``auto``'s printed time is what ``run`` of its exported
script gives. :func:`playground.measure.timing.measure` wraps it with the statistics and the
machine's load.

The method, chosen by measurement (``benchmarks/repro.py``, table in ``benchmarks/README.md``):

1. one call (TVM's evaluator discards one more before each measurement), then calls for at
   least ``warmup_ms``: the thread pool wakes and stops parking, every buffer's pages are
   faulted in (first touch), the clock settles;
2. ``number`` (calls per sample) calibrated so that a sample lasts ``min_repeat_ms``;
3. ``repeat`` samples; the caller reports their median (outliers kept in the samples).

Many short samples rather than a few long ones: a burst of another process spoils the few
samples it overlaps, which the median ignores, instead of lengthening every long sample a
little.
"""

from __future__ import annotations

import math

#: Upper bound on calls per sample, so that a kernel timed at ~0 cannot make calibration explode.
MAX_NUMBER = 1_000_000
#: The timing method of every ``run`` job, comparison and exported script.
METHOD = {"repeat": 30, "min_repeat_ms": 10.0, "warmup_ms": 100.0}


def take_samples(mod, args, dev, *, func_name="main", number=None, repeat=METHOD["repeat"],
                 min_repeat_ms=METHOD["min_repeat_ms"], warmup=1,
                 warmup_ms=METHOD["warmup_ms"], cache_flush_bytes=0, during=None):
    """Samples of ``mod[func_name](*args)`` on ``dev``, in ms per call, and ``number``.

    ``mod`` is a ``tvm.runtime.Module`` (local or remote). ``number=None`` calibrates it so
    that a sample lasts at least ``min_repeat_ms``. ``during``, a context manager (a load
    probe), is entered around the samples only. Returns ``(samples_ms, number)``.
    """

    def evaluate(calls, samples, flush):
        timer = mod.time_evaluator(func_name, dev, number=calls, repeat=samples,
                                   min_repeat_ms=0, cache_flush_bytes=flush)
        return [float(s) * 1e3 for s in timer(*args).results]

    calls = int(warmup)
    per_call_ms = evaluate(calls, 1, 0)[0]
    if warmup_ms > 0 and per_call_ms * calls < warmup_ms:
        calls = min(MAX_NUMBER, math.ceil(warmup_ms / per_call_ms) if per_call_ms > 0 else 1000)
        per_call_ms = evaluate(calls, 1, 0)[0]
    if number is None:
        # The warm-up estimate is noisy for tiny kernels: refine it on a batch lasting about a
        # fifth of a sample before choosing ``number``.
        while per_call_ms * calls < min_repeat_ms / 5 and calls < MAX_NUMBER:
            wanted = math.ceil(min_repeat_ms / 5 / per_call_ms) if per_call_ms > 0 else calls * 10
            calls = min(MAX_NUMBER, max(calls * 2, wanted))
            per_call_ms = evaluate(calls, 1, 0)[0]
        wanted = math.ceil(min_repeat_ms / per_call_ms) if per_call_ms > 0 else MAX_NUMBER
        number = min(max(wanted, 1), MAX_NUMBER)
    if during is None:
        return evaluate(int(number), int(repeat), int(cache_flush_bytes)), int(number)
    with during:
        samples = evaluate(int(number), int(repeat), int(cache_flush_bytes))
    return samples, int(number)

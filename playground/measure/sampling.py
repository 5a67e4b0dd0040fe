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
3. ``repeat`` samples; the caller reports their median (outliers kept in the samples);
4. while the samples are *disturbed* (their median more than :data:`DISTURBED` times their
   10th percentile: a burst of other work covered many of them), up to :data:`EXTEND` more
   series of ``repeat`` samples, so that a burst of a few hundred ms covers a smaller share
   of them. On the quiet Xeon one fresh-process run in four had a 0.5 ms kernel's median
   lifted 16% this way (samples at 0.49 and at 0.9 ms, no other process visible in the VM).

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
#: A series is *disturbed* when its median exceeds its 10th percentile by this factor: on a
#: quiet machine the two are within 2-4% (``benchmarks/repro.py``); a burst of the host's
#: other work (invisible from inside a VM, 0.2-0.5 s long) that covers half the samples
#: lifts the median 15-20%.
DISTURBED = 1.08
#: At most this many more series of ``repeat`` samples are taken while the samples so far
#: are disturbed (only for series of at least :data:`MIN_SERIES` samples).
EXTEND = 2
MIN_SERIES = 10


def _disturbed(samples):
    """Whether the median of ``samples`` is more than :data:`DISTURBED` times their 10th
    percentile (nearest rank; pure Python: exported scripts embed this module)."""
    ordered = sorted(samples)
    n = len(ordered)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    low = ordered[max(0, math.ceil(0.1 * n) - 1)]
    return low > 0 and median > DISTURBED * low


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
    def series():
        samples = evaluate(int(number), int(repeat), int(cache_flush_bytes))
        more = EXTEND if repeat >= MIN_SERIES else 0
        while more and _disturbed(samples):  # a burst covered many samples: dilute it
            samples += evaluate(int(number), int(repeat), int(cache_flush_bytes))
            more -= 1
        return samples

    if during is None:
        return series(), int(number)
    with during:
        samples = series()
    return samples, int(number)

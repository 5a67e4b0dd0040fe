"""Tests of :mod:`playground.measure.timing`: the statistics (fast) and a real kernel (slow).

No assertion depends on how fast the machine is: only on the consistency of the record.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from playground.errors import PlaygroundError
from playground.measure.timing import PythonFunction, Timing, measure


def _consistent(t: Timing) -> None:
    assert t.min_ms <= t.p10_ms <= t.median_ms <= t.p90_ms <= t.max_ms
    assert len(t.samples_ms) == t.repeats
    assert min(t.samples_ms) == t.min_ms and max(t.samples_ms) == t.max_ms
    assert t.number >= 1 and t.spread >= 0


def test_from_samples_statistics():
    t = Timing.from_samples([4.0, 1.0, 3.0, 2.0, 5.0], number=7)
    assert (t.min_ms, t.median_ms, t.max_ms) == (1.0, 3.0, 5.0)
    assert t.p10_ms == pytest.approx(1.4) and t.p90_ms == pytest.approx(4.6)
    assert t.spread == pytest.approx((4.6 - 1.4) / 3.0)
    assert t.repeats == 5 and t.number == 7
    assert t.samples_ms == (4.0, 1.0, 3.0, 2.0, 5.0)  # order kept
    _consistent(t)


def test_gflops_and_dict_round_trip():
    t = Timing.from_samples([2.0, 2.0], number=1)
    assert t.gflops(4e9) == pytest.approx(2000.0)  # 4 GFLOP in 2 ms
    d = t.to_dict()
    assert isinstance(d["samples_ms"], list)
    assert Timing.from_dict(d) == t


def test_from_samples_rejects_empty():
    with pytest.raises(PlaygroundError):
        Timing.from_samples([], number=1)


@pytest.mark.parametrize("kwargs, name", [({"repeat": 0}, "repeat"), ({"number": 0}, "number"),
                                          ({"min_repeat_ms": -1}, "min_repeat_ms"),
                                          ({"warmup": 0}, "warmup")])
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(PlaygroundError, match=name):
        measure(object(), [], None, **kwargs)


def test_rejects_a_non_module():
    with pytest.raises(PlaygroundError, match="not a compiled TVM module"):
        measure(object(), [], None)


def test_python_code_is_timed_by_the_same_method():
    """A Python function (the numpy reference's time) goes through measure's warm-up,
    calibration and samples like a kernel, with the load of this machine."""
    calls = []

    def work() -> None:
        calls.append(1)
        time.sleep(0.002)

    t = measure(PythonFunction(work), [], None, repeat=3, min_repeat_ms=5, warmup_ms=0)
    _consistent(t)
    assert t.repeats == 3 and t.min_ms >= 2.0 and t.load is not None
    # One estimate (one call plus the one not counted), then 3 samples of `number` calls
    # (plus the one not counted).
    assert len(calls) == 2 + 1 + 3 * t.number


@pytest.fixture(scope="module")
def vector_add():
    tvm = pytest.importorskip("tvm")
    from tvm import te

    n = 1 << 14
    a = te.placeholder((n,), name="A")
    b = te.placeholder((n,), name="B")
    c = te.compute((n,), lambda i: a[i] + b[i], name="C")
    ex = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b, c])}), target="llvm")
    dev = tvm.cpu()
    x = tvm.runtime.tensor(np.arange(n, dtype="float32"), dev)
    out = tvm.runtime.empty((n,), "float32", dev)
    return ex, [x, x, out], dev, n


@pytest.mark.slow
def test_measure_vector_add_calibrates_number(vector_add):
    ex, args, dev, n = vector_add
    t = measure(ex, args, dev, repeat=5, min_repeat_ms=5)
    _consistent(t)
    assert t.repeats == 5
    assert t.number > 1  # a 16k-element add takes microseconds: many calls per sample
    assert t.gflops(n) > 0
    np.testing.assert_allclose(args[2].numpy(), 2 * args[0].numpy())


@pytest.mark.slow
def test_measure_module_with_fixed_number_and_cache_flush(vector_add):
    ex, args, dev, _ = vector_add
    t = measure(ex.mod, args, dev, func_name="main", number=3, repeat=4,
                cache_flush_bytes=1 << 20)
    _consistent(t)
    assert (t.repeats, t.number) == (4, 3)


@pytest.mark.slow
def test_measure_unknown_function_fails(vector_add):
    ex, args, dev, _ = vector_add
    with pytest.raises(Exception, match="nope"):
        measure(ex, args, dev, func_name="nope", number=1, repeat=1)


class _Scripted:
    """A module whose evaluator returns the given series of samples (ms), one per call with
    ``repeat > 1``; single-sample calls (warm-up, calibration) take 1 ms."""

    def __init__(self, series):
        self.series = list(series)
        self.taken = 0

    def time_evaluator(self, func_name, dev, number=1, repeat=1, min_repeat_ms=0,
                       cache_flush_bytes=0):
        def timer(*args):
            if repeat == 1:
                return type("R", (), {"results": (1e-3,)})
            self.taken += 1
            return type("R", (), {"results": tuple(v * 1e-3 for v in self.series.pop(0))})
        return timer


BURST = [0.9] * 16 + [0.5] * 14  # a burst of other work covers half the series
CLEAN = [0.5, 0.49, 0.51] * 10


def test_a_disturbed_series_is_extended_until_the_burst_is_diluted():
    from playground.measure.sampling import take_samples

    mod = _Scripted([BURST, CLEAN, CLEAN])
    samples, _ = take_samples(mod, [], None, number=1, repeat=30, warmup_ms=0)
    assert mod.taken == 2 and len(samples) == 60  # one more series was enough
    assert Timing.from_samples(samples, 1).median_ms == pytest.approx(0.5, abs=0.01)
    assert samples[:30] == pytest.approx(BURST)  # kept, not hidden


def test_extension_is_bounded_and_quiet_series_are_not_extended():
    from playground.measure.sampling import EXTEND, take_samples

    noisy = _Scripted([BURST] * 5)
    samples, _ = take_samples(noisy, [], None, number=1, repeat=30, warmup_ms=0)
    assert noisy.taken == 1 + EXTEND and len(samples) == 30 * (1 + EXTEND)
    quiet = _Scripted([CLEAN])
    assert len(take_samples(quiet, [], None, number=1, repeat=30, warmup_ms=0)[0]) == 30
    short = _Scripted([BURST[:3]])  # paired rounds take 3 samples: never extended
    assert len(take_samples(short, [], None, number=1, repeat=3, warmup_ms=0)[0]) == 3

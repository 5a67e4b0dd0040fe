"""All kernel timing, in one function: :func:`measure`, returning a :class:`Timing`.

Timing follows Triton's ``do_bench`` recipe on top of TVM's ``time_evaluator`` (which times on
the device itself, so it works the same for a local module and for one loaded over RPC); the
samples are taken by :func:`playground.measure.sampling.take_samples` (embedded verbatim in
exported scripts, so they time the same way), with the parameters of
:data:`~playground.measure.sampling.METHOD`:

1. warm up (first calls pay for page faults, thread-pool start-up, lazy initialization);
2. calibrate ``number`` (calls averaged per sample) so that one sample lasts at least
   ``min_repeat_ms``;
3. take ``repeat`` samples and report the median with percentiles and a spread, never a bare
   float (outliers stay in ``samples_ms``).

Run it inside a job holding the measurement lock (``WorkerPool.run(..., exclusive=True)``) so
that no other timing shares the CPU. Other processes still may: every timing made on this
machine carries the load it ran under (:class:`~playground.measure.load.Load`, taken while the
samples ran), so that a time measured under load is flagged wherever it is shown or stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from playground.errors import PlaygroundError
from playground.measure.load import Load, LoadProbe
from playground.measure.sampling import METHOD, take_samples


@dataclass(frozen=True)
class Timing:
    """Summary of ``repeat`` samples; every ``*_ms`` value is milliseconds per call.

    Attributes
    ----------
    median_ms, min_ms, max_ms, p10_ms, p90_ms
        Statistics of the samples (ms per call); percentiles interpolate linearly.
    spread
        ``(p90_ms - p10_ms) / median_ms``, dimensionless: 0.05 means the middle 80 % of the
        samples lie within 5 % of the median.
    repeats
        Number of samples.
    number
        Calls averaged in each sample.
    samples_ms
        The samples (ms per call), in the order taken.
    load
        The machine's load while the samples ran; ``None`` where it is not known (records
        made before it was recorded, a kernel timed on another machine).
    """

    median_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    spread: float
    repeats: int
    number: int
    samples_ms: tuple[float, ...]
    load: Load | None = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], number: int,
                     load: Load | None = None) -> Timing:
        """Summarize samples given in milliseconds per call (taken under ``load``)."""
        if not samples_ms:
            raise PlaygroundError("Timing.from_samples: no samples")
        data = np.asarray(samples_ms, dtype="float64")
        median = float(np.median(data))
        p10, p90 = (float(v) for v in np.percentile(data, [10, 90]))
        spread = (p90 - p10) / median if median > 0 else 0.0
        return cls(median_ms=median, min_ms=float(data.min()), max_ms=float(data.max()),
                   p10_ms=p10, p90_ms=p90, spread=spread, repeats=len(data), number=int(number),
                   samples_ms=tuple(float(v) for v in data), load=load)

    @classmethod
    def from_dict(cls, data: dict) -> Timing:
        """Inverse of :meth:`to_dict` (for results that crossed the worker's JSON pipe).

        Records written before the load was recorded (no ``load`` key) read with ``load=None``.
        """
        load = data.get("load")
        return cls(**{**data, "samples_ms": tuple(data["samples_ms"]),
                      "load": Load.from_dict(load) if load else None})

    @property
    def under_load(self) -> bool | None:
        """Measured under load (:attr:`Load.under_load`); ``None`` when the load is unknown."""
        return None if self.load is None else self.load.under_load

    def gflops(self, flop: float) -> float:
        """Throughput in GFLOP/s of a kernel doing ``flop`` floating-point operations per call,
        at the median time."""
        return flop / (self.median_ms * 1e-3) / 1e9 if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict:
        """Plain JSON-able fields (``samples_ms`` as a list)."""
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "spread": self.spread,
                "repeats": self.repeats, "number": self.number,
                "samples_ms": list(self.samples_ms),
                "load": self.load.to_dict() if self.load is not None else None}


def _check(name: str, value: float | None, low: float) -> None:
    if value is not None and not value >= low:
        raise PlaygroundError(f"measure: {name} must be >= {low:g}, got {value!r}")


def measure(func_or_executable: Any, args: Sequence[Any], dev: Any, *, func_name: str = "main",
            number: int | None = None, repeat: int = METHOD["repeat"],
            min_repeat_ms: float = METHOD["min_repeat_ms"], warmup: int = 1,
            warmup_ms: float = METHOD["warmup_ms"], cache_flush_bytes: int = 0,
            load_probe: LoadProbe | None = None) -> Timing:
    """Time one function of a compiled module; the only timing code of the project.

    Parameters
    ----------
    func_or_executable
        What ``tvm.compile`` returns (a ``tvm.runtime.Executable``; its ``.mod`` is used), a
        ``tvm.runtime.Module``, local or remote (``remote.load_module(...)``), or a
        :class:`PythonFunction`.
    args
        The function's arguments (tensors on ``dev``), outputs included.
    dev
        The device to time on (``tvm.cpu()``, ``tvm.cuda()``, ``remote.cpu(0)``).
    func_name
        The function of the module to time.
    number
        Calls averaged per sample. ``None``: calibrated so that one sample lasts at least
        ``min_repeat_ms`` ms.
    repeat
        Number of samples (>= 1).
    min_repeat_ms
        Minimum duration of one sample in milliseconds, used only when ``number`` is ``None``.
    warmup
        Calls before calibration, used only as a first estimate of the time per call (>= 1;
        TVM's evaluator also discards one extra call before every measurement).
    warmup_ms
        Then keep calling for at least this long (ms) before calibrating and sampling: wakes
        the thread pool, faults in the pages of every buffer, lets the clock settle.
    cache_flush_bytes
        Bytes of CPU cache to flush before each sample (0: none). It flushes *before each
        sample*, not each call: with ``number > 1`` later calls run warm; pass ``number=1`` for
        cold-cache timings.
    load_probe
        Measures the load while the samples run. Default: this process on this machine for a
        local ``dev``; none for a device reached over RPC (its machine is not this one, unless
        the caller says so with a probe of the server's processes).

    Returns
    -------
    Timing
        Milliseconds per call: median, min, max, percentiles, spread, raw samples and load.

    Raises
    ------
    PlaygroundError
        For invalid arguments, or a module that cannot be timed.
    """
    _check("repeat", repeat, 1)
    _check("number", number, 1)
    _check("min_repeat_ms", min_repeat_ms, 0)
    _check("warmup", warmup, 1)
    _check("warmup_ms", warmup_ms, 0)
    _check("cache_flush_bytes", cache_flush_bytes, 0)
    mod = getattr(func_or_executable, "mod", func_or_executable)
    if not hasattr(mod, "time_evaluator"):
        raise PlaygroundError(
            f"measure: {type(func_or_executable).__name__} is not a compiled TVM module")

    if load_probe is None and not _is_remote(dev):
        load_probe = LoadProbe()
    samples, number = take_samples(mod, args, dev, func_name=func_name, number=number,
                                   repeat=int(repeat), min_repeat_ms=min_repeat_ms,
                                   warmup=int(warmup), warmup_ms=warmup_ms,
                                   cache_flush_bytes=int(cache_flush_bytes), during=load_probe)
    return Timing.from_samples(samples, number, load_probe.load if load_probe else None)


class PythonFunction:
    """Python code timed by :func:`measure` as a kernel is: the warm-up, calibration and samples
    of :data:`~playground.measure.sampling.METHOD` (the numpy reference's time, say).

    It offers what :func:`measure` uses of a TVM module: ``time_evaluator(name, dev, number,
    repeat, ...)`` returns a function whose ``results`` are seconds per call, one per sample,
    after one call that is not counted (as TVM's evaluator discards one). Pass ``dev=None``.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def time_evaluator(self, func_name: str, dev: Any, number: int = 1, repeat: int = 1,
                       min_repeat_ms: float = 0, cache_flush_bytes: int = 0):
        def timer(*args: Any) -> SimpleNamespace:
            self.func(*args)
            results = []
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(number):
                    self.func(*args)
                results.append((time.perf_counter() - start) / number)
            return SimpleNamespace(results=tuple(results))

        return timer


def _is_remote(dev: Any) -> bool:
    """A device of an RPC session (TVM encodes the session in device types >= 128)."""
    try:
        return int(dev.dlpack_device_type()) >= 128
    except (AttributeError, TypeError, ValueError):
        return False

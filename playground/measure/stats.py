"""How sure a comparison is: the ratio of two kernels' times with a bootstrap interval.

Two kernels timed once each cannot be told apart at 5%: on a shared machine one sample of the
same kernel can be twice another. A comparison here is therefore made of *paired, alternating
rounds*: round ``i`` times the baseline and then the candidate (back to back, so that a change
in the machine's load hits both), and gives one ratio ``baseline_ms / candidate_ms``. The
answer is the median of the rounds' ratios with a percentile-bootstrap interval over the rounds
(resampled with a fixed seed, so the same rounds always give the same interval)::

    r = compare_rounds([4.46, 4.51, 4.40, 4.49], [5.50, 5.44, 5.61, 5.47])
    r.ratio, r.low, r.high        # 0.81, 0.79, 0.83: the candidate is ~19% slower
    decide(r)                     # "slower": the whole interval is below 1/1.05

The call (:func:`decide`) is "faster" or "slower" only when the *whole* interval lies outside
the :data:`BAND` (5%) around 1, else "no difference (within noise)"; a call that must hold when
measured again (the fuse-or-not verdict) asks the interval to clear the band by its own width.
The median and a median-based bootstrap keep one wild round (another process woke up for
40 ms) from moving the answer: one round of seven is never the median, and a resample has to
draw it four times out of seven to make it one.

Pure: numpy only, no TVM; the verdict, the search, the comparison table and the sweep use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from playground.errors import PlaygroundError

#: Ratios within this factor of 1 (either way) are "no difference".
BAND = 1.05
#: Coverage of the interval.
CONFIDENCE = 0.95
#: Bootstrap resamples: the percentiles of 2000 medians move by well under 1% between seeds.
RESAMPLES = 2000
#: Fixed seed: the same rounds give the same interval (tests, re-renders, stored results).
SEED = 0

#: What a replicable call must clear the band by, at least (a factor): the ratio of the same
#: two kernels moves between two sets of rounds taken minutes apart by more than their own
#: intervals say (a fresh process, another placement in memory). Over 75 such pairs (three
#: 25-chain benchmark runs, quiet AVX-512 Xeon): median 1.0%, 75th percentile 1.8%, 90th 2.5%.
DRIFT = 1.02

FASTER, SLOWER, SAME = "faster", "slower", "no difference (within noise)"


@dataclass(frozen=True)
class RatioInterval:
    """``baseline / candidate`` time over paired rounds: > 1 means the candidate is faster.

    Attributes
    ----------
    ratio
        Median of the rounds' ratios.
    low, high
        The :data:`CONFIDENCE` bootstrap interval of that median (``low == high == ratio``
        with a single round: one round says nothing about the noise).
    rounds
        Number of paired rounds the ratio rests on.
    ratios
        Each round's ratio, in the order taken (outliers kept, shown, not hidden).
    """

    ratio: float
    low: float
    high: float
    rounds: int
    ratios: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "ratios": list(self.ratios)}

    @classmethod
    def from_dict(cls, data: dict) -> RatioInterval:
        return cls(float(data["ratio"]), float(data["low"]), float(data["high"]),
                   int(data["rounds"]), tuple(float(r) for r in data["ratios"]))

    def text(self, what: str = "") -> str:
        """``"unfused / fused = 1.12x, 95% interval 1.05-1.19x (5 rounds)"``."""
        head = f"{what} = " if what else ""
        return (f"{head}{self.ratio:.2f}x, {CONFIDENCE:.0%} interval {self.low:.2f}-"
                f"{self.high:.2f}x ({self.rounds} round{'s' if self.rounds != 1 else ''})")


def _resampled_medians(data: np.ndarray, rng: np.random.Generator,
                       resamples: int = RESAMPLES) -> np.ndarray:
    """The medians of ``resamples`` draws of ``data`` with replacement (the bootstrap)."""
    return np.median(data[rng.integers(0, data.size, size=(resamples, data.size))], axis=1)


def bootstrap_median(values: Sequence[float], *, confidence: float = CONFIDENCE,
                     resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """(median, low, high) of ``values`` with a percentile-bootstrap interval of the median.

    Deterministic for a given ``seed``. One value gives ``(v, v, v)``.
    """
    data = np.asarray(values, dtype="float64")
    if data.size == 0:
        raise PlaygroundError("bootstrap_median: no values")
    if not np.all(np.isfinite(data)):
        raise PlaygroundError(f"bootstrap_median: values must be finite, got {list(values)!r}")
    median = float(np.median(data))
    if data.size == 1:
        return median, median, median
    medians = _resampled_medians(data, np.random.default_rng(seed), resamples)
    tail = (1 - confidence) / 2 * 100
    low, high = (float(v) for v in np.percentile(medians, [tail, 100 - tail]))
    return median, min(low, median), max(high, median)


def compare_rounds(baseline_ms: Sequence[float], candidate_ms: Sequence[float], *,
                   seed: int = SEED) -> RatioInterval:
    """The ratio ``baseline / candidate`` from paired rounds (``baseline_ms[i]`` and
    ``candidate_ms[i]`` timed back to back), with its bootstrap interval.

    The ratios are bootstrapped in log space (a ratio of 2 and one of 1/2 are equally far from
    1), then brought back.
    """
    if len(baseline_ms) != len(candidate_ms):
        raise PlaygroundError(f"compare_rounds: {len(baseline_ms)} baseline round(s) but "
                              f"{len(candidate_ms)} candidate round(s); rounds must be paired")
    if not baseline_ms:
        raise PlaygroundError("compare_rounds: no rounds")
    pairs = list(zip(baseline_ms, candidate_ms, strict=True))
    if any(not (b > 0 and c > 0) or math.isinf(b) or math.isinf(c) for b, c in pairs):
        raise PlaygroundError(f"compare_rounds: times must be positive and finite, got {pairs!r}")
    ratios = tuple(b / c for b, c in pairs)
    mid, low, high = bootstrap_median([math.log(r) for r in ratios], seed=seed)
    return RatioInterval(math.exp(mid), math.exp(low), math.exp(high), len(ratios), ratios)


def decide(interval: RatioInterval, band: float = BAND, *, replicable: bool = False) -> str:
    """:data:`FASTER` when the whole interval is above ``band``, :data:`SLOWER` when it is
    below ``1 / band``, else :data:`SAME` (the interval reaches into the band: within noise).

    With ``replicable`` the interval must clear the band *by its own width* on the side facing
    it, and by at least :data:`DRIFT` (in log space: ``low / max(ratio / low, DRIFT) >
    band``): a second set of rounds of the same spread, taken later around a ratio that has
    drifted as much as ratios drift between runs, then clears the band too, so the call holds
    when measured again. An interval that clears the band by less (a ratio of 1.07 with an
    interval of 1.05-1.09, or 1.06 with 1.056-1.062) is "too close to call"
    (:func:`close_call`) and gives :data:`SAME`. The fuse-or-not verdict decides this way: its
    call is the product's answer, and a re-measurement must not turn it into "no
    difference".

    A single round never decides: its interval is a point and says nothing about the noise.
    """
    if interval.rounds < 2:
        return SAME
    low, high = interval.low, interval.high
    if replicable:
        low = low / max(interval.ratio / low, DRIFT)
        high = high * max(high / interval.ratio, DRIFT)
    if low > band:
        return FASTER
    if high < 1 / band:
        return SLOWER
    return SAME


def close_call(interval: RatioInterval, band: float = BAND) -> bool:
    """Whether the interval clears the band, but not by its own width: :func:`decide` calls
    it faster or slower, ``decide(..., replicable=True)`` does not (a re-measurement of the
    same spread could reach into the band)."""
    return decide(interval, band) != decide(interval, band, replicable=True)


def spread_interval(samples_ms: Sequence[float]) -> tuple[float, float]:
    """A bootstrap interval of the median of one kernel's samples (ms): what a timed point
    shows beside its median, where it is not compared in rounds with another."""
    _, low, high = bootstrap_median(samples_ms)
    return low, high


def unpaired_ratio(baseline_ms: Sequence[float], candidate_ms: Sequence[float], *,
                   seed: int = SEED) -> tuple[float, float, float]:
    """``baseline / candidate`` of two runs timed apart (not in paired rounds): the ratio of
    their medians with a bootstrap interval, each run's samples resampled on their own.

    Wider than :func:`compare_rounds`'s interval for the same kernels: it cannot cancel what
    changed on the machine between the two runs, so a stored pair of runs is never called
    faster or slower on this interval alone (the page says it is unpaired).
    """
    a = np.asarray(baseline_ms, dtype="float64")
    b = np.asarray(candidate_ms, dtype="float64")
    if a.size == 0 or b.size == 0:
        raise PlaygroundError("unpaired_ratio: both runs need samples")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and a.min() > 0 and b.min() > 0):
        raise PlaygroundError("unpaired_ratio: times must be positive and finite")
    ratio = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    ma, mb = _resampled_medians(a, rng), _resampled_medians(b, rng)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = (float(v) for v in np.percentile(ma / mb, [tail, 100 - tail]))
    return ratio, min(low, ratio), max(high, ratio)

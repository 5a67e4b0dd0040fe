"""Tests of :mod:`playground.measure.stats`: the ratio, its interval and the call, on synthetic
rounds (no kernels: fast)."""

from __future__ import annotations

import pytest

from playground.errors import PlaygroundError
from playground.measure.stats import (
    FASTER,
    SAME,
    SLOWER,
    RatioInterval,
    bootstrap_median,
    close_call,
    compare_rounds,
    decide,
    spread_interval,
)

FUSED = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00]


def test_a_clear_win_is_faster_with_an_interval_around_the_ratio():
    r = compare_rounds([1.12, 1.14, 1.11, 1.13, 1.15, 1.10, 1.12], FUSED)
    assert r.low <= r.ratio <= r.high
    assert 1.10 < r.ratio < 1.15 and r.low > 1.05
    assert decide(r) == FASTER
    assert r.text("unfused / fused").startswith("unfused / fused = 1.1")
    assert "95% interval" in r.text()


def test_a_clear_loss_is_slower():
    r = compare_rounds([4.46, 4.51, 4.40, 4.49, 4.47, 4.52, 4.44],
                       [5.50, 5.44, 5.61, 5.47, 5.52, 5.49, 5.55])
    assert r.high < 1 / 1.05
    assert decide(r) == SLOWER


def test_an_interval_reaching_into_the_band_is_no_difference():
    # Median ratio 1.06 (outside the band) but rounds from 0.97 to 1.15: not sure enough.
    r = compare_rounds([1.06, 0.97, 1.15, 1.00, 1.12, 1.06, 1.09], FUSED)
    assert r.ratio > 1.05 and r.low < 1.05
    assert decide(r) == SAME


def test_overlapping_times_are_no_difference():
    r = compare_rounds([1.0, 1.02, 0.97, 1.01, 0.99, 1.03, 1.0], FUSED)
    assert r.low < 1 < r.high
    assert decide(r) == SAME


@pytest.mark.parametrize("wild", [5.0, 0.2])
def test_one_wild_round_does_not_flip_the_call(wild):
    base = [1.12, 1.14, 1.11, 1.13, 1.15, 1.10, 1.12]
    calm = decide(compare_rounds(base, FUSED))
    noisy = list(base)
    noisy[3] = wild  # another process woke up in the middle of one round
    r = compare_rounds(noisy, FUSED)
    assert decide(r) == calm == FASTER
    assert wild / FUSED[3] in r.ratios  # the outlier is kept and shown, not hidden


def test_a_replicable_call_needs_the_band_cleared_by_the_intervals_width():
    # A clear win clears 1.05 by far more than its width: decided either way.
    clear = compare_rounds([1.20, 1.22, 1.19, 1.21, 1.23, 1.18, 1.20], FUSED)
    assert decide(clear, replicable=True) == FASTER and not close_call(clear)
    # 1.07x with an interval of about 1.06-1.08: clears the band, but by less than its width;
    # rounds of the same spread around 1.07 would reach into it.
    near = compare_rounds([1.07, 1.055, 1.10, 1.08, 1.056, 1.07, 1.058], [1.0] * 7)
    assert near.low > 1.05 and near.low ** 2 / near.ratio < 1.05
    assert decide(near) == FASTER
    assert decide(near, replicable=True) == SAME and close_call(near)
    # The same rule on the slow side, mirrored.
    slow = RatioInterval(1 / near.ratio, 1 / near.high, 1 / near.low, near.rounds, ())
    assert decide(slow) == SLOWER and decide(slow, replicable=True) == SAME
    # A wide interval clearing the band by less than its width, though by more than the drift
    wide = compare_rounds([1.12, 1.08, 1.16, 1.12, 1.075, 1.13, 1.15], [1.0] * 7)
    assert wide.low / 1.02 > 1.05 > wide.low ** 2 / wide.ratio, wide
    assert decide(wide, replicable=True) == SAME
    # A very tight interval still has to clear the band by what ratios drift between runs:
    # 1.06 (1.058-1.062) was re-measured at 1.046 in a later run.
    tight = compare_rounds([1.06, 1.059, 1.061, 1.06, 1.058, 1.062, 1.06], [1.0] * 7)
    assert tight.low > 1.05 and tight.low / tight.ratio > 1 / 1.02
    assert decide(tight) == FASTER and decide(tight, replicable=True) == SAME
    wide_margin = compare_rounds([1.10, 1.099, 1.101, 1.10, 1.098, 1.102, 1.10], [1.0] * 7)
    assert decide(wide_margin, replicable=True) == FASTER
    # Inside the band nothing is a close call: both rules say no difference.
    same = compare_rounds([1.0, 1.02, 0.97, 1.01, 0.99, 1.03, 1.0], FUSED)
    assert decide(same, replicable=True) == SAME and not close_call(same)


def test_the_interval_is_deterministic():
    a = compare_rounds([1.1, 1.3, 0.9, 1.2, 1.0], [1.0] * 5)
    b = compare_rounds([1.1, 1.3, 0.9, 1.2, 1.0], [1.0] * 5)
    assert a == b
    assert RatioInterval.from_dict(a.to_dict()) == a


def test_one_round_never_decides():
    r = compare_rounds([2.0], [1.0])
    assert (r.ratio, r.low, r.high) == (2.0, 2.0, 2.0)
    assert decide(r) == SAME


def test_bootstrap_of_one_value_is_that_value():
    assert bootstrap_median([3.0]) == (3.0, 3.0, 3.0)


@pytest.mark.parametrize("base, cand, said", [([], [], "no rounds"),
                                              ([1.0], [1.0, 2.0], "paired"),
                                              ([1.0], [0.0], "positive")])
def test_bad_rounds_say_what_is_wrong(base, cand, said):
    with pytest.raises(PlaygroundError, match=said):
        compare_rounds(base, cand)


def test_spread_interval_brackets_the_median_of_the_samples():
    samples = [1.0, 1.1, 0.9, 1.05, 3.0, 1.02, 0.98, 1.04, 1.01, 0.97]
    low, high = spread_interval(samples)
    assert low <= 1.015 <= high and high < 1.2  # ten samples: the one at 3.0 stays out


def test_an_unpaired_ratio_has_an_interval_around_the_ratio_of_medians():
    from playground.measure.stats import unpaired_ratio
    a = [2.0, 2.1, 1.9, 2.05, 1.95, 2.2, 1.8]
    b = [1.0, 1.05, 0.95, 1.02, 0.98, 1.1, 0.9]
    ratio, low, high = unpaired_ratio(a, b)
    assert ratio == pytest.approx(2.0)
    assert 1.7 < low < ratio < high < 2.4
    assert unpaired_ratio(a, b) == (ratio, low, high)  # deterministic
    assert unpaired_ratio([1.0], [1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(PlaygroundError):
        unpaired_ratio([], b)
    with pytest.raises(PlaygroundError):
        unpaired_ratio([1.0, float("nan")], b)

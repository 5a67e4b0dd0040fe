"""The schedule fuzzer in the test run: random chains and step sequences, validated end to end.

Hypothesis drives :mod:`fuzzing` with fixed seeds (``derandomize``): about 60 random
(chain, steps) cases and 12 presets with random extra steps per run. Each accepted schedule is
built and run in the worker with NaN-poisoned intermediates on two input seeds and must match
the float64 reference; every refusal must be one plain line; nothing but ``PlaygroundError``
may escape. The long runs (thousands of cases) are ``benchmarks/fuzz.py``;
``PLAYGROUND_FUZZ=deep`` (2000 cases) or ``PLAYGROUND_FUZZ_EXAMPLES=n`` scales this test up.
"""

from __future__ import annotations

import os

import pytest
from fuzzing import HypothesisDraw, build_case, validate_case
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("PLAYGROUND_FUZZ_EXAMPLES", examples(60, 2000)))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)


def _check(pool, result):
    result = validate_case(pool, result)
    assert not result.bad_refusals, result.bad_refusals
    assert result.outcome in ("validated", "no_steps"), result.describe()


@FUZZ
@given(data=st.data())
def test_random_chains_and_steps(pool, data):
    _check(pool, build_case(HypothesisDraw(data), max_steps=8))


@pytest.fixture(scope="module")
def presets():
    from playground.io.presets import list_presets, load_preset

    out = []
    for info in list_presets():
        if not info.get("error") and info.get("target", "cpu") == "cpu" \
                and not info["name"].startswith("seed_"):  # seed chains take seconds each
            chain, steps, _ = load_preset(info["name"])
            out.append((chain, list(steps)))
    return out


@settings(FUZZ, max_examples=max(1, EXAMPLES // 5))
@given(data=st.data())
def test_presets_with_random_extra_steps(pool, presets, data):
    d = HypothesisDraw(data)
    chain, steps = presets[d.int(0, len(presets) - 1)]
    _check(pool, build_case(d, max_steps=4, chain=chain, start=steps))

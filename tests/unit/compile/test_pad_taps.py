"""The padding-taps step (playground/compile/pad_taps.py): where it splits a reduction nest by
rows, where it leaves one alone, and randomized proof that template schedules stay correct
with it (validated in the worker on NaN-poisoned buffers, two input seeds).
"""

from __future__ import annotations

import os
import re

import pytest
from fuzzing import HypothesisDraw, random_template_chain
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground import service
from playground.chain.spec import normalize_chain
from playground.compile import pad_taps
from playground.compile.lowering import lower
from playground.measure.machine import machine_facts
from playground.schedule.replay import scheduled
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.templates.plan import plan_steps
from playground.templates.search import candidate_plans

pytestmark = pytest.mark.slow

CONV_14 = {"input": {"shape": [1, 16, 14, 14]},
           "layers": [{"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1},
                      {"op": "relu"}]}


def _said(mod) -> str:
    return str(mod["main"].attrs[pad_taps.PAD_TAPS_ATTR])


def _plans(chain: dict, count: int = 1) -> list[tuple[str, list[Step]]]:
    """The search's first ``count`` plans of ``chain``, as steps."""
    found = []
    for label, plan, _ in candidate_plans(chain, machine_facts()):
        found.append((label, list(plan_steps(chain, plan).steps)))
        if len(found) == count:
            break
    return found


def _validates(pool, chain: dict, steps: list[Step]) -> None:
    result = service.run(pool, Session.new(chain, steps), "cpu", measure=False)
    assert result.status == "ok", (result.status, result.message)
    assert result.value["correct"], result.value.get("message")


def test_a_templates_border_rows_get_their_own_nest_with_fewer_taps(pool):
    """A 3x3 conv at 14x14 in row tiles of one row: rows 0 and 13 read one row of taps from
    the zero padding; each gets a copy of the reduction nest whose ``rh`` runs over the two
    taps inside the image, the other rows keep the nest as it was (three taps)."""
    chain = normalize_chain(CONV_14)
    label, steps = _plans(chain)[0]
    lowered = lower(scheduled(chain, tuple(steps)).mod, "cpu")
    said, text = _said(lowered), lowered.script()
    assert "taps rh reach the padding's zeros split off" in said, (label, said)
    row = re.search(r"rows (\w+) whose taps", said).group(1)
    assert f"if {row} == 0:" in text and f"if {row} == 13:" in text, text
    assert re.search(r"for rc, rh in T\.grid\(\d+, 2\)", text), text
    assert re.search(r"for rc, rh in T\.grid\(\d+, 3\)", text), text
    _validates(pool, chain, steps)
    shown = service.lower(pool, Session.new(chain, steps), "cpu")  # the page's Lowered TIR
    assert shown.value["padding_taps"] == said and f"if {row} == 0:" in shown.value["text"]
    off = lower(scheduled(chain, tuple(steps)).mod, "cpu", tile_local=False)
    assert pad_taps.PAD_TAPS_ATTR not in off["main"].attrs  # TVM's own lowering: no split


def test_an_inlined_pad_is_split_too(pool):
    """The pad computed inside the conv (``compute_inline``): the product's factor is the
    ``if_then_else`` itself. With the initialization decomposed out, the nest under each
    output pixel splits by its row."""
    chain = normalize_chain({"input": {"shape": [1, 3, 9, 9]},
                             "layers": [{"op": "conv2d", "channels": 4, "kernel": 3,
                                         "padding": 1, "dilation": 2}]})
    steps = [Step("compute_inline", {"block": "conv1_pad"}),
             Step("decompose_reduction", {"block": "conv1", "loop": "rc"})]
    said = _said(lower(scheduled(chain, tuple(steps)).mod, "cpu"))
    assert "conv1: rows h whose taps rh reach the padding's zeros split off" in said, said
    _validates(pool, chain, steps)


def test_a_nest_with_its_initialization_inside_is_left_alone(pool):
    """Without ``decompose_reduction`` the sum starts at its first tap (``rh == 0``): a
    copy that skipped that tap would never start it. Nothing is split."""
    chain = normalize_chain(CONV_14)
    said = _said(lower(scheduled(chain, ()).mod, "cpu"))
    assert said.startswith("no padding taps skipped"), said
    _validates(pool, chain, [Step("compute_inline", {"block": "conv1_pad"})])


def test_a_max_pools_minus_infinity_padding_is_not_a_zero(pool):
    chain = normalize_chain({"input": {"shape": [1, 8, 12, 12]},
                             "layers": [{"op": "max_pool2d", "kernel": 3, "stride": 1,
                                         "padding": 1}]})
    label, steps = _plans(chain)[0]
    said = _said(lower(scheduled(chain, tuple(steps)).mod, "cpu"))
    assert "maxpool1" not in said, (label, said)
    _validates(pool, chain, steps)


def test_a_padded_sum_pool_and_a_strided_conv_are_split_and_right(pool):
    chain = normalize_chain({"input": {"shape": [1, 16, 13, 13]},
                             "layers": [{"op": "conv2d", "channels": 16, "kernel": 3,
                                         "padding": 1, "stride": 2},
                                        {"op": "avg_pool2d", "kernel": 3, "stride": 1,
                                         "padding": 1}]})
    for label, steps in _plans(chain, 3):
        said = _said(lower(scheduled(chain, tuple(steps)).mod, "cpu"))
        assert "split off" in said, (label, said)
        _validates(pool, chain, steps)


CASES = settings(max_examples=int(os.environ.get("PLAYGROUND_PAD_TAPS_EXAMPLES",
                                                 examples(8, 150))),
                 derandomize=True, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck), print_blob=True)


@CASES
@given(data=st.data())
def test_random_template_schedules_stay_correct_with_the_step(pool, data):
    """Random chains (dense, grouped, depthwise, pointwise; strides, dilations, odd sizes,
    batch 2, epilogues, pools), the search's first unfused and first fused plans, validated
    with the step on."""
    chain = random_template_chain(HypothesisDraw(data))
    plans = list(candidate_plans(chain, machine_facts()))
    fused = [p for p in plans if p[2] is not None][:1]
    for label, plan, _ in [plans[0], *fused]:
        _validates(pool, chain, list(plan_steps(chain, plan).steps))

"""The run-time chart's point labels (issue 22, point 9): cut to fit above their points, yet
two different steps never read the same once cut (the browser test checks them on the page)."""

from __future__ import annotations

from ui.measure_ui import history_figure, short_labels


def test_labels_that_differ_stay_different_when_cut():
    labels = ["0: unscheduled", "1: split conv1.h factors=[None, 2]",
              "2: split conv1.w factors=[None, 2]", "3: split conv1.h factors=[None, 8]",
              "4: split conv1.h factors=[None, 2]"]
    cut = short_labels(labels)
    assert cut[0] == "0: unscheduled"
    steps = [c.split(": ", 1)[1] for c in cut]
    assert all(len(s) <= 30 for s in steps), steps
    assert len({steps[1], steps[2], steps[3]}) == 3, steps  # h/w and 2/8 both visible
    assert "conv1.h" in steps[1] and "conv1.w" in steps[2], steps
    assert steps[4] == steps[1]  # the same step reads the same


def test_every_point_of_the_chart_has_its_label():
    records = [{"n": i + 1, "label": label, "median_ms": 1.0 + i, "p10_ms": 0.9 + i,
                "p90_ms": 1.1 + i, "target": "cpu"}
               for i, label in enumerate(["0: unscheduled", "1: split conv1.h factors=[None, 2]",
                                          "2: split conv1.w factors=[None, 2]"])]
    fig = history_figure(records)
    texts = [a.text for a in fig.layout.annotations]
    assert len(texts) == 3 and len(set(texts)) == 3, texts
    assert fig.layout.yaxis.range[1] > max(r["p90_ms"] for r in records)

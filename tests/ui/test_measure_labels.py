"""What the measurement panel writes in narrow places (issue 22, point 9): the run-time chart's
point labels, cut to fit above their points yet never two different steps reading the same, and
the "Median time" metric, short enough for its column (the browser tests check both on the
page)."""

from __future__ import annotations

from ui.measure_ui import history_figure, short_labels, time_text


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


def test_a_median_time_fits_its_metric_column_with_its_unit():
    assert time_text(0.007219) == "7.22 µs"  # was "0.007219 ms", cut to "0.007219 …"
    assert time_text(0.5806) == "581 µs"
    assert time_text(2.0) == "2 ms"
    assert time_text(13.8284) == "13.83 ms"
    assert time_text(999.94) == "999.9 ms" and time_text(1500.0) == "1.5 s"
    assert time_text(0.99996) == "1 ms" and time_text(999.97) == "1 s"  # never "1e+03 µs"
    assert time_text(None) == time_text(float("nan")) == "—"
    assert max(len(time_text(10.0 ** e * 1.23456)) for e in range(-4, 7)) <= 8

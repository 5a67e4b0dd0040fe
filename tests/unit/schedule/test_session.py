"""Sessions: undo/redo/goto/delete, chain edits that keep steps, serialization."""

import pytest
from helpers import CONV_RELU, CONV_RELU_CONV, fuse_two_convs

from playground.errors import ChainError, StepError
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.schedule.views import outline_text, scheduled_script, step_diff


def test_undo_redo_and_new_step_drops_the_undone_ones():
    s = Session.new(CONV_RELU_CONV, fuse_two_convs())
    assert s.cursor == 7 and s.can_undo and not s.can_redo
    u = s.undo().undo()
    assert u.cursor == 5 and u.can_redo and len(u.steps) == 7
    assert u.redo().cursor == 6
    v = u.apply(Step("parallel", {"block": "conv2", "loop": "h_0"}))
    assert v.cursor == 6 and len(v.steps) == 6 and v.steps[-1].primitive == "parallel"
    with pytest.raises(StepError, match="nothing to redo"):
        s.redo()
    with pytest.raises(StepError, match="nothing to undo"):
        Session.new(CONV_RELU).undo()


def test_goto_and_views_follow_the_cursor():
    s = Session.new(CONV_RELU_CONV, fuse_two_convs())
    start = s.goto(0)
    assert scheduled_script(start) == scheduled_script(Session.new(CONV_RELU_CONV))
    assert "for h_0" in outline_text(s) and "for h_0" not in outline_text(start)
    with pytest.raises(StepError, match="step 9 does not exist"):
        s.goto(9)


def test_delete_keeps_later_steps_when_they_still_apply_and_refuses_otherwise():
    s = Session.new(CONV_RELU, [Step("parallel", {"block": "conv1", "loop": "k"}),
                                Step("vectorize", {"block": "relu1", "loop": "w"})])
    assert [x.primitive for x in s.delete(0).steps] == ["vectorize"]
    t = Session.new(CONV_RELU, [Step("split", {"block": "conv1", "loop": "h",
                                               "factors": [None, 4]}),
                                Step("parallel", {"block": "conv1", "loop": "h_0"})])
    with pytest.raises(StepError, match="cannot delete step 1: step 1 \\(parallel\\): block "
                                        "conv1 has no loop 'h_0'"):
        t.delete(0)


def test_chain_edit_keeps_every_step_and_undoes_those_that_no_longer_apply():
    s = Session.new(CONV_RELU, [Step("split", {"block": "conv1", "loop": "h",
                                               "factors": [4, 4]}),
                                Step("parallel", {"block": "conv1", "loop": "h_0"})])
    assert s.with_chain({**CONV_RELU, "input": {"shape": [2, 8, 16, 16]}}).cursor == 2
    # The split's fixed factors no longer cover a taller input: TVM's reason is kept.
    wider = s.with_chain({**CONV_RELU, "input": {"shape": [1, 8, 32, 32]}})
    assert wider.cursor == 0 and "product of factors" in wider.notice
    # Removing the conv removes its blocks: both steps stay in the history, undone.
    relu_only = s.with_chain({"input": {"shape": [1, 8, 16, 16]},
                              "layers": [{"op": "relu"}]})
    assert relu_only.cursor == 0 and len(relu_only.steps) == 2
    assert "2 step(s) undone because the chain changed" in relu_only.notice
    with pytest.raises(ChainError):
        s.with_chain({"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "conv2d"}]})


def test_step_diff_shows_what_the_step_changed():
    s = Session.new(CONV_RELU, [Step("parallel", {"block": "conv1", "loop": "k"})])
    diff = step_diff(s, 0)
    assert "+++ after step 1: parallel conv1.k" in diff
    assert any(line.startswith("+") and "T.parallel" in line for line in diff.splitlines())


def test_serialization_round_trip():
    s = Session.new(CONV_RELU_CONV, fuse_two_convs()).undo()
    t = Session.from_dict(s.to_dict())
    assert t.chain == s.chain and t.steps == s.steps and t.cursor == s.cursor
    assert Session.from_dict({"chain": CONV_RELU, "steps": []}).cursor == 0


def test_a_replacement_is_one_entry_that_undo_reverses_and_redo_brings_back():
    built = Session.new(CONV_RELU_CONV, fuse_two_convs())
    imported = Session.new(CONV_RELU, [Step("parallel", {"block": "conv1", "loop": "k"}),
                                       Step("vectorize", {"block": "relu1", "loop": "w"})])
    s = imported.replacing(built, "imported x.py")
    assert s == imported and s.at_replacement and s.key() == imported.key()
    back = s.undo()  # not the import's last step: the whole session before it
    assert back == built and back.cursor == 7 and back.can_redo
    assert back.redo() == imported and back.redo().at_replacement
    # Steps after the replacement undo one by one, then the replacement itself.
    more = s.apply(Step("unroll", {"block": "relu1", "loop": "h"}))
    assert more.replaced is s.replaced and not more.at_replacement
    assert more.undo().undo() == built
    # Going into the imported steps and applying there keeps what is left of them.
    inside = s.goto(1).apply(Step("unroll", {"block": "relu1", "loop": "h"}))
    assert inside.replaced.steps == 1 and inside.goto(1).undo() == built
    assert s.delete(0).replaced.steps == 1
    # A new step after undoing the replacement drops its redo, as a new step always does.
    assert not back.apply(Step("parallel", {"block": "conv2", "loop": "k"})).can_redo
    with pytest.raises(StepError, match="replaced none"):
        built.before_replacement()

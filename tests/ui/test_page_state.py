"""The page follows its session and echoes user text safely (issue 11, points 4 and 5), driven
by AppTest. What only a browser shows (the browser sending old widget values back, links that
would be live, the idle CPU) is in ``test_browser_session.py``.

- The chain editor's keys carry a generation that every change from outside the editor bumps,
  and then show the new session's chain.
- Everything echoed from a file, a link or TVM is escaped Markdown (no link, no bold).
- Errors sit next to what they are about: the input row's under the input row, a layer's under
  that layer; the optional ``in_channels`` of a conv is editable and checked.
- compute_at offers the tiled consumer and its tile loop; pickers never get both a default and
  a Session State value.
"""

from __future__ import annotations

import json

import paths
import pytest
from helpers import CONV_RELU_CONV, editor_key, shown
from page import apply, errors, run, session, start, with_session
from streamlit.elements.lib import policies
from streamlit.testing.v1.element_tree import Error

from playground.io.export import export_script
from playground.io.url_state import QUERY_KEY, encode_state
from playground.schedule.replay import blocks
from playground.schedule.session import Session
from playground.schedule.steps import Step
from ui import io_ui, schedule_ui, text
from ui.state import DEFAULT_CHAIN

CRAFTED = "[click here to fix](http://example.invalid/x)"
TILED = [Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]}),
         Step("split", {"block": "conv2", "loop": "w", "factors": [None, 8]}),
         Step("reorder", {"block": "conv2", "loops": ["n", "h_0", "w_0", "k", "h_1", "w_1"]})]


@pytest.fixture(scope="module", autouse=True)
def shared_pool(close_page_pool):
    """Every AppTest of this module shares the page's worker pool (closed after)."""


def in_order(node):
    """The page's elements in the order they are drawn."""
    yield node
    children = getattr(node, "children", None) or {}
    for k in sorted(children):
        yield from in_order(children[k])


def position(at, match) -> int:
    return next(i for i, node in enumerate(in_order(at.main)) if match(node))


def paste_import(at, content: str):
    at.text_area(key="io.paste").set_value(content)
    at.button(key="io.import").click()
    return run(at)


# ----------------------------------------------------------------------------- point 4

def test_editor_shows_the_chain_of_a_loaded_preset_import_and_history():
    from ui.chain_ui import presets

    name = "resnet_conv_relu_conv"
    if name not in [p["name"] for p in presets()]:
        pytest.skip(f"no preset {name}")
    at = start()
    first = at.session_state["ui"].editor_generation
    at.selectbox(key="preset.name").set_value(name)
    run(at)
    at.button(key="preset.load").click()
    run(at)
    loaded = session(at)
    assert at.session_state["ui"].editor_generation > first
    assert [at.number_input(key=editor_key(at, f"input.{d}")).value for d in "nchw"] == \
        loaded.chain["input"]["shape"] == [1, 64, 56, 56]
    assert not [w for w in at.number_input if w.key.startswith("chain.") and
                not w.key.endswith(f".v{at.session_state['ui'].editor_generation}")]
    at.button(key="hist.undo").click()  # the preset is one entry: Undo goes back before it
    run(at)
    assert session(at) == Session.new(DEFAULT_CHAIN)
    assert at.number_input(key=editor_key(at, "input.c")).value == 3
    at.button(key="hist.redo").click()
    run(at)
    assert session(at) == loaded
    at.button(key="hist.goto.2").click()  # inside it, steps are undone one by one
    run(at)
    at.button(key="hist.undo").click()
    run(at)
    assert session(at).cursor == 1 and session(at).chain == loaded.chain
    assert at.number_input(key=editor_key(at, "0.channels")).value == 64
    # An import of another chain: the editor shows it.
    small = Session.new(CONV_RELU_CONV, TILED)
    paste_import(at, export_script(small.chain, small.active, target="cpu", title="small"))
    assert session(at).chain == small.chain and session(at).steps == small.steps
    assert at.number_input(key=editor_key(at, "input.c")).value == 8
    assert not at.warning  # no step undone because the chain changed


def test_preset_picker_shows_the_names_the_readme_uses():
    from ui.chain_ui import presets

    items = presets()
    if not items:
        pytest.skip("no presets in schedules/ yet")
    options = start().selectbox(key="preset.name").options
    assert [o.split(" — ")[0] for o in options] == [p["name"] for p in items]


# ----------------------------------------------------------------------------- escaping

def test_escape_shows_text_as_typed_and_never_links():
    assert text.escape("__import__") == r"\_\_import\_\_"
    assert text.escape("conv1_pad groups=2") == "conv1_pad groups=2"  # nothing to escape
    crafted = text.escape(CRAFTED)
    assert "](http" not in crafted and "`http://example.invalid/x)`" in crafted
    assert text.escape(":material/error: :smile: :red[x] $x$ <b>") == \
        r"\:material/error\: \:smile\: \:red\[x\] \$x\$ \<b>"
    assert text.escape("# a\n- b\n1. c") == "\\# a  \n\\- b  \n1\\. c"
    assert text.escape("mail a@b.invalid or www.b.invalid") == \
        "mail `a@b.invalid` or `www.b.invalid`"
    assert shown(text.escape("a*b* [c] ~d~ `e` \\ & |")) == "a*b* [c] ~d~ `e` \\ & |"
    assert text.code("a`b") == "``a`b``" and text.code("`x`") == "`` `x` ``"
    assert text.code("two\nlines") == "`two lines`"


def test_imported_names_and_messages_are_escaped():
    at = start()
    bad = {"chain": {"input": {"shape": [1, 3, 8, 8]},
                     "layers": [{"op": "relu", "name": CRAFTED}]}, "steps": []}
    paste_import(at, json.dumps(bad))
    (message,) = [e.value for e in at.error]
    # The brackets escaped, the URL in a code span: a text, never a link.
    assert r"'\[click here to fix\](`http://example.invalid/x)`'" in message, message
    assert f"'{CRAFTED}'" in shown(message).replace("`", "")
    paste_import(at, 'x = __import__("os")\n')
    (message,) = [e.value for e in at.error]
    assert r"\_\_import\_\_" in message and "__import__" not in message, message
    assert "name '__import__' is not allowed" in shown(message)


def test_a_crafted_link_puts_no_link_on_the_page():
    chain = {"input": {"shape": [1, 3, 8, 8]}, "layers": [{"op": "relu", "name": CRAFTED}]}
    at = start({QUERY_KEY: encode_state(chain, [])})
    (message,) = [e.value for e in at.error]
    assert "could not be restored" in message, message
    assert r"\[click here to fix\](`http://example.invalid/x)`" in message, message


def test_history_labels_and_refusals_are_code_or_escaped():
    at = apply(start(), "compute_at", block="relu1", **{"target_block.relu1": "conv1",
                                                        "target_loop.conv1": "h"})
    (message,) = [e.value for e in at.error]
    assert message == text.escape(shown(message))  # the whole refusal is escaped text
    at = with_session(Session.new(CONV_RELU_CONV, TILED[:1]))
    history = [m.value for m in at.markdown if "1 · " in m.value]
    assert history and "`split conv2.h factors=[None, 8]`" in history[0], history


# ----------------------------------------------------------------------------- placement

def test_input_row_errors_sit_under_the_input_row():
    at = start()
    at.number_input(key=editor_key(at, "input.h")).set_value(0)
    run(at)
    assert any("input: shape[2] (H) must be >= 1" in m for m in errors(at)), errors(at)
    error = position(at, lambda n: isinstance(n, Error))
    assert position(at, lambda n: getattr(n, "key", "") == editor_key(at, "input.w")) < error
    assert error < position(at, lambda n: getattr(n, "key", "") == editor_key(at, "0.channels"))


def test_in_channels_expresses_the_forums_mistake():
    at = start()
    at.button(key="layer.add").click()  # conv2 after conv1 (10 channels) -> relu1
    run(at)
    assert at.number_input(key=editor_key(at, "2.in_channels")).value is None  # "auto"
    before = session(at)
    at.number_input(key=editor_key(at, "2.in_channels")).set_value(3)
    run(at)
    assert session(at) == before
    message = next(m for m in errors(at) if "conv2: expects 3 input channels" in m)
    assert "receives 10" in message
    error = position(at, lambda n: isinstance(n, Error))
    assert error > position(at, lambda n: getattr(n, "key", "") == editor_key(at, "2.channels"))
    at.number_input(key=editor_key(at, "2.in_channels")).set_value(10)
    run(at)
    assert not errors(at)
    assert session(at).chain["layers"][2]["in_channels"] == 10


# ----------------------------------------------------------------------------- pickers

def test_compute_at_offers_the_tiled_consumer_and_its_tile_loop():
    s = Session.new(CONV_RELU_CONV, TILED)
    infos = {b.name: b for b in blocks(s.schedule())}
    for block in ("conv2_pad", "relu1", "conv1", "conv1_pad"):
        assert schedule_ui.default_target(infos, "compute_at", block) == "conv2"
    assert schedule_ui.default_target(infos, "reverse_compute_at", "relu1") == "conv1"
    loops = list(infos["conv2"].loops)
    assert loops[schedule_ui.default_loop(loops, "compute_at")].name == "w_0"
    untiled = {b.name: b for b in blocks(Session.new(CONV_RELU_CONV).schedule())}
    assert schedule_ui.default_target(untiled, "compute_at", "conv1") == "conv2"  # the last
    at = with_session(s)
    at.selectbox(key="sched.primitive").set_value("compute_at")
    run(at)
    at.selectbox(key="sched.compute_at.block").set_value("relu1")
    run(at)
    assert at.selectbox(key="sched.compute_at.target_block.relu1").value == "conv2"
    assert at.selectbox(key="sched.compute_at.target_loop.conv2").value == "w_0"


def test_changing_the_primitive_keeps_the_block_and_compute_at_never_targets_itself():
    infos = {b.name: b for b in blocks(Session.new(CONV_RELU_CONV).schedule())}
    assert schedule_ui.default_block(infos, "compute_at") == "conv2_pad"  # conv2 feeds none
    assert schedule_ui.default_block(infos, "split") == "conv2"
    at = with_session(Session.new(CONV_RELU_CONV, TILED))
    at.selectbox(key="sched.primitive").set_value("compute_at")
    run(at)  # nothing picked yet: a block that feeds one, into its tiled consumer
    assert at.selectbox(key="sched.compute_at.block").value == "conv2_pad"
    assert at.selectbox(key="sched.compute_at.target_block.conv2_pad").value == "conv2"
    at.selectbox(key="sched.primitive").set_value("split")
    run(at)
    at.selectbox(key="sched.split.block").set_value("relu1")
    run(at)
    for primitive in ("parallel", "compute_at"):  # the picked block stays
        at.selectbox(key="sched.primitive").set_value(primitive)
        run(at)
        assert at.selectbox(key=f"sched.{primitive}.block").value == "relu1", primitive
    assert at.selectbox(key="sched.compute_at.target_block.relu1").value == "conv2"
    at.selectbox(key="sched.compute_at.block").set_value("conv2")
    run(at)  # the output block: its target is another block, and the form says why not
    target = at.selectbox(key="sched.compute_at.target_block.conv2")
    assert target.value != "conv2" and "conv2" not in target.options
    assert any("conv2 feeds no other block" in c.value for c in at.caption)
    at.selectbox(key="sched.primitive").set_value("unroll")
    run(at)
    assert at.selectbox(key="sched.unroll.block").value == "conv2"

def test_pickers_never_get_a_default_and_a_session_state_value(monkeypatch):
    """Streamlit warns when a widget with a default also finds a value set through the Session
    State API in the run that draws it; the pickers take their value from Session State only."""
    import streamlit as st

    warned = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: warned.append(a))
    at = with_session(Session.new(CONV_RELU_CONV, TILED))
    at.selectbox(key="sched.primitive").set_value("parallel")
    run(at)
    at.selectbox(key="sched.parallel.block").set_value("conv2")
    run(at)
    real_blocks = schedule_ui.blocks

    def blocks_after_a_state_write(sch):  # as a link, a preset or a rerun may leave it
        st.session_state["sched.parallel.loop.conv2"] = "w_0"
        return real_blocks(sch)

    monkeypatch.setattr(schedule_ui, "blocks", blocks_after_a_state_write)
    run(at)
    assert at.selectbox(key="sched.parallel.loop.conv2").value == "w_0"
    assert not warned, warned
    monkeypatch.setattr(schedule_ui, "blocks", real_blocks)
    at.button(key="hist.goto.0").click()  # w_0 is gone: the picker falls back to a loop
    run(at)
    assert at.selectbox(key="sched.parallel.loop.conv2").value == "k"
    assert not warned, warned


# ----------------------------------------------------------------------------- sharing

def test_the_shared_link_has_a_slash_before_the_query():
    assert io_ui.share_link("http://127.0.0.1:8501", "state", "abc") == \
        "http://127.0.0.1:8501/?state=abc"
    assert io_ui.share_link("https://h.invalid/app/?state=old", "state", "x") == \
        "https://h.invalid/app/?state=x"


def test_the_served_app_watches_no_files():
    """Streamlit's file watcher, left on, watches .venv too and burns a core per open tab
    (the idle test in test_browser_session.py measures it): off by config and by flag."""
    import tomllib

    root = paths.ROOT
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert "--server.fileWatcherType none" in (root / "run.sh").read_text()


def test_the_served_app_skips_the_full_collection_after_every_run():
    """Streamlit's gc.collect(2) after every script run was 40% of a busy server's CPU (see
    .streamlit/config.toml): off by config and by flag."""
    import tomllib

    root = paths.ROOT
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert "--runner.postScriptGC false" in (root / "run.sh").read_text()


def test_the_server_starts_without_polling_its_config_files():
    """``./run.sh`` starts Streamlit through ``ui.serve``, which drops Streamlit's 5 Hz poll
    of its config files (see ``ui/serve.py``); the private hook it replaces must exist in
    the pinned Streamlit, and the launcher must pass its arguments on to Streamlit's CLI."""
    import subprocess
    import sys

    from streamlit.web import bootstrap

    root = paths.ROOT
    assert "-m ui.serve run app.py" in (root / "run.sh").read_text()
    assert callable(bootstrap._install_config_watchers)
    run = subprocess.run([sys.executable, "-m", "ui.serve", "version"], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Streamlit" in run.stdout, run.stderr[-2000:]


def test_presets_are_read_once_per_version_of_the_folder(monkeypatch, tmp_path):
    """Reading every preset takes seconds: not again on a later click, only when a file
    changes (it was every 5 minutes, a stall for whoever clicked then)."""
    from ui import chain_ui

    reads = []
    monkeypatch.setattr(chain_ui, "list_presets", lambda: reads.append(1) or [])
    (tmp_path / "a.py").write_text("x")
    monkeypatch.setattr(chain_ui, "preset_paths", lambda: sorted(tmp_path.glob("*.py")))
    chain_ui._presets.clear()
    try:
        chain_ui.presets()
        chain_ui.presets()
        assert len(reads) == 1
        (tmp_path / "b.py").write_text("y")
        chain_ui.presets()
        assert len(reads) == 2
    finally:
        chain_ui._presets.clear()

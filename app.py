"""Schedule Playground: build a convolution chain, schedule it with TensorIR primitives, read
the IR each step makes, validate and time it, and export it as a standalone script.

A thin shell over :mod:`playground`: ``main()`` sets the page up, draws the title, and hands
the rest to :mod:`ui.app_page`, whose panels (in :mod:`ui`) draw widgets and return plain
values, and whose ``handle_*`` functions apply them to the one session in
``st.session_state``. Only streamlit is imported here, so the title shows at once; the first
visit after the server started imports the library (TVM) under a spinner in the "1 · Chain"
box. Run with ``./run.sh`` (or ``streamlit run app.py``).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import streamlit as st

TITLE = "Schedule Playground"
INTRO = ("Build a chain of convolutions, schedule its loops with TensorIR primitives "
         "(split, reorder, compute_at, …), see the IR each step makes, then validate it "
         "against numpy and time it — every build runs in a separate worker process.")
PAGE_MODULE = "ui.app_page"


def page_module() -> ModuleType:
    """:mod:`ui.app_page`, imported under a spinner where the chain editor will be when it
    is not imported yet (the first visit after the server started)."""
    loaded = sys.modules.get(PAGE_MODULE)
    # LOADED is its last line: a module that the server's warm-up thread is still importing
    # is in sys.modules already, half made (import_module waits for it).
    if getattr(loaded, "LOADED", False):
        return loaded
    slot = st.empty()
    with slot.container(), st.expander("**1 · Chain** — input and layers", expanded=True), \
            st.spinner("Loading TVM and the chain editor (the first visit since the server "
                       "started)…"):
        module = importlib.import_module(PAGE_MODULE)
    slot.empty()
    return module


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon=":material/grid_view:", layout="wide")
    st.title(TITLE)
    st.caption(INTRO)
    page_module().render()


if __name__ == "__main__":
    main()

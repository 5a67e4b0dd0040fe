"""Start the page's server: ``streamlit run``, without Streamlit's config-file poller.

``./run.sh`` runs ``python -m ui.serve run app.py --server...`` instead of ``python -m
streamlit run``. The one difference: Streamlit (1.67, pinned) polls every ``config.toml`` it
could read (``~/.streamlit/``, ``./.streamlit/``) five times a second for as long as the
server runs, to reload its settings when one changes, whatever ``server.fileWatcherType``
says. On a 2-core Xeon, a server with one idle tab used 0.42-0.69 CPU-s per 30 s with that
poll and 0.38-0.46 without (uvicorn's 10 Hz tick is most of the rest), against the 0.6 (2%)
the idle-tab test allows. The page's settings are fixed when it starts (``./run.sh`` passes
them as flags), so there is nothing to reload: a change of settings takes a restart, as a
code change does.

It also starts importing the page (:mod:`ui.app_page`: TVM and the whole library, seconds on
a busy machine) in a background thread as the server starts, and fills the default chain's
caches, so that the first visitor does not wait for them (``app.py`` shows a spinner if they
do).

The hook is Streamlit's private ``bootstrap._install_config_watchers``; if a Streamlit
release renames it, this fails at start with that name rather than polling in silence.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading

from streamlit.web import bootstrap, cli

log = logging.getLogger(__name__)


def _no_config_watchers(flag_options: dict) -> None:
    """Settings are read once at start (see the module docstring)."""


def _warm_page() -> None:
    """Import the page and fill its first caches (see the module docstring)."""
    try:
        importlib.import_module("ui.app_page").warm()
    except Exception:  # the first visit imports it again and shows the error there
        log.exception("warming the page up failed")


def main() -> int:
    if not callable(getattr(bootstrap, "_install_config_watchers", None)):
        raise SystemExit("ui/serve.py: streamlit.web.bootstrap._install_config_watchers is "
                         "gone in this Streamlit release; run `python -m streamlit run app.py` "
                         "or update ui/serve.py")
    bootstrap._install_config_watchers = _no_config_watchers
    threading.Thread(target=_warm_page, name="page-warm-up", daemon=True).start()
    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())

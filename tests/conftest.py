"""Shared fixtures: one warm worker pool for the whole run, one page server and a fresh browser
tab for the browser tests (see ``browser.py``); GPU tests skipped without a GPU; the
experiment store in a temporary directory (no test writes to the user's data)."""

import os
import sys
from pathlib import Path

import pytest

# Shared test code lives in tests/support (imported by plain name: `from helpers import ...`);
# the repository root makes `playground` and `ui` importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="session", autouse=True)
def experiment_data(tmp_path_factory):
    """``$PLAYGROUND_DATA`` for the whole run: the page's, the CLI's and the server's records
    go to a temporary directory."""
    old = os.environ.get("PLAYGROUND_DATA")
    path = tmp_path_factory.mktemp("playground-data")
    os.environ["PLAYGROUND_DATA"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PLAYGROUND_DATA", None)
    else:
        os.environ["PLAYGROUND_DATA"] = old


@pytest.fixture(autouse=True)
def experiment_store(experiment_data, request, monkeypatch):
    """Each test its own experiment store: ``$PLAYGROUND_DATA`` points to a directory of its
    own, created only if the test records something, and closed after it."""
    import hashlib

    from playground.store import api

    path = experiment_data / hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    monkeypatch.setenv("PLAYGROUND_DATA", str(path))
    yield path
    store = api._stores.pop(path, None)
    if store is not None:
        store.close()


@pytest.fixture(scope="session")
def pool():
    """A warm worker pool shared by the tests that build and run kernels."""
    from playground.worker.pool import WorkerPool

    with WorkerPool(1) as p:
        yield p


@pytest.fixture(scope="module")
def close_page_pool():
    """AppTests of a module share the page's worker pool (st.cache_resource); close it after."""
    yield
    from ui.state import get_pool

    get_pool().close()
    get_pool.clear()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """``./run.sh`` on a free loopback port, shared by every browser test of the run."""
    from browser import serve

    yield from serve(tmp_path_factory.mktemp("server") / "server.log")


@pytest.fixture(scope="session")
def web_browser(server):
    """One headless Chromium for every browser test of the run."""
    from browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def page(server, web_browser):
    """A fresh tab on the page, loaded (a new Streamlit session)."""
    from browser import browser_page

    with browser_page(web_browser, server.url) as app:
        yield app


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    import tvm

    if tvm.cuda(0).exist:
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

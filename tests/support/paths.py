"""Where things are, for tests at any depth of ``tests/``: the repository root, the page's
``app.py`` and the tests' data files."""

from pathlib import Path

#: The repository root (``tests/support/paths.py`` is two levels below it).
ROOT = Path(__file__).resolve().parents[2]
#: The Streamlit page, as AppTest and the browser tests start it.
APP = str(ROOT / "app.py")
#: Files the tests read (a searched session, ONNX examples, ...).
DATA = ROOT / "tests" / "data"

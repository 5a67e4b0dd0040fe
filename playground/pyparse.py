"""``ast.parse`` behind one lock.

CPython 3.11's parser keeps recursion-depth state that concurrent parses in several threads
can corrupt ("SystemError: AST constructor recursion depth mismatch", cpython gh-106905);
Streamlit runs every browser session's script in a thread of one server process, so eight
users exporting or importing at once hit it. Every parse in the library goes through here.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """``ast.parse(source, filename, mode)``, one thread at a time."""
    with _LOCK:
        return ast.parse(source, filename=filename, mode=mode)

"""Who creates an object a patch sees: the app's own code, or a library's.

A client library's session made by the app carries the app's calls; one made
by another library (an APM agent's, an SDK's) does not, and tidegate must not
spend the app's startup or its callees' workers on it. The creator is the
first frame outside tidegate, wrapt and the patched library itself; it is a
library's when its file lies in the interpreter's library directories.
"""

from __future__ import annotations

import os
import sys
import sysconfig

import wrapt

#: Where the interpreter's own and installed libraries live: an object created there is a library's.
_LIBRARY_DIRS = tuple(
    sorted(
        {
            os.path.realpath(path) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(key))
        }
    )
)
#: Frames of these are skipped when looking for the creator (tidegate itself, wrapt; the library by module name).
_PASS_THROUGH = (
    os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..")) + os.sep,
    os.path.realpath(os.path.dirname(wrapt.__file__ or "")) + os.sep,
)


def created_by_app(depth: int, library: str) -> bool:
    """Whether the code creating an object (the first frame, `depth` up, outside `library`'s
    modules, wrapt and tidegate) is the app's own: outside the interpreter's library directories."""
    frame = sys._getframe(depth)
    while frame is not None:
        filename = os.path.realpath(frame.f_code.co_filename)
        module = frame.f_globals.get("__name__", "")
        if not (filename.startswith(_PASS_THROUGH) or module == library or module.startswith(library + ".")):
            return not filename.startswith(_LIBRARY_DIRS) and not filename.startswith("<frozen")
        frame = frame.f_back  # type: ignore[assignment]
    return False

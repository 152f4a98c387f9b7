"""The route name of an inbound request whose framework gave no template (the ASGI and WSGI middlewares').

Patching, version gates and post-import hooks are the instrumentor base's (`base.py`).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"^[A-Za-z_.-]{1,40}$")


def fallback_route(path: str) -> str:
    """A bounded route name when the framework gave no template: the first path
    segment if it reads as a word (never an id), then `/*` for the rest."""
    first, _, rest = path.lstrip("/").partition("/")
    if not first:
        return "/"
    name = first if _WORD.match(first) else "*"
    return f"/{name}/*" if rest else f"/{name}"

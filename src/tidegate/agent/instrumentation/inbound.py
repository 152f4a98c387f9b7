"""What the server-side instrumentors share: patch a library when it is imported, and undo it.

Booting must stay cheap and must not import servers or frameworks the program
never uses, so each server-side instrumentor registers a post-import hook
(wrapt's) and patches the moment its library is imported, or at once if it
already is. Every patch is recorded so `uninstrument` puts the originals back.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import wrapt

from tidegate.agent.instrumentation.outbound import installed_version_meets

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate")

_WORD = re.compile(r"^[A-Za-z_.-]{1,40}$")


def fallback_route(path: str) -> str:
    """A bounded route name when the framework gave no template: the first path
    segment if it reads as a word (never an id), then `/*` for the rest."""
    first, _, rest = path.lstrip("/").partition("/")
    if not first:
        return "/"
    name = first if _WORD.match(first) else "*"
    return f"/{name}/*" if rest else f"/{name}"


class InboundInstrumentor:
    """Base: a subclass sets `library` and `supported` and implements `_patch(module)`.

    `hook_module` (default: `library`) is the module whose import triggers the
    patch, for libraries whose top-level import does not load what is patched.
    """

    library: str = ""
    supported: str = ""
    hook_module: str = ""

    def __init__(self) -> None:
        self.runtime: AgentRuntime | None = None
        self._hooked = False
        self._patched = False
        self._patches: list[tuple[Any, str, Any]] = []

    def available(self) -> bool:
        if importlib.util.find_spec(self.library) is None:
            return False
        if not installed_version_meets(self.supported):
            log.info("tidegate: %s is installed in an unsupported version (needs %s); not patched", self.library, self.supported)
            return False
        return True

    def instrument(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        if not self._hooked:
            self._hooked = True
            wrapt.register_post_import_hook(self._on_import, self.hook_module or self.library)

    def uninstrument(self) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()
        self._patched = False
        self.runtime = None

    def wrap(self, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
        """Replace `owner.name` with a wrapt wrapper `wrapper(wrapped, instance, args, kwargs)`."""
        original = owner.__dict__[name]
        self._patches.append((owner, name, original))
        wrapt.wrap_function_wrapper(owner, name, wrapper)

    def safely(self, action: Callable[..., Any], *args: Any) -> None:
        """Run an agent step inside the server's own code path; a failure is logged, never raised."""
        try:
            action(*args)
        except Exception:  # the server must run on whatever the agent's step did
            log.exception("tidegate: %s failed in %s; the server runs on", getattr(action, "__name__", action), self.library)

    def _on_import(self, module: ModuleType) -> None:
        if self.runtime is None or self._patched:
            return
        self._patched = True
        try:
            self._patch(module)
        except Exception:  # one failing patch must never break the app
            log.exception("tidegate: patching %s failed; it runs unpatched", self.library)
            self.uninstrument()

    def _patch(self, module: ModuleType) -> None:
        raise NotImplementedError

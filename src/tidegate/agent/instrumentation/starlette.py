"""Starlette and FastAPI: govern each request at its matched route, before the endpoint runs.

`Route.handle` (and FastAPI's `APIRoute.handle`, which may bypass it) runs
after the router matched, with the route template and path parameters
known; see `route_guard.govern_asgi`. An entry already in the scope means an
outer patched `handle` governs the request, so it is governed once.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import wrapt

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.instrumentation.route_guard import SCOPE_KEY, govern_asgi, stability_of

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime


class StarletteInstrumentor(Instrumentor):
    library = "starlette"
    supported = ("starlette >= 0.27, < 2",)  # Route.handle, FastAPI's APIRoute.handle
    hook_module = "starlette.routing"

    def __init__(self) -> None:
        super().__init__()
        self._fastapi_hooked = False

    def _instrumented(self, runtime: AgentRuntime) -> None:
        if not self._fastapi_hooked:
            self._fastapi_hooked = True
            # Registered up front: fastapi.routing imports starlette.routing half-way through its own import.
            wrapt.register_post_import_hook(self._patch_fastapi, "fastapi.routing")

    def _patch(self, module: ModuleType) -> None:
        self.wrap(module.Route, "handle", self._handle)

    def _patch_fastapi(self, module: ModuleType) -> None:
        if self.runtime is None or "handle" not in module.APIRoute.__dict__:
            return
        self.safely(self.wrap, module.APIRoute, "handle", self._handle)

    def _handle(self, wrapped: Any, route: Any, args: Any, kwargs: Any) -> Any:
        stability = stability_of(self.runtime)
        if stability is None or SCOPE_KEY in args[0]:  # not loaded, or an outer handle governs this request
            return wrapped(*args, **kwargs)
        scope, receive, send = args
        return govern_asgi(stability, route, wrapped, scope, receive, send)


INSTRUMENTOR = StarletteInstrumentor()

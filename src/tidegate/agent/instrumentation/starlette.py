"""Starlette and FastAPI: govern each request at its matched route, before the endpoint runs.

`Route.handle` (and FastAPI's `APIRoute.handle`, which may bypass it) runs
after the router matched, with the route template and path parameters
known; see `route_guard.govern_asgi`. A request is governed once: FastAPI's
`APIRoute.handle` calls Starlette's `Route.handle` for the same route, and
the inner hook sees the route already taken (`route_guard.ROUTE_SEEN_KEY`).
While no rule in force names an inbound resource, the hook hands the request
straight to the framework's own coroutine (no extra coroutine per request).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import wrapt

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.instrumentation.route_guard import govern_asgi, stability_of

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
        fastapi_routing = sys.modules.get("fastapi.routing")
        if fastapi_routing is not None and getattr(fastapi_routing, "APIRoute", None) is not None:
            # Instrumented again after `uninstrument`: the post-import hook has fired already, so patch now.
            self._patch_fastapi(fastapi_routing)

    def _patch_fastapi(self, module: ModuleType) -> None:
        if self.runtime is None or not self._patched or "handle" not in module.APIRoute.__dict__:
            return
        if any(owner is module.APIRoute and name == "handle" for owner, name, _ in self._patches):
            return  # patched already (the hook and `_patch` may both see the module)
        self.safely(self.wrap, module.APIRoute, "handle", self._handle)

    def _handle(self, wrapped: Any, route: Any, args: Any, kwargs: Any) -> Any:
        stability = stability_of(self.runtime)
        if stability is None or not stability.governs_any_inbound():  # not loaded, or no rule names an inbound resource
            return wrapped(*args, **kwargs)
        scope, receive, send = args
        return govern_asgi(stability, route, wrapped, scope, receive, send)


INSTRUMENTOR = StarletteInstrumentor()

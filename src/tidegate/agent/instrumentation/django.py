"""Django: leave the resolved route (`/orders/<int:id>`) where the inbound middleware finds it.

`BaseHandler.resolve_request` sets `request.resolver_match`; after it, the route
goes into `request.META` (the WSGI environ itself) and, under ASGI, the scope.
Right after it the request enters its stability resource (a refusal swaps the
view for the refusal); `get_response` ends it (see route_guard.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.instrumentation.route_guard import end_django, govern_django_resolved, stability_of
from tidegate.agent.instrumentation.wsgi import ENVIRON_KEY


class DjangoInstrumentor(Instrumentor):
    library = "django"
    supported = ("django >= 4.2, < 6",)  # BaseHandler internals
    hook_module = "django.core.handlers.base"

    def _patch(self, module: ModuleType) -> None:
        self.wrap(module.BaseHandler, "resolve_request", _resolve_request)
        self.wrap(module.BaseHandler, "resolve_request", self._govern_resolved)
        self.wrap(module.BaseHandler, "get_response", self._get_response)
        self.wrap(module.BaseHandler, "get_response_async", self._get_response_async)

    def _govern_resolved(self, wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
        match = wrapped(*args, **kwargs)
        stability = stability_of(self.runtime)
        request = args[0] if args else kwargs["request"]
        template = request.META.get(ENVIRON_KEY)
        if stability is None or not template:
            return match
        return govern_django_resolved(stability, request, match, template)

    def _get_response(self, wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
        stability = stability_of(self.runtime)
        if stability is None:
            return wrapped(*args, **kwargs)
        request = args[0] if args else kwargs["request"]
        token = stability.enter_request("")
        response, raised = None, True
        try:
            response = wrapped(*args, **kwargs)
            raised = False
            return response
        finally:
            stability.leave_request(token)
            end_django(stability, request, response, raised)

    async def _get_response_async(self, wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
        stability = stability_of(self.runtime)
        if stability is None:
            return await wrapped(*args, **kwargs)
        request = args[0] if args else kwargs["request"]
        token = stability.enter_request("")
        response, raised = None, True
        try:
            response = await wrapped(*args, **kwargs)
            raised = False
            return response
        finally:
            stability.leave_request(token)
            end_django(stability, request, response, raised)


def _resolve_request(wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
    match = wrapped(*args, **kwargs)
    route = getattr(match, "route", None)
    if route:
        request = args[0] if args else kwargs["request"]
        template = "/" + str(route).lstrip("^/")
        request.META[ENVIRON_KEY] = template
        scope = getattr(request, "scope", None)
        if isinstance(scope, dict):
            scope[ENVIRON_KEY] = template
    return match


INSTRUMENTOR = DjangoInstrumentor()

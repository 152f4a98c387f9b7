"""Django: leave the resolved route (`/orders/<int:id>`) where the inbound middleware finds it.

`BaseHandler.resolve_request` sets `request.resolver_match`; after it, the route
goes into `request.META` (the WSGI environ itself) and, under ASGI, the scope.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor
from tidegate.agent.instrumentation.wsgi import ENVIRON_KEY


class DjangoInstrumentor(InboundInstrumentor):
    library = "django"
    supported = "django >= 4.2"
    hook_module = "django.core.handlers.base"

    def _patch(self, module: ModuleType) -> None:
        self.wrap(module.BaseHandler, "resolve_request", _resolve_request)


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

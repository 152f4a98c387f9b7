"""Flask: leave the matched URL rule (`/orders/<int:id>`) where the WSGI middleware finds it.

Flask matches the URL before `full_dispatch_request` runs (which sends
`request_started` first thing), so its patch reads `request.url_rule.rule` and
stores it in the WSGI environ: a wrapper, rather than a receiver of that
signal, because blinker inspects every receiver on every send.
`Flask.dispatch_request` runs the view under the rule's stability resource
(see route_guard.py); while no rule in force names an inbound resource it
calls the view straight away. Both run on every request, so each resolves
Flask's request proxy once.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.instrumentation.route_guard import govern_flask, stability_of
from tidegate.agent.instrumentation.wsgi import ENVIRON_KEY


class FlaskInstrumentor(Instrumentor):
    library = "flask"
    supported = ("flask >= 2.2",)

    def __init__(self) -> None:
        super().__init__()
        self._request: Any = None  # flask.request, the proxy to the request being served

    def _patch(self, module: ModuleType) -> None:
        self._request = module.request
        self.wrap(module.Flask, "full_dispatch_request", self._full_dispatch_request)
        self.wrap(module.Flask, "dispatch_request", self._dispatch_request)

    def _full_dispatch_request(self, wrapped: Any, app: Any, args: Any, kwargs: Any) -> Any:
        current = self._request._get_current_object()  # one proxy lookup, then plain attributes
        rule = current.url_rule
        if rule is not None:
            current.environ[ENVIRON_KEY] = rule.rule
        return wrapped(*args, **kwargs)

    def _dispatch_request(self, wrapped: Any, app: Any, args: Any, kwargs: Any) -> Any:
        stability = stability_of(self.runtime)
        if stability is None or not stability.governs_any_inbound():  # not loaded, or no rule names an inbound resource
            return wrapped(*args, **kwargs)
        return govern_flask(stability, app, lambda: wrapped(*args, **kwargs))


INSTRUMENTOR = FlaskInstrumentor()

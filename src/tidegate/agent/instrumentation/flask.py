"""Flask: leave the matched URL rule (`/orders/<int:id>`) where the WSGI middleware finds it.

Flask matches the URL before `request_started` fires, so a receiver of that
signal reads `request.url_rule.rule` and stores it in the WSGI environ.
`Flask.dispatch_request` runs the view under the rule's stability resource
(see route_guard.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.instrumentation.route_guard import govern_flask, stability_of
from tidegate.agent.instrumentation.wsgi import ENVIRON_KEY


def _note_rule(sender: Any, **extra: Any) -> None:
    from flask import request

    rule = request.url_rule
    if rule is not None:
        request.environ[ENVIRON_KEY] = rule.rule


class FlaskInstrumentor(Instrumentor):
    library = "flask"
    supported = ("flask >= 2.2",)

    def _patch(self, module: ModuleType) -> None:
        module.request_started.connect(_note_rule, weak=False)
        self.wrap(module.Flask, "dispatch_request", self._dispatch_request)

    def _dispatch_request(self, wrapped: Any, app: Any, args: Any, kwargs: Any) -> Any:
        stability = stability_of(self.runtime)
        if stability is None:
            return wrapped(*args, **kwargs)
        return govern_flask(stability, app, lambda: wrapped(*args, **kwargs))

    def _unpatch(self) -> None:
        import flask

        flask.request_started.disconnect(_note_rule)


INSTRUMENTOR = FlaskInstrumentor()

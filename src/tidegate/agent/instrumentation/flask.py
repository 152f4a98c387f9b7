"""Flask: leave the matched URL rule (`/orders/<int:id>`) where the WSGI middleware finds it.

Flask matches the URL before `request_started` fires, so a receiver of that
signal reads `request.url_rule.rule` and stores it in the WSGI environ.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor
from tidegate.agent.instrumentation.wsgi import ENVIRON_KEY


def _note_rule(sender: Any, **extra: Any) -> None:
    from flask import request

    rule = request.url_rule
    if rule is not None:
        request.environ[ENVIRON_KEY] = rule.rule


class FlaskInstrumentor(InboundInstrumentor):
    library = "flask"
    supported = "flask >= 2.2"

    def _patch(self, module: ModuleType) -> None:
        module.request_started.connect(_note_rule, weak=False)

    def uninstrument(self) -> None:
        if self._patched:
            import flask

            flask.request_started.disconnect(_note_rule)
        super().uninstrument()


INSTRUMENTOR = FlaskInstrumentor()

"""Boots the agent under `opentelemetry-instrument`, whose own sitecustomize does not chain to ours.

OpenTelemetry's start-up applies every `opentelemetry_instrumentor` entry point;
tidegate declares this class as one, so whichever of `tidegate run` and
`opentelemetry-instrument` wraps the other, the agent boots. It does nothing
unless `tidegate run` switched the agent on (TIDEGATE_AGENT=1). Only
OpenTelemetry's loader imports this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]


class TidegateInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        if os.environ.get("TIDEGATE_AGENT") != "1":
            return
        try:
            from tidegate.agent import boot

            boot.start()
        except Exception:  # the agent must never break the program it is loaded into
            logging.getLogger("tidegate").exception("tidegate: agent failed to boot under opentelemetry-instrument")

    def _uninstrument(self, **kwargs: Any) -> None:
        """The agent stays: it owns the instance's registration until the process exits."""

"""Boots the agent under `opentelemetry-instrument`, whose own sitecustomize does not chain to ours.

OpenTelemetry's start-up applies every `opentelemetry_instrumentor` entry point;
tidegate declares this class as one, so whichever of `tidegate run` and
`opentelemetry-instrument` wraps the other, the agent boots. It does nothing
unless `tidegate run` switched the agent on (TIDEGATE_AGENT=1): it calls the
same `boot_agent` as the injected sitecustomize. Only OpenTelemetry's loader
imports this module.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from tidegate.agent.bootstrap.sitecustomize import boot_agent


class TidegateInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        boot_agent("under opentelemetry-instrument")

    def _uninstrument(self, **kwargs: Any) -> None:
        """The agent stays: it owns the instance's registration until the process exits."""

"""The one agent object of a process: what every instrumentor and the explicit API share.

The bootstrap (`tidegate.agent.boot`) builds it once per process (again in a
forked child) and publishes it with `set_runtime`; instrumentors read it with
`get_runtime()`. Tests build their own and pass it in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.core.directory import ServiceDirectory
from tidegate.core.rulebook import RuleBook

if TYPE_CHECKING:
    from tidegate.agent.config import AgentConfig
    from tidegate.agent.lifecycle import InstanceLifecycle
    from tidegate.agent.metrics import AgentMetrics
    from tidegate.agent.outbound.router import OutboundRouter


@dataclass
class AgentRuntime:
    config: AgentConfig
    directory: ServiceDirectory = field(default_factory=ServiceDirectory)
    rulebook: RuleBook = field(default_factory=RuleBook)
    router: OutboundRouter | None = None
    metrics: AgentMetrics | None = None
    lifecycle: InstanceLifecycle | None = None  # registration and admin endpoint; acts only in a server process
    clock: Callable[[], float] = time.monotonic
    #: Headers every inbound response carries while they are here (a draining
    #: instance's notice); changed in place, shared by every wrapped app.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    #: What this process's calls to other services say in `x-tidegate-consumer`:
    #: its service and, once known, its admin address (for direct drain notices).
    consumer: str = ""
    extras: dict[str, Any] = field(default_factory=dict)  # per-capability state, keyed by capability name


_runtime: AgentRuntime | None = None


def set_runtime(runtime: AgentRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> AgentRuntime | None:
    """The process's agent, or None when the agent is not loaded."""
    return _runtime

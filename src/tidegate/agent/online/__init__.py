"""Lossless online, wired into the agent: the objects the server hooks and the router use.

`install(runtime)` builds them once per process into `runtime.extras`:
`prewarm` (the startup gate, `tidegate.agent.online.prewarm`), `warmup` (consumer
weights and the reweigh timer, `tidegate.agent.online.warmup`), `promotion`
(WARMING, then SERVING) and `called_services` (remembered for the next
start's HTTP prewarm). The hooks elsewhere are one line each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.http_prewarm import CalledServices, record_calls, state_dir
from tidegate.agent.online.prewarm import Prewarm
from tidegate.agent.online.warmup import ConsumerWarmup, Promotion
from tidegate.core.instance import InstanceState

if TYPE_CHECKING:
    import asyncio

    from tidegate.agent.outbound.router import Weighting
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate")


def weighting(runtime: AgentRuntime) -> Weighting:
    """The outbound router's weighting (warm-up ramps), creating the consumer warm-up once."""
    warmup = runtime.extras.get("warmup")
    if warmup is None:
        warmup = runtime.extras["warmup"] = ConsumerWarmup(runtime)
    return warmup.weighting  # type: ignore[no-any-return]


def install(runtime: AgentRuntime) -> None:
    """Create the prewarm gate and promotion; make the router remember the services it calls."""
    warmup = runtime.extras.get("warmup") or runtime.extras.setdefault("warmup", ConsumerWarmup(runtime))
    runtime.extras["prewarm"] = Prewarm(runtime)
    runtime.extras["promotion"] = Promotion(runtime, warmup)
    if runtime.router is not None:
        called = CalledServices(state_dir() / f"{runtime.config.service}.called.json")
        runtime.extras["called_services"] = called
        record_calls(runtime.router, called)  # type: ignore[arg-type]


def begin(runtime: AgentRuntime | None, addresses: Sequence[tuple[str, int]], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Server hook: the app's startup finished in this request-serving process."""
    prewarm = runtime.extras.get("prewarm") if runtime is not None else None
    if prewarm is not None:
        prewarm.begin(addresses, loop)


def may_register(runtime: AgentRuntime) -> bool:
    """Lifecycle hook: whether registration may go ahead (startup and prewarm finished)."""
    prewarm: Any = runtime.extras.get("prewarm")
    return prewarm is None or bool(prewarm.may_register())


def state_on_register(runtime: AgentRuntime) -> InstanceState:
    """Lifecycle hook: WARMING when this service has a warm-up window, else SERVING."""
    promotion: Any = runtime.extras.get("promotion")
    return promotion.state_on_register() if promotion is not None else InstanceState.SERVING
